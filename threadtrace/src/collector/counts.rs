//! The exact counts of a recording, from the kernel's counters: per api
//! and errno, per process, and the mmap/mprotect failures at call sites
//! that attribution decides are pthread_create's. The model's `Summary`
//! is what they become; the sites travel beside it until decided.
use std::collections::BTreeMap;

use threadtrace_common::Api;

use crate::{
    kernel::counters::Counters,
    model::{names, ProcessFailures, Summary},
};

/// mmap/mprotect failures counted at one call site: pthread_create's
/// failures when the site is inside it (the output stage decides).
#[derive(Debug, Clone, PartialEq)]
pub struct StackSetupCount {
    pub pid: u32,
    pub comm: String,
    pub errno: i32,
    pub site: u64,
    pub count: u64,
}

/// A summary of the counters, and the call sites not decided yet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    pub summary: Summary,
    /// Counts at mmap/mprotect sites, until the output stage decides
    /// which are pthread_create's (`resolve_stack_setup`).
    pub stack_setup: Vec<StackSetupCount>,
}

fn sort_rows(s: &mut Summary) {
    s.by_process
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
}

impl Counts {
    /// From the kernel counters; `keep` filters by (pid, comm).
    pub fn from_counters(
        c: &Counters,
        mut comm_of: impl FnMut(u32) -> String,
        keep: impl Fn(u32, &str) -> bool,
    ) -> Self {
        let mut out = Counts::default();
        let s = &mut out.summary;
        for (&(tgid, api, errno), &count) in &c.failures {
            let comm = comm_of(tgid);
            if !keep(tgid, &comm) {
                continue;
            }
            let api = Api::from_u32(api)
                .map(Api::name)
                .unwrap_or("unknown")
                .to_string();
            let error = names::errno_name(errno);
            *s.by_api
                .entry(api.clone())
                .or_default()
                .entry(error.clone())
                .or_default() += count;
            s.failures_total += count;
            s.by_process.push(ProcessFailures {
                pid: tgid,
                comm,
                api,
                errno,
                error,
                count,
            });
        }
        for (&(tgid, _api, errno, site), &count) in &c.stack_setup {
            let comm = comm_of(tgid);
            if keep(tgid, &comm) {
                out.stack_setup.push(StackSetupCount {
                    pid: tgid,
                    comm,
                    errno,
                    site,
                    count,
                });
            }
        }
        let s = &mut out.summary;
        sort_rows(s);
        s.failures_total += c.failures_overflow;
        s.failures_without_process = c.failures_overflow;
        s.events_lost = c.ringbuf_drops;
        s.events_sampled_out = c.detail_sampled_out;
        out
    }

    /// Counts the mmap/mprotect failures whose site `inside(pid, site)`
    /// says is in pthread_create as pthread_create failures (EAGAIN, as
    /// pthread_create reports them); the others are not task creation.
    pub fn resolve_stack_setup(&mut self, mut inside: impl FnMut(u32, u64) -> bool) {
        const ENOMEM: i32 = 12;
        const EAGAIN: i32 = 11;
        let api = Api::PthreadCreate.name();
        let s = &mut self.summary;
        for row in std::mem::take(&mut self.stack_setup) {
            if !inside(row.pid, row.site) {
                continue;
            }
            let errno = if row.errno == ENOMEM {
                EAGAIN
            } else {
                row.errno
            };
            let error = names::errno_name(errno);
            *s.by_api
                .entry(api.into())
                .or_default()
                .entry(error.clone())
                .or_default() += row.count;
            s.failures_total += row.count;
            match s
                .by_process
                .iter_mut()
                .find(|p| p.pid == row.pid && p.api == api && p.errno == errno)
            {
                Some(p) => p.count += row.count,
                None => s.by_process.push(ProcessFailures {
                    pid: row.pid,
                    comm: row.comm,
                    api: api.into(),
                    errno,
                    error,
                    count: row.count,
                }),
            }
        }
        sort_rows(s);
    }

    /// The same counters, only for the processes `keep` accepts (-p,
    /// --comm); failures counted without a process stay in the total, as
    /// in `from_counters`.
    pub fn narrowed(&self, keep: impl Fn(u32, &str) -> bool) -> Counts {
        let all = &self.summary;
        let mut s = Summary {
            failures_total: 0,
            by_api: BTreeMap::new(),
            by_process: Vec::new(),
            threads: Vec::new(),
            findings: Vec::new(),
            ..all.clone()
        };
        for p in all.by_process.iter().filter(|p| keep(p.pid, &p.comm)) {
            *s.by_api
                .entry(p.api.clone())
                .or_default()
                .entry(p.error.clone())
                .or_default() += p.count;
            s.failures_total += p.count;
            s.by_process.push(p.clone());
        }
        s.failures_total += s.failures_without_process;
        s.threads = all
            .threads
            .iter()
            .filter(|t| keep(t.pid, &t.comm))
            .cloned()
            .collect();
        Counts {
            summary: s,
            stack_setup: self
                .stack_setup
                .iter()
                .filter(|p| keep(p.pid, &p.comm))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_sums_and_filters() {
        let mut c = Counters::default();
        c.failures.insert((10, 1, 11), 5);
        c.failures.insert((11, 3, 11), 2);
        c.failures.insert((12, 1, 11), 7);
        c.failures_overflow = 1;
        c.ringbuf_drops = 3;
        let s = Counts::from_counters(&c, |p| format!("p{p}"), |pid, _| pid != 12).summary;
        assert_eq!(s.failures_total, 8);
        assert_eq!(s.by_api["pthread_create"]["EAGAIN"], 5);
        assert_eq!(s.by_api["clone3"]["EAGAIN"], 2);
        assert_eq!(s.by_process[0].pid, 10);
        assert_eq!(s.events_lost, 3);
    }

    #[test]
    fn narrowed_counts_only_the_kept_processes() {
        let mut c = Counters::default();
        c.failures.insert((10, 1, 11), 5);
        c.failures.insert((11, 3, 11), 2);
        c.failures.insert((12, 1, 11), 7);
        c.failures_overflow = 1;
        let all = Counts::from_counters(&c, |p| format!("p{p}"), |_, _| true);
        let kept = |pid: u32, _: &str| pid != 12;
        let narrow = all.narrowed(kept);
        assert_eq!(
            narrow,
            Counts::from_counters(&c, |p| format!("p{p}"), kept),
            "the same as filtering at the source"
        );
        assert_eq!(narrow.summary.failures_total, 8);
    }

    #[test]
    fn stack_setup_sites_inside_pthread_create_count_as_its_failures() {
        let mut c = Counters::default();
        c.failures.insert((10, 1, 11), 5);
        c.stack_setup.insert((10, 6, 12, 0x1000), 3);
        c.stack_setup.insert((10, 6, 12, 0x2000), 4);
        c.stack_setup.insert((11, 7, 12, 0x1000), 2);
        let mut s = Counts::from_counters(&c, |p| format!("p{p}"), |_, _| true);
        assert_eq!(
            s.summary.failures_total, 5,
            "undecided sites are not counted yet"
        );
        s.resolve_stack_setup(|_, site| site == 0x1000);
        let s = (s.summary, s.stack_setup);
        assert_eq!(s.0.failures_total, 10);
        assert_eq!(s.0.by_api["pthread_create"]["EAGAIN"], 10);
        assert_eq!(s.0.by_process[0].pid, 10);
        assert_eq!(
            s.0.by_process[0].count, 8,
            "merged into pid 10's EAGAIN row"
        );
        assert!(s.1.is_empty());
    }
}

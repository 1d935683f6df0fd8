//! The first and last lines of a recording.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use threadtrace_common::Api;

use super::names;
use crate::kernel::counters::Counters;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Started {
    pub time: String,
    pub version: String,
    pub host: String,
    pub kernel: String,
    pub tracer_pid: u32,
    /// Tracepoints and perf events attached, all of them, before this line.
    pub probes: Vec<String>,
    /// Processes known at start (seeded from /proc).
    pub processes: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessFailures {
    pub pid: u32,
    pub comm: String,
    pub api: String,
    pub errno: i32,
    pub error: String,
    pub count: u64,
}

#[cfg(test)]
impl ProcessFailures {
    /// A row of `count` pthread_create EAGAIN failures, for tests.
    pub fn eagain(pid: u32, count: u64) -> Self {
        ProcessFailures {
            pid,
            comm: "x".into(),
            api: "pthread_create".into(),
            errno: 11,
            error: "EAGAIN".into(),
            count,
        }
    }
}

/// Threads of a process, by the library that created them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadCount {
    pub pid: u32,
    pub comm: String,
    /// The library of the threads' start routine, or "unattributed" for
    /// threads glibc does not list (raw clones, other libcs).
    pub library: String,
    pub live: i64,
}

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

/// Of the failures captured in detail, how many were attributed to a
/// library; failures counted but not captured are not attributed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attribution {
    pub attributed: u64,
    pub unattributed: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub time: String,
    pub duration_s: f64,
    /// Exact: counted in the kernel on every failure.
    pub failures_total: u64,
    /// api → error → count.
    pub by_api: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per process, largest first.
    pub by_process: Vec<ProcessFailures>,
    /// Events the ring buffer had no room for. Their failures are still in
    /// the counts above; only their detail is lost.
    pub events_lost: u64,
    /// Failures past --detail-rate: counted above, not captured.
    #[serde(default)]
    pub events_sampled_out: u64,
    /// Failures counted in no per-process row because the kernel's counter
    /// table was full; they are in `failures_total`.
    #[serde(alias = "failures_unattributed")]
    pub failures_without_process: u64,
    /// Detailed failures attributed to a library, and not.
    #[serde(default)]
    pub attribution: Attribution,
    /// Mapping records lost in the separate buffer older recordings had;
    /// read from their files. Mapping events now share the ring buffer
    /// and its drop count.
    #[serde(default)]
    pub mmap_records_lost: u64,
    pub events_delivered: u64,
    pub decode_errors: u64,
    /// Live threads per (process, creating library), largest first.
    #[serde(default)]
    pub threads: Vec<ThreadCount>,
    /// Events left out of the trace file by --max-size (its counters are
    /// complete).
    #[serde(default)]
    pub trace_events_dropped: u64,
    /// How the trace file fared (with -o): files, bytes, and what a full
    /// disk or an error kept out of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_file: Option<crate::sink::trace::TraceFileStatus>,
    /// What it all means, most important first, each with evidence and a
    /// remedy (filled at the end of a recording).
    #[serde(default)]
    pub findings: Vec<crate::diagnosis::findings::Finding>,
    /// Counts at mmap/mprotect sites, until the output stage decides
    /// which are pthread_create's (`resolve_stack_setup`).
    #[serde(skip)]
    pub stack_setup: Vec<StackSetupCount>,
    /// What the tracer cut, forgot or skipped to stay bounded and
    /// responsive. The counts above are exact either way.
    #[serde(default)]
    pub tracer: Tracer,
}

/// What the tracer did to itself to stay within its memory and keep
/// answering: all zero in a quiet recording.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Tracer {
    /// Command lines longer than 4 KiB, kept cut.
    pub cmdlines_cut: u64,
    /// Entries forgotten to stay within their budget in bytes, per table:
    /// `process_table` (exited processes), `causes`, `rlimit_sets`,
    /// `oversubscribed`, `oom_victims`.
    pub evicted: BTreeMap<String, u64>,
    /// Records dropped while the output stage was stuck (beyond what the
    /// collector holds back for it).
    pub records_dropped: u64,
    /// Seconds whose counter snapshot was not handed to the output stage,
    /// busy then: the next one has the same counts, later.
    pub snapshots_skipped: u64,
    /// Failures whose attribution panicked: reported without a library.
    pub attribution_panics: u64,
    /// Failures left unattributed because the recording was stopping.
    pub attribution_skipped: u64,
}

impl Tracer {
    pub fn is_quiet(&self) -> bool {
        self.cmdlines_cut == 0
            && self.records_dropped == 0
            && self.snapshots_skipped == 0
            && self.attribution_panics == 0
            && self.attribution_skipped == 0
            && self.evicted.values().all(|&n| n == 0)
    }
}

impl Summary {
    /// From the kernel counters; `keep` filters by (pid, comm).
    pub fn from_counters(
        c: &Counters,
        mut comm_of: impl FnMut(u32) -> String,
        keep: impl Fn(u32, &str) -> bool,
    ) -> Self {
        let mut s = Summary::default();
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
                s.stack_setup.push(StackSetupCount {
                    pid: tgid,
                    comm,
                    errno,
                    site,
                    count,
                });
            }
        }
        s.sort_rows();
        s.failures_total += c.failures_overflow;
        s.failures_without_process = c.failures_overflow;
        s.events_lost = c.ringbuf_drops;
        s.events_sampled_out = c.detail_sampled_out;
        s
    }

    fn sort_rows(&mut self) {
        self.by_process
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    }

    /// Counts the mmap/mprotect failures whose site `inside(pid, site)`
    /// says is in pthread_create as pthread_create failures (EAGAIN, as
    /// pthread_create reports them); the others are not task creation.
    pub fn resolve_stack_setup(&mut self, mut inside: impl FnMut(u32, u64) -> bool) {
        const ENOMEM: i32 = 12;
        const EAGAIN: i32 = 11;
        let api = Api::PthreadCreate.name();
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
            *self
                .by_api
                .entry(api.into())
                .or_default()
                .entry(error.clone())
                .or_default() += row.count;
            self.failures_total += row.count;
            match self
                .by_process
                .iter_mut()
                .find(|p| p.pid == row.pid && p.api == api && p.errno == errno)
            {
                Some(p) => p.count += row.count,
                None => self.by_process.push(ProcessFailures {
                    pid: row.pid,
                    comm: row.comm,
                    api: api.into(),
                    errno,
                    error,
                    count: row.count,
                }),
            }
        }
        self.sort_rows();
    }

    /// The same counters, only for the processes `keep` accepts (-p,
    /// --comm); failures counted without a process stay in the total, as
    /// in `from_counters`.
    pub fn narrowed(&self, keep: impl Fn(u32, &str) -> bool) -> Summary {
        let mut s = self.clone_counts();
        for p in self.by_process.iter().filter(|p| keep(p.pid, &p.comm)) {
            *s.by_api
                .entry(p.api.clone())
                .or_default()
                .entry(p.error.clone())
                .or_default() += p.count;
            s.failures_total += p.count;
            s.by_process.push(p.clone());
        }
        s.failures_total += s.failures_without_process;
        s.stack_setup = self
            .stack_setup
            .iter()
            .filter(|p| keep(p.pid, &p.comm))
            .cloned()
            .collect();
        s.threads = self
            .threads
            .iter()
            .filter(|t| keep(t.pid, &t.comm))
            .cloned()
            .collect();
        s
    }

    /// The scalar fields, the totals zeroed.
    fn clone_counts(&self) -> Summary {
        Summary {
            time: self.time.clone(),
            duration_s: self.duration_s,
            failures_total: 0,
            by_api: BTreeMap::new(),
            by_process: Vec::new(),
            events_lost: self.events_lost,
            events_sampled_out: self.events_sampled_out,
            failures_without_process: self.failures_without_process,
            attribution: self.attribution,
            mmap_records_lost: self.mmap_records_lost,
            events_delivered: self.events_delivered,
            decode_errors: self.decode_errors,
            threads: Vec::new(),
            trace_events_dropped: self.trace_events_dropped,
            trace_file: self.trace_file.clone(),
            findings: Vec::new(),
            stack_setup: Vec::new(),
            tracer: self.tracer.clone(),
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
        let s = Summary::from_counters(&c, |p| format!("p{p}"), |pid, _| pid != 12);
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
        let all = Summary::from_counters(&c, |p| format!("p{p}"), |_, _| true);
        let kept = |pid: u32, _: &str| pid != 12;
        let narrow = all.narrowed(kept);
        assert_eq!(
            narrow,
            Summary::from_counters(&c, |p| format!("p{p}"), kept),
            "the same as filtering at the source"
        );
        assert_eq!(narrow.failures_total, 8);
    }

    #[test]
    fn stack_setup_sites_inside_pthread_create_count_as_its_failures() {
        let mut c = Counters::default();
        c.failures.insert((10, 1, 11), 5);
        c.stack_setup.insert((10, 6, 12, 0x1000), 3);
        c.stack_setup.insert((10, 6, 12, 0x2000), 4);
        c.stack_setup.insert((11, 7, 12, 0x1000), 2);
        let mut s = Summary::from_counters(&c, |p| format!("p{p}"), |_, _| true);
        assert_eq!(s.failures_total, 5, "undecided sites are not counted yet");
        s.resolve_stack_setup(|_, site| site == 0x1000);
        assert_eq!(s.failures_total, 10);
        assert_eq!(s.by_api["pthread_create"]["EAGAIN"], 10);
        assert_eq!(s.by_process[0].pid, 10);
        assert_eq!(s.by_process[0].count, 8, "merged into pid 10's EAGAIN row");
        assert!(s.stack_setup.is_empty());
    }
}

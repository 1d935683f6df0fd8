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
    /// Tracepoints and uprobes attached, all of them, before this line.
    pub probes: Vec<String>,
    pub pthread_create_libcs: Vec<String>,
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
    /// The creating library, or "unattributed" for threads that existed
    /// before recording started (or were created without pthread_create).
    pub library: String,
    pub live: i64,
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
    pub failures_unattributed: u64,
    pub events_delivered: u64,
    pub decode_errors: u64,
    /// Live threads per (process, creating library), largest first.
    #[serde(default)]
    pub threads: Vec<ThreadCount>,
    /// Events left out of the trace file by --max-size (its counters are
    /// complete).
    #[serde(default)]
    pub trace_events_dropped: u64,
    /// What it all means, most important first, each with evidence and a
    /// remedy (filled at the end of a recording).
    #[serde(default)]
    pub findings: Vec<crate::diagnosis::findings::Finding>,
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
        s.by_process
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        s.failures_total += c.failures_overflow;
        s.failures_unattributed = c.failures_overflow;
        s.events_lost = c.ringbuf_drops;
        s.events_sampled_out = c.detail_sampled_out;
        s
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
        s.failures_total += s.failures_unattributed;
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
            failures_unattributed: self.failures_unattributed,
            events_delivered: self.events_delivered,
            decode_errors: self.decode_errors,
            threads: Vec::new(),
            trace_events_dropped: self.trace_events_dropped,
            findings: Vec::new(),
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
}

//! The first and last records of a recording: `started`, and the
//! `summary` with its exact counts and findings (also written into trace
//! files once a second, as counter snapshots).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Finding;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

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
    /// How each hook that can be attached more than one way is attached
    /// (absent in traces of versions before there was a choice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach: Vec<HookAttach>,
}

/// How one hook is attached: at a kernel function's exit (fexit), or at
/// the syscall tracepoints, which every kernel has but which send every
/// syscall of the host through the kernel's slower syscall exit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HookAttach {
    /// What the hook watches, in words: "clone failures".
    pub hook: String,
    pub method: AttachMethod,
    /// The kernel function (fexit), or the tracepoints.
    pub at: Vec<String>,
    /// Why not fexit, in words, when the tracepoints are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fexit_refused: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttachMethod {
    Fexit,
    /// At the function's entry and exit both.
    FentryFexit,
    Tracepoints,
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
    /// Per process, largest first: the first rows only, in what is
    /// written (`processes_not_listed` counts the others).
    pub by_process: Vec<ProcessFailures>,
    /// Processes with failures not listed in `by_process`, and their
    /// failures (in `failures_total`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub processes_not_listed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures_not_listed: u64,
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
    pub trace_file: Option<TraceFileStatus>,
    /// What it all means, most important first, each with evidence and a
    /// remedy (filled at the end of a recording).
    #[serde(default)]
    pub findings: Vec<Finding>,
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
    /// Failures left unattributed because the recording was stopping (still
    /// queued 2 s after the stop began).
    pub attribution_skipped: u64,
    /// What watching the limits' headroom (`--near`) costs; absent when
    /// it is off.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub headroom: Option<HeadroomCost>,
}

/// The headroom sampler's cost and bounds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct HeadroomCost {
    /// Limits tracked now (users, cgroups, the host's), at most 4,096.
    pub limits: u64,
    /// Limits forgotten to stay within that bound.
    pub limits_evicted: u64,
    /// Processes whose RLIMIT_NPROC is remembered (the live ones).
    pub processes: u64,
    /// Files read so far.
    pub reads: u64,
    /// Time the collector's thread spent on it, in seconds.
    pub busy_s: f64,
}

impl Summary {
    /// Keeps the `rows` largest per-process rows; the others are counted
    /// in `processes_not_listed` and `failures_not_listed`.
    pub fn list_at_most(&mut self, rows: usize) {
        if self.by_process.len() <= rows {
            return;
        }
        let rest = self.by_process.split_off(rows);
        let mut pids: Vec<u32> = rest.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        self.processes_not_listed += pids.len() as u64;
        self.failures_not_listed += rest.iter().map(|p| p.count).sum::<u64>();
    }
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

/// How the trace file(s) fared, in the summary.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TraceFileStatus {
    /// The file being written at the end.
    pub path: String,
    /// Files this recording wrote (more than one: a rotating set, or
    /// reopened on SIGHUP).
    pub files: u64,
    /// Files of the set removed, oldest first, to keep within --max-size.
    pub files_removed: u64,
    /// Bytes of records written (or waiting to be) this recording.
    pub bytes: u64,
    /// Records the file did not take (disk full, I/O error) for so long
    /// that they could not be kept in memory: lost.
    pub records_lost: u64,
    /// Bytes still waiting for the file when the recording ended.
    pub bytes_unwritten: u64,
    /// Records whose long strings were cut to fit the format's record size.
    pub records_shortened: u64,
    /// Records too large for the format even so: left out.
    pub records_too_large: u64,
    /// The file's last write error, if it was still failing at the end.
    pub error: Option<String>,
    /// Why the file took no more records at the end: "disk full",
    /// "read-only file system" or "write error"; absent when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}

impl TraceFileStatus {
    /// Something the operator must know about.
    pub fn is_incomplete(&self) -> bool {
        self.records_lost > 0
            || self.bytes_unwritten > 0
            || self.records_too_large > 0
            || self.error.is_some()
    }
}

//! `storm`: many thread-creation failures in a short window, for one
//! scope; while it lasts its failures are summarized instead of printed.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StormProcess {
    pub pid: u32,
    pub comm: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Storm {
    pub time: String,
    /// "start", "update" or "end".
    pub state: String,
    /// What the storm is about: "uid 65534", "cgroup /sys/fs/cgroup/pids/app"
    /// or "library libgomp" (--storm-by).
    pub scope: String,
    /// The user of the failure that started it.
    pub uid: u32,
    pub started: String,
    pub duration_s: f64,
    /// Exact failures of its processes since it started (kernel counters,
    /// as of the last second); `events` of them were seen in detail.
    pub failures: u64,
    pub events: u64,
    /// Events kept in the trace file (sampled once the storm started).
    #[serde(default)]
    pub events_in_file: u64,
    pub peak_rate_per_s: u64,
    pub processes: Vec<StormProcess>,
    pub libraries: Vec<String>,
    pub causes: Vec<String>,
    pub remedy: String,
    /// What its failures were creating: "thread", "process" or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creates: Vec<String>,
}

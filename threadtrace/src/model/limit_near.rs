//! `limit_near`: a limit that fails thread or process creation, or
//! OOM-kills, crossed a threshold of its maximum before anything failed.
use serde::{Deserialize, Serialize};

use super::{Ancestor, Holder, K8s, LimitSet, MemHolder};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LimitNear {
    pub time: String,
    pub limit: Headroom,
    /// The threshold crossed (`--near`), a fraction of the maximum.
    pub threshold: f64,
    /// How fast `current` rose over the last minutes (least squares over
    /// the samples), per minute; negative when it falls.
    pub rate_per_min: f64,
    /// Seconds until `current` reaches `max` at that rate; null when it is
    /// not rising.
    pub exhausted_in_s: Option<f64>,
    /// Who holds the tasks (threads and processes), most first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
    /// For `memory_cgroup`: who holds the memory, most first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_holders: Vec<MemHolder>,
    /// For an RLIMIT_NPROC: the long-lived ancestor the limit was inherited
    /// from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inherited_from: Option<Ancestor>,
    /// For an RLIMIT_NPROC: the setrlimit/prlimit seen during the recording
    /// that set it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub set_by: Option<LimitSet>,
    /// What to do now: raise the limit (the exact command), or cap the pool
    /// that holds the most.
    pub remedy: String,
}

/// One limit and how much of it is used.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Headroom {
    /// `rlimit_nproc` (a user's tasks under a process's soft
    /// RLIMIT_NPROC), `cgroup_pids` (pids.current of pids.max),
    /// `threads_max` and `pid_max` (the host's tasks), `memory_cgroup`
    /// (usage of the memory limit, in bytes).
    pub kind: String,
    pub current: u64,
    pub max: u64,
    /// current / max.
    pub ratio: f64,
    /// For `rlimit_nproc`: the user whose tasks count.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uid: Option<u32>,
    /// For `rlimit_nproc`: the process with the lowest limit of that user,
    /// the first whose thread creation will fail.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comm: Option<String>,
    /// For `cgroup_pids` and `memory_cgroup`: the cgroup whose limit it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<String>,
    /// The pod the limit belongs to, when it is a pod's or a container's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

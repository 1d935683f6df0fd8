//! `oversubscribed`: a pool library runs more threads than the CPUs its
//! process may use, because it sized itself by the host's CPUs.
use serde::{Deserialize, Serialize};

use super::K8s;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Oversubscribed {
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub library: String,
    /// The pool's threads: those it created, plus the caller's, which works
    /// in the pool too.
    pub threads: u64,
    pub cpus_allowed: u64,
    /// "cgroup cpu.cfs_quota_us", "cgroup cpu.max" or "affinity".
    pub source: String,
    pub remedy: String,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

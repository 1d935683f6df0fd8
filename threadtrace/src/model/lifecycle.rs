//! Process lifecycle: fork, exec, exit, and moves between cgroups. These
//! keep the process table true; they are reported with `--lifecycle` and
//! always kept in trace files.
use serde::{Deserialize, Serialize};

use super::{K8s, Pool, Task};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessFork {
    /// The parent.
    #[serde(flatten)]
    pub task: Task,
    pub child_pid: u32,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessExec {
    #[serde(flatten)]
    pub task: Task,
    pub filename: String,
    pub ppid: Option<u32>,
    pub cmdline: Option<String>,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessExit {
    #[serde(flatten)]
    pub task: Task,
    /// exit() status, when it exited by itself.
    pub exit_code: Option<i32>,
    /// Fatal signal ("SIGKILL", ...), when one ended it.
    pub signal: Option<String>,
    pub core_dumped: bool,
    pub ppid: Option<u32>,
    pub cmdline: Option<String>,
    /// Set when a pool worker died of a signal: its pool lost a task.
    #[serde(default)]
    pub pool: Option<Pool>,
    #[serde(default)]
    pub consequence: Option<String>,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

/// A process was moved into a cgroup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessCgroup {
    /// The task that moved it (often the process itself).
    #[serde(flatten)]
    pub task: Task,
    pub moved_pid: u32,
    /// Controllers of the hierarchy ("pids", "memory", "" for cgroup v2).
    pub hierarchy: String,
    pub path: String,
    /// The moved process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

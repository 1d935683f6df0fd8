//! `oom_kill`: the OOM killer chose a victim. The victim and the task whose
//! allocation triggered the kill are both reported: they often differ. So
//! are the processes that grew before it, the largest holders, and the
//! pool left waiting for the victim's work, and, when memory.oom.group
//! made the kernel kill a whole cgroup, which kill was its choice.
use serde::{Deserialize, Serialize};

use super::{K8s, Task};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OomKill {
    /// The victim (pid, comm, uid); `tid` is the victim's pid.
    #[serde(flatten)]
    pub task: Task,
    pub victim: Victim,
    pub trigger: Trigger,
    /// The memory cgroup whose limit was reached; null for a global OOM.
    pub memory_cgroup: Option<MemoryCgroup>,
    /// The largest resident processes in that cgroup (or the host) then.
    pub top_holders: Vec<MemHolder>,
    /// The processes of that cgroup (or the host) whose resident memory
    /// grew the most in the window before the kill, most first; the
    /// victim among them when it grew. Empty when nothing was sampled.
    #[serde(default)]
    pub growers: Vec<Grower>,
    /// The victim's own growth in that window; null when not known.
    #[serde(default)]
    pub victim_growth: Option<Box<Grower>>,
    /// Live processes in scope whose growth could not be measured (seen
    /// too briefly, or past the history's process cap).
    #[serde(default)]
    pub growth_unknown: u32,
    /// Set when the victim was a pool worker.
    pub pool: Option<Pool>,
    /// What the kill did beyond the victim (a pool waiting forever).
    pub consequence: Option<String>,
    pub remedy: String,
    /// Set when the kill was part of a group kill (memory.oom.group):
    /// whether the kernel chose this victim, or killed it with its
    /// cgroup. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group_kill: Option<GroupKill>,
    /// The victim's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

impl OomKill {
    /// Killed only because memory.oom.group killed its cgroup: the
    /// kernel chose another victim, whose record tells the story.
    pub fn killed_with_group(&self) -> bool {
        self.group_kill
            .as_ref()
            .is_some_and(GroupKill::killed_with_group)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Victim {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Option<String>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    /// anon + file + shmem resident memory when it was chosen.
    pub rss_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub total_vm_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub ppid: Option<u32>,
    pub parent_comm: Option<String>,
    /// Memory cgroup directory.
    pub cgroup: Option<String>,
}

/// A group kill: memory.oom.group is 1 on `cgroup` (the highest such
/// between the victim's memory cgroup and the one whose limit was
/// reached), so after the victim it chose the kernel killed every other
/// process in that cgroup too. Each of those kills is a record of its
/// own, with `role` "killed_with_group" and the chosen victim's pid.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupKill {
    /// The cgroup whose processes were all killed.
    pub cgroup: String,
    /// The victim the OOM killer chose.
    pub chosen: u32,
    pub chosen_comm: String,
    /// "chosen" (this record is the kernel's choice) or
    /// "killed_with_group" (killed only because of memory.oom.group).
    pub role: String,
}

impl GroupKill {
    pub const CHOSEN: &'static str = "chosen";
    pub const KILLED_WITH_GROUP: &'static str = "killed_with_group";

    /// Killed only because its cgroup was: not the kernel's choice.
    pub fn killed_with_group(&self) -> bool {
        self.role == Self::KILLED_WITH_GROUP
    }
}

/// The task whose allocation made the kernel choose a victim.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Trigger {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub uid: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemoryCgroup {
    pub path: String,
    pub limit_bytes: u64,
    pub usage_bytes: Option<u64>,
    /// How much its usage grew in the window before the kill, up to the
    /// limit it reached; null when it was not sampled.
    #[serde(default)]
    pub grew_bytes: Option<u64>,
    /// The time `grew_bytes` is measured over.
    #[serde(default)]
    pub window_s: Option<f64>,
}

/// A process holding memory when the kill came.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemHolder {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// The parent a killed worker belonged to, and the workers it still has.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Pool {
    pub parent_pid: u32,
    pub parent_comm: String,
    pub parent_cmdline: Option<String>,
    /// Other live children of the parent running the same program.
    pub siblings_alive: u32,
    /// "python-multiprocessing" when recognizable, else "generic".
    pub kind: String,
}

/// Less growth than this is nobody's: a process that touched a few more
/// pages of its libraries or stack did not grow, and is not listed among
/// the growers or told as one.
pub const SIGNIFICANT_GROWTH_BYTES: u64 = 1 << 20;

/// A process's growth in the window before a kill.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Grower {
    pub pid: u32,
    pub comm: String,
    /// Resident memory at the kill.
    pub rss_bytes: u64,
    /// `rss_bytes` minus its resident memory at the start of the window;
    /// all of it when the process started inside the window.
    pub grew_bytes: u64,
    /// The time `grew_bytes` is measured over: the window, less when the
    /// process started inside it (its age) or was first seen inside it.
    pub window_s: f64,
    /// It started inside the window: all of its memory counts as growth.
    pub started_in_window: bool,
    /// How long before the kill the samples first showed a quarter of
    /// this growth; null when only the reading at the kill showed it.
    pub visible_s: Option<f64>,
}

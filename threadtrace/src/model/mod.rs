//! The data model: every type of the `record --json` contract and of the
//! trace file, and nothing else. Data only: no I/O, no clock, no kernel,
//! and no import of any other module of this crate (`cargo xtask test`
//! checks it). Kernel decoding, attribution and diagnosis fill these
//! types; the sinks, the dashboard, `report` and `export` read them.
//!
//! Each type is reached by one path, `crate::model::Type`. A field added
//! here is in `record --json`, in trace files and, through serde, in what
//! `report --json` and `export` read back: older files lack it, so a new
//! field is `#[serde(default)]`.
mod finding;
mod k8s;
mod lifecycle;
mod limit_near;
pub mod names;
mod oom_kill;
mod oversubscribed;
mod rlimit_change;
mod storm;
mod summary;
mod thread_create_failed;

#[cfg(test)]
pub mod fixtures;

use serde::{Deserialize, Serialize};

pub use finding::Finding;
pub use k8s::K8s;
pub use lifecycle::{ProcessCgroup, ProcessExec, ProcessExit, ProcessFork};
pub use limit_near::{Headroom, LimitNear};
pub use oom_kill::{
    GroupKill, Grower, MemHolder, MemoryCgroup, OomKill, Pool, Trigger, Victim,
    SIGNIFICANT_GROWTH_BYTES,
};
pub use oversubscribed::Oversubscribed;
pub use rlimit_change::{Limit, Limits, Outcome, RlimitChange, Unlimited};
pub use storm::{Storm, StormProcess};
pub use summary::{
    AttachMethod, Attribution, HeadroomCost, HookAttach, ProcessFailures, Started, Summary,
    ThreadCount, TraceFileStatus, Tracer,
};
pub use thread_create_failed::{
    Ancestor, Cause, Frame, Holder, LimitSet, Location, ThreadCreateFailed, ThreadGroup,
};

/// One line of `record --json`, one record of a trace file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Started(Started),
    ThreadCreateFailed(ThreadCreateFailed),
    RlimitChange(RlimitChange),
    OomKill(OomKill),
    ProcessFork(ProcessFork),
    ProcessExec(ProcessExec),
    ProcessExit(ProcessExit),
    ProcessCgroup(ProcessCgroup),
    Storm(Storm),
    Oversubscribed(Oversubscribed),
    LimitNear(LimitNear),
    Summary(Summary),
}

impl Record {
    pub fn task(&self) -> Option<&Task> {
        match self {
            Record::ThreadCreateFailed(e) => Some(&e.task),
            Record::RlimitChange(e) => Some(&e.task),
            Record::OomKill(e) => Some(&e.task),
            Record::ProcessFork(e) => Some(&e.task),
            Record::ProcessExec(e) => Some(&e.task),
            Record::ProcessExit(e) => Some(&e.task),
            Record::ProcessCgroup(e) => Some(&e.task),
            Record::Started(_)
            | Record::Summary(_)
            | Record::Storm(_)
            | Record::Oversubscribed(_)
            | Record::LimitNear(_) => None,
        }
    }

    /// Lifecycle records feed the process table; they are printed only on
    /// request, so that failures are not lost in a flood of execs.
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            Record::ProcessFork(_)
                | Record::ProcessExec(_)
                | Record::ProcessExit(_)
                | Record::ProcessCgroup(_)
        )
    }

    /// Whether the console shows it by default: not lifecycle, not a
    /// setrlimit that left the limit as it was.
    pub fn is_noteworthy(&self) -> bool {
        match self {
            Record::RlimitChange(e) => e.changed,
            Record::ProcessExit(e) => e.pool.is_some(),
            r => !r.is_lifecycle(),
        }
    }
}

/// Fields every event carries: the task the event is about.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Task {
    /// RFC 3339, UTC.
    pub time: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub uid: u32,
}

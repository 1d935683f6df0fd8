//! The events threadtrace reports: one module per event type, each with its
//! JSON shape (the contract of `record --json`) and its enrichment from the
//! kernel's raw record. `decode` turns ring-buffer bytes into raw records.
pub mod decode;
pub mod lifecycle;
pub mod names;
pub mod oom_kill;
pub mod rlimit_change;
pub mod session;
pub mod thread_create_failed;

use serde::{Deserialize, Serialize};

pub use lifecycle::{ProcessExec, ProcessExit, ProcessFork};
pub use oom_kill::OomKill;
pub use rlimit_change::RlimitChange;
pub use session::{Started, Summary};
pub use thread_create_failed::ThreadCreateFailed;

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
    ProcessCgroup(lifecycle::ProcessCgroup),
    Storm(crate::diagnosis::storm::Storm),
    Oversubscribed(crate::diagnosis::oversubscription::Oversubscribed),
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
            | Record::Oversubscribed(_) => None,
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

/// A NUL-padded kernel string.
pub fn cstr(bytes: &[u8]) -> String {
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..n]).into_owned()
}

/// What enrichment needs: the process table, the clock, and the pods.
pub struct Context {
    pub procs: crate::proctable::ProcTable,
    pub clock: crate::clock::Clock,
    pub pods: crate::pods::Pods,
}

impl Context {
    pub fn new(procs: crate::proctable::ProcTable) -> Self {
        Context {
            procs,
            clock: crate::clock::Clock::new(),
            pods: crate::pods::Pods::default(),
        }
    }

    /// The Kubernetes pod and container of a process in the table, None
    /// outside one. The table only: reading /proc for a pid it does not
    /// know would add threads (cgroup moves name them) as processes.
    pub fn k8s(&mut self, pid: u32) -> Option<crate::pods::K8s> {
        let p = self.procs.get(pid)?;
        self.pods.resolve(pid, &p.comm, &p.cgroups)
    }

    /// The UIDs of the pods with a live process: the metrics delete the
    /// series of the others.
    pub fn live_pods(&mut self) -> std::collections::HashSet<String> {
        let mut uids = std::collections::HashSet::new();
        for p in self.procs.alive_procs() {
            if let Some(r) = self.pods.pod_of(&p.cgroups) {
                uids.insert(r.pod_uid.clone());
            }
        }
        uids
    }

    pub fn task(&self, h: &threadtrace_common::Header) -> Task {
        Task {
            time: self.clock.rfc3339(h.ktime_ns),
            pid: h.tgid,
            tid: h.tid,
            comm: cstr(&h.comm),
            uid: h.uid,
        }
    }
}

/// A kernel record as a reported event; lifecycle records also update the
/// process table, before (fork, exec) or after (exit) they are described.
/// `offsets`: the start_routine offsets the kernel reads at, slot by slot.
/// None for what is not reported (mappings, which address spaces take).
pub fn enrich(raw: decode::Raw, ctx: &mut Context, offsets: &[u32]) -> Option<Record> {
    use decode::Raw;
    Some(match raw {
        Raw::CreateFailed(e) => {
            Record::ThreadCreateFailed(thread_create_failed::from_kernel(&e, ctx, offsets))
        }
        Raw::RlimitChange(e) => Record::RlimitChange(rlimit_change::enrich(&e, ctx)),
        Raw::OomVictim(e) => Record::OomKill(oom_kill::enrich(&e, ctx)),
        Raw::ProcessFork(e) => Record::ProcessFork(lifecycle::fork(&e, ctx)),
        Raw::ProcessExec(e) => Record::ProcessExec(lifecycle::exec(&e, ctx)),
        Raw::ProcessExit(e) => Record::ProcessExit(lifecycle::exit(&e, ctx)),
        Raw::CgroupAttach(e) => Record::ProcessCgroup(lifecycle::cgroup_attach(&e, ctx)),
        Raw::Mapping(_) => return None,
    })
}

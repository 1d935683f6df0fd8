//! Enrichment: a kernel record (`kernel::decode`) as a reported event of
//! the model, one module per event type, with what the process table, the
//! clock and the pods know of its process. Lifecycle records also keep the
//! process table true, before (fork, exec) or after (exit) they are
//! described.
mod lifecycle;
mod oom_kill;
mod rlimit_change;
mod thread_create_failed;

use crate::{
    attribution::Captured,
    clock::Clock,
    kernel::decode::Raw,
    model::{K8s, Record, Task},
    pods::Pods,
    proctable::ProcTable,
};

/// A NUL-padded kernel string.
pub fn cstr(bytes: &[u8]) -> String {
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..n]).into_owned()
}

/// What enrichment needs: the process table, the clock, and the pods.
pub struct Context {
    pub procs: ProcTable,
    pub clock: Clock,
    pub pods: Pods,
}

impl Context {
    pub fn new(procs: ProcTable) -> Self {
        Context {
            procs,
            clock: Clock::new(),
            pods: Pods::default(),
        }
    }

    /// The Kubernetes pod and container of a process in the table, None
    /// outside one. The table only: reading /proc for a pid it does not
    /// know would add threads (cgroup moves name them) as processes.
    pub fn k8s(&mut self, pid: u32) -> Option<K8s> {
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

/// A kernel record as a reported event, and for a failure what the kernel
/// captured of its stack, which travels beside the event to attribution.
/// `offsets`: the start_routine offsets the kernel reads at, slot by slot.
/// None for what is not reported (mappings, which address spaces take).
pub fn enrich(
    raw: Raw,
    ctx: &mut Context,
    offsets: &[u32],
) -> Option<(Record, Option<Box<Captured>>)> {
    Some(match raw {
        Raw::CreateFailed(e) => {
            let (ev, captured) = thread_create_failed::from_kernel(&e, ctx, offsets);
            (Record::ThreadCreateFailed(ev), Some(Box::new(captured)))
        }
        Raw::RlimitChange(e) => (Record::RlimitChange(rlimit_change::enrich(&e, ctx)), None),
        Raw::OomVictim(e) => (Record::OomKill(oom_kill::enrich(&e, ctx)), None),
        Raw::ProcessFork(e) => (Record::ProcessFork(lifecycle::fork(&e, ctx)), None),
        Raw::ProcessExec(e) => (Record::ProcessExec(lifecycle::exec(&e, ctx)), None),
        Raw::ProcessExit(e) => (Record::ProcessExit(lifecycle::exit(&e, ctx)), None),
        Raw::CgroupAttach(e) => (
            Record::ProcessCgroup(lifecycle::cgroup_attach(&e, ctx)),
            None,
        ),
        Raw::Mapping(_) => return None,
    })
}

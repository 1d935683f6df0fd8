//! `thread_create_failed`: pthread_create, clone, clone3, fork or vfork
//! returned an error.
use serde::{Deserialize, Serialize};
use threadtrace_common::{Api, CreateFailed, Event, UserStack};

use crate::attribution::{Captured, Frame, Location};

use super::{names, Context, Task};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadCreateFailed {
    #[serde(flatten)]
    pub task: Task,
    /// "pthread_create", "clone", "clone3", "fork" or "vfork".
    pub api: String,
    pub errno: i32,
    pub error: String,
    /// Who wanted the thread: "libopenblas", "libgomp", ..., or the
    /// executable's name when the program asked itself.
    pub library: Option<String>,
    /// That library's file, as the process sees it.
    pub module: Option<String>,
    /// The function in it that asked (e.g. blas_thread_init).
    pub symbol: Option<String>,
    /// The syscall that failed: for pthread_create, the clone inside it, or
    /// `mmap`/`mprotect` when the new thread's stack could not be set up.
    pub syscall: Option<String>,
    pub syscall_errno: Option<i32>,
    /// The cgroup that limits task creation: pids controller on cgroup v1,
    /// the unified hierarchy otherwise.
    pub cgroup: Option<String>,
    pub ppid: Option<u32>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    /// pthread_create's return address: the code that asked for the thread.
    pub caller: Option<u64>,
    /// The thread's function, what it would have run.
    pub start_routine: Option<Location>,
    /// Its address.
    pub start_routine_addr: Option<u64>,
    /// The user stack, innermost first, from inside libc's syscall wrapper.
    pub stack: Vec<Frame>,
    /// What attribution could not name (the library, or its function)
    /// and why: which frame's file could not be read, and what was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution_gap: Option<String>,
    /// Which limit was hit, where it came from, who holds the threads, and
    /// the remedy.
    pub cause: Option<Box<crate::diagnosis::Cause>>,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<crate::pods::K8s>,
    /// What the kernel captured, until attribution turns it into `stack`.
    #[serde(skip)]
    pub captured: Option<Box<Captured>>,
}

impl PartialEq for Captured {
    fn eq(&self, other: &Self) -> bool {
        self.ktime == other.ktime
            && self.ips == other.ips
            && self.snapshot == other.snapshot
            && self.pd == other.pd
            && self.start_routine == other.start_routine
    }
}

fn stack(s: &UserStack) -> Vec<u64> {
    s.ips[..(s.len as usize).min(s.ips.len())].to_vec()
}

fn base(task: Task, api: &str, errno: i32, ctx: &mut Context) -> ThreadCreateFailed {
    let pid = task.pid;
    let proc_ = ctx.procs.lookup(pid).cloned();
    let cgroup = ctx.procs.cgroup(pid, "pids");
    ThreadCreateFailed {
        task,
        api: api.into(),
        errno,
        error: names::errno_name(errno),
        library: None,
        module: None,
        symbol: None,
        syscall: None,
        syscall_errno: None,
        cgroup,
        ppid: proc_.as_ref().map(|p| p.ppid),
        exe: proc_.as_ref().and_then(|p| p.exe.clone()),
        cmdline: proc_.and_then(|p| p.cmdline.as_deref().map(String::from)),
        caller: None,
        start_routine: None,
        start_routine_addr: None,
        stack: Vec::new(),
        attribution_gap: None,
        cause: None,
        k8s: ctx.k8s(pid),
        captured: None,
    }
}

const ENOMEM: i32 = 12;
const EAGAIN: i32 = 11;

/// A failure as the kernel sent it. `offsets` are the start_routine
/// offsets the kernel read at (see `PTHREAD_OFFSETS`), slot by slot.
pub fn from_kernel(
    e: &Event<CreateFailed>,
    ctx: &mut Context,
    offsets: &[u32],
) -> ThreadCreateFailed {
    let p = &e.payload;
    let syscall = Api::from_u32(p.syscall).unwrap_or(Api::Clone);
    let api = Api::from_u32(p.api).unwrap_or(syscall);
    let mut ev = base(ctx.task(&e.header), api.name(), p.errno, ctx);
    ev.syscall = Some(syscall.name().to_string());
    ev.syscall_errno = Some(p.errno);
    let mut c = Captured::new(e.header.ktime_ns, stack(&p.stack), &p.copy);
    c.pd = p.pd;
    c.start_routine = offsets
        .iter()
        .zip(p.start_routine)
        .filter(|(o, _)| **o != 0)
        .map(|(&o, v)| (o, v))
        .collect();
    c.restore_returns(&p.uretprobes);
    ev.captured = Some(Box::new(c));
    ev
}

impl ThreadCreateFailed {
    /// Whether the syscall that failed was setting up a thread's stack
    /// (mmap, mprotect), not creating the task.
    pub fn is_stack_setup(&self) -> bool {
        self.syscall
            .as_deref()
            .is_some_and(|s| s == Api::Mmap.name() || s == Api::Mprotect.name())
    }

    /// A stack-setup failure found to be inside pthread_create: reported as
    /// pthread_create does, which says EAGAIN when memory ran out.
    pub fn as_pthread_create(&mut self) {
        self.api = Api::PthreadCreate.name().into();
        if self.errno == ENOMEM {
            self.errno = EAGAIN;
            self.error = names::errno_name(EAGAIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::decode::tests::create_failed, proctable::ProcTable};

    #[test]
    fn a_clone3_failure_inside_pthread_create() {
        let mut ctx = Context::new(ProcTable::default());
        let ev = from_kernel(
            &create_failed(4_100_000, 4_100_001, 11, 3),
            &mut ctx,
            &[1592],
        );
        assert_eq!(
            (ev.api.as_str(), ev.errno, ev.error.as_str()),
            ("pthread_create", 11, "EAGAIN")
        );
        assert_eq!(ev.syscall.as_deref(), Some("clone3"));
        assert_eq!(ev.syscall_errno, Some(11));
        assert_eq!(ev.task.comm, "omp");
        let c = ev.captured.as_ref().unwrap();
        assert_eq!(c.ips, vec![0x7f00_0000_1234]);
        assert_eq!(c.start_routine, vec![(1592, 0x7f00_0000_5678)]);
        // A process that is gone and was never seen: still an event.
        assert_eq!(ev.exe, None);
    }

    #[test]
    fn a_stack_that_could_not_be_mapped_becomes_pthread_create_eagain() {
        let mut ctx = Context::new(ProcTable::default());
        let mut ev = from_kernel(&create_failed(4_100_000, 4_100_000, 12, 6), &mut ctx, &[]);
        assert!(ev.is_stack_setup());
        assert_eq!((ev.api.as_str(), ev.errno), ("mmap", 12));
        ev.as_pthread_create();
        assert_eq!(
            (ev.api.as_str(), ev.error.as_str()),
            ("pthread_create", "EAGAIN")
        );
        assert_eq!(ev.syscall_errno, Some(12));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["syscall"], "mmap");
        assert_eq!(json["pid"], 4_100_000);
    }
}

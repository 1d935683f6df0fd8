//! `thread_create_failed`: pthread_create, clone, clone3, fork or vfork
//! returned an error.
use serde::{Deserialize, Serialize};
use threadtrace_common::{Api, CloneFailed, Event, PthreadCreateFailed, UserStack};

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
    /// For pthread_create: the clone syscall that failed inside it, or null
    /// when none did (the thread's stack could not be mapped).
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
    /// The user stack, innermost first: for pthread_create it starts at the
    /// caller.
    pub stack: Vec<Frame>,
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
        self.ips == other.ips && self.resolved == other.resolved && self.snapshot == other.snapshot
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
        cmdline: proc_.and_then(|p| p.cmdline),
        caller: None,
        start_routine: None,
        start_routine_addr: None,
        stack: Vec::new(),
        cause: None,
        k8s: ctx.k8s(pid),
        captured: None,
    }
}

pub fn from_clone(e: &Event<CloneFailed>, ctx: &mut Context) -> ThreadCreateFailed {
    let api = Api::from_u32(e.payload.api)
        .map(Api::name)
        .unwrap_or("clone");
    let mut ev = base(ctx.task(&e.header), api, e.payload.errno, ctx);
    ev.captured = Some(Box::new(Captured::new(
        stack(&e.payload.stack),
        &e.payload.resolved,
        &e.payload.copy,
    )));
    ev
}

pub fn from_pthread(e: &Event<PthreadCreateFailed>, ctx: &mut Context) -> ThreadCreateFailed {
    let p = &e.payload;
    let mut ev = base(ctx.task(&e.header), Api::PthreadCreate.name(), p.ret, ctx);
    if p.clone_errno != 0 {
        ev.syscall = Api::from_u32(p.clone_api).map(|a| a.name().to_string());
        ev.syscall_errno = Some(p.clone_errno);
    }
    ev.caller = (p.caller != 0).then_some(p.caller);
    ev.start_routine_addr = (p.start_routine != 0).then_some(p.start_routine);
    ev.captured = Some(Box::new(Captured::new(
        stack(&p.stack),
        &p.resolved,
        &p.copy,
    )));
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::decode::tests::pthread_failed, proctable::ProcTable};

    #[test]
    fn pthread_failure_folds_in_the_clone_syscall() {
        let mut ctx = Context::new(ProcTable::default());
        let ev = from_pthread(&pthread_failed(4_100_000, 4_100_001, 11, 11), &mut ctx);
        assert_eq!(
            (ev.api.as_str(), ev.errno, ev.error.as_str()),
            ("pthread_create", 11, "EAGAIN")
        );
        assert_eq!(ev.syscall.as_deref(), Some("clone3"));
        assert_eq!(ev.syscall_errno, Some(11));
        assert_eq!(ev.task.comm, "omp");
        assert_eq!(ev.captured.as_ref().unwrap().ips, vec![0x7f00_0000_1234]);
        // A process that is gone and was never seen: still an event.
        assert_eq!(ev.exe, None);
    }

    #[test]
    fn failure_without_clone_has_no_syscall() {
        let mut ctx = Context::new(ProcTable::default());
        let ev = from_pthread(&pthread_failed(4_100_000, 4_100_000, 11, 0), &mut ctx);
        assert_eq!(ev.syscall, None);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["syscall"], serde_json::Value::Null);
        assert_eq!(json["pid"], 4_100_000);
    }
}

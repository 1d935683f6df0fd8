//! `thread_create_failed` from the kernel's record: the event as far as
//! the process table knows it, and what the kernel captured of its stack
//! (attribution turns that into the library, later, off this thread).
use threadtrace_common::{Api, CreateFailed, Event, UserStack};

use super::Context;
use crate::{
    attribution::Captured,
    model::{names, Task, ThreadCreateFailed},
};

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
        creates: None,
        errno,
        error: names::errno_name(errno),
        library: None,
        module: None,
        symbol: None,
        runtime: None,
        libc: None,
        reason: None,
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
    }
}

const CLONE_THREAD: u64 = 0x10000;

/// What the failing call was to create: a thread shares its process's
/// memory (CLONE_THREAD; a stack mapped for pthread_create), a process
/// does not (fork, vfork, clone without CLONE_THREAD).
fn creates(api: Api, syscall: Api, flags: u64) -> &'static str {
    match (api, syscall) {
        (Api::PthreadCreate, _) | (_, Api::Mmap | Api::Mprotect) => "thread",
        (_, Api::Clone | Api::Clone3) if flags & CLONE_THREAD != 0 => "thread",
        _ => "process",
    }
}

/// A failure as the kernel sent it. `offsets` are the start_routine
/// offsets the kernel read at (see `PTHREAD_OFFSETS`), slot by slot.
pub fn from_kernel(
    e: &Event<CreateFailed>,
    ctx: &mut Context,
    offsets: &[u32],
) -> (ThreadCreateFailed, Captured) {
    let p = &e.payload;
    let syscall = Api::from_u32(p.syscall).unwrap_or(Api::Clone);
    let api = Api::from_u32(p.api).unwrap_or(syscall);
    let mut ev = base(ctx.task(&e.header), api.name(), p.errno, ctx);
    ev.syscall = Some(syscall.name().to_string());
    ev.syscall_errno = Some(p.errno);
    ev.creates = Some(creates(api, syscall, p.flags).into());
    let mut c = Captured::new(e.header.ktime_ns, stack(&p.stack), &p.copy);
    c.pd = p.pd;
    c.child_arg = p.child_arg;
    c.start_routine = offsets
        .iter()
        .zip(p.start_routine)
        .filter(|(o, _)| **o != 0)
        .map(|(&o, v)| (o, v))
        .collect();
    c.restore_returns(&p.uretprobes);
    (ev, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::decode::tests::create_failed, proctable::ProcTable};

    #[test]
    fn a_clone3_failure_inside_pthread_create() {
        let mut ctx = Context::new(ProcTable::default());
        let (ev, c) = from_kernel(
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
        assert_eq!(c.ips, vec![0x7f00_0000_1234]);
        assert_eq!(c.start_routine, vec![(1592, 0x7f00_0000_5678)]);
        // A process that is gone and was never seen: still an event.
        assert_eq!(ev.exe, None);
    }

    #[test]
    fn a_stack_that_could_not_be_mapped_becomes_pthread_create_eagain() {
        let mut ctx = Context::new(ProcTable::default());
        let (mut ev, _) = from_kernel(&create_failed(4_100_000, 4_100_000, 12, 6), &mut ctx, &[]);
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

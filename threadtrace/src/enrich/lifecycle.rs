//! Process lifecycle from the kernel's records: fork, exec, exit and
//! cgroup moves, each applied to the process table as it is described.
use threadtrace_common::{
    Event, ProcessExec as RawExec, ProcessExit as RawExit, ProcessFork as RawFork,
};

use super::{cstr, Context};
use crate::model::{names::signal_name, ProcessCgroup, ProcessExec, ProcessExit, ProcessFork};

pub fn cgroup_attach(
    e: &Event<threadtrace_common::CgroupAttach>,
    ctx: &mut Context,
) -> ProcessCgroup {
    let task = ctx.task(&e.header);
    let path = cstr(&e.payload.path);
    let hierarchy = ctx
        .procs
        .on_cgroup_attach(e.payload.pid, e.payload.root, &path);
    ProcessCgroup {
        task,
        moved_pid: e.payload.pid,
        hierarchy: hierarchy.unwrap_or_default(),
        path,
        k8s: ctx.k8s(e.payload.pid),
    }
}

pub fn fork(e: &Event<RawFork>, ctx: &mut Context) -> ProcessFork {
    let task = ctx.task(&e.header);
    ctx.procs
        .on_fork(e.header.tgid, e.payload.child_pid, e.header.uid, &task.comm);
    ProcessFork {
        k8s: ctx.k8s(task.pid),
        task,
        child_pid: e.payload.child_pid,
    }
}

pub fn exec(e: &Event<RawExec>, ctx: &mut Context) -> ProcessExec {
    let task = ctx.task(&e.header);
    let filename = cstr(&e.payload.filename);
    ctx.procs.on_exec(task.pid, &filename, &task.comm, task.uid);
    let k8s = ctx.k8s(task.pid);
    let p = ctx.procs.get(task.pid);
    ProcessExec {
        ppid: p.map(|p| p.ppid),
        cmdline: p.and_then(|p| p.cmdline.as_deref().map(String::from)),
        task,
        filename,
        k8s,
    }
}

pub fn exit(e: &Event<RawExit>, ctx: &mut Context) -> ProcessExit {
    let task = ctx.task(&e.header);
    let code = e.payload.exit_code;
    let (exit_code, signal, core_dumped) = split_exit_code(code);
    let k8s = ctx.k8s(task.pid);
    let p = ctx.procs.get(task.pid);
    let out = ProcessExit {
        ppid: p.map(|p| p.ppid),
        cmdline: p.and_then(|p| p.cmdline.as_deref().map(String::from)),
        task,
        exit_code,
        signal,
        core_dumped,
        pool: None,
        consequence: None,
        k8s,
    };
    ctx.procs.on_exit(out.task.pid, code);
    out
}

/// task_struct.exit_code → (status, signal, core dumped).
pub fn split_exit_code(code: i32) -> (Option<i32>, Option<String>, bool) {
    if code < 0 {
        return (None, None, false);
    }
    let sig = code & 0x7f;
    if sig != 0 {
        (None, Some(signal_name(sig)), code & 0x80 != 0)
    } else {
        (Some((code >> 8) & 0xff), None, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(split_exit_code(3 << 8), (Some(3), None, false));
        assert_eq!(split_exit_code(9), (None, Some("SIGKILL".into()), false));
        assert_eq!(
            split_exit_code(11 | 0x80),
            (None, Some("SIGSEGV".into()), true)
        );
        assert_eq!(split_exit_code(-1), (None, None, false));
    }
}

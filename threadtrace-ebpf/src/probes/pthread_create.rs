//! uprobe + uretprobe on libc's pthread_create, attached to every libc the
//! collector finds (host, containers, libcs that appear later).
//!
//! Entry remembers who asked (return address, start_routine) per thread.
//! The return reports a failure once, with the errno of the clone syscall
//! that failed inside it, or none when the thread's stack could not be set up.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use threadtrace_common::{stat, Api, EventKind, PthreadCreateFailed};

use crate::{
    emit::{
        bump, copy_user_stack, count_failure, detail_allowed, nproc_snapshot, reserve, user_stack,
        user_stack_build_ids,
    },
    maps::{InflightThread, PTHREAD_INFLIGHT},
};

#[uprobe]
pub fn pthread_create_enter(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: at function entry rsp points at the return address.
    let regs = unsafe { &*ctx.regs };
    let caller = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
    let t = InflightThread {
        caller,
        start_routine: regs.rdx,
        clone_errno: 0,
        clone_api: 0,
    };
    if PTHREAD_INFLIGHT.insert(&tid, &t, 0).is_err() {
        bump(stat::INFLIGHT_FULL);
    }
    0
}

#[uretprobe]
pub fn pthread_create_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let ret: i32 = ctx.ret();
    let t = match unsafe { PTHREAD_INFLIGHT.get(&tid) } {
        Some(t) => *t,
        None => InflightThread {
            caller: 0,
            start_routine: 0,
            clone_errno: 0,
            clone_api: 0,
        },
    };
    let _ = PTHREAD_INFLIGHT.remove(&tid);
    if ret == 0 {
        return 0;
    }
    count_failure((pid_tgid >> 32) as u32, Api::PthreadCreate as u32, ret);
    if !detail_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let Some(mut entry) = reserve::<PthreadCreateFailed>(EventKind::PthreadCreateFailed) {
        // SAFETY: reserved memory of the right size; header already set.
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        let p = &mut ev.payload;
        p.ret = ret;
        p.clone_errno = t.clone_errno;
        p.clone_api = t.clone_api;
        p._pad = 0;
        p.caller = t.caller;
        p.start_routine = t.start_routine;
        // At the return the innermost frame is the caller: the stack says
        // who asked, without pthread_create's own frames.
        user_stack(&ctx, &mut p.stack);
        user_stack_build_ids(&ctx, &mut p.resolved);
        // SAFETY: the uretprobe's context is the user registers at return.
        let regs = unsafe { &*ctx.regs };
        copy_user_stack(regs.rip, regs.rsp, regs.rbp, &mut p.copy);
        nproc_snapshot(&mut p.nproc);
        entry.submit(0);
    }
    0
}

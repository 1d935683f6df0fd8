//! syscalls:sys_exit_{clone,clone3,fork,vfork}: the syscalls that create
//! tasks. A failure inside pthread_create is folded into that call's event
//! (see pthread_create.rs); any other failure is an event of its own.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use threadtrace_common::{Api, CloneFailed, EventKind};

use crate::{
    emit::{
        copy_user_stack, count_failure, current_user_regs, detail_allowed, nproc_snapshot, reserve,
        user_stack, user_stack_build_ids,
    },
    maps::PTHREAD_INFLIGHT,
};

/// Offset of `long ret` in every sys_exit_* record (stable ABI).
const RET: usize = 16;

#[tracepoint]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Clone)
}

#[tracepoint]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Clone3)
}

#[tracepoint]
pub fn sys_exit_fork(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Fork)
}

#[tracepoint]
pub fn sys_exit_vfork(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Vfork)
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, api: Api) -> u32 {
    // SAFETY: offset within the record, per the format file.
    let ret: i64 = match unsafe { ctx.read_at(RET) } {
        Ok(r) => r,
        Err(_) => return 0,
    };
    if ret >= 0 {
        return 0;
    }
    let errno = (-ret) as i32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if let Some(t) = PTHREAD_INFLIGHT.get_ptr_mut(&tid) {
        // pthread_create's return reports this failure, once.
        // SAFETY: the entry belongs to this thread.
        unsafe {
            (*t).clone_errno = errno;
            (*t).clone_api = api as u32;
        }
        return 0;
    }
    count_failure((pid_tgid >> 32) as u32, api as u32, errno);
    if !detail_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let Some(mut entry) = reserve::<CloneFailed>(EventKind::CloneFailed) {
        // SAFETY: reserved memory of the right size; header already set.
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        ev.payload.api = api as u32;
        ev.payload.errno = errno;
        user_stack(ctx, &mut ev.payload.stack);
        user_stack_build_ids(ctx, &mut ev.payload.resolved);
        let (ip, sp, bp) = current_user_regs().unwrap_or((0, 0, 0));
        copy_user_stack(ip, sp, bp, &mut ev.payload.copy);
        nproc_snapshot(&mut ev.payload.nproc);
        entry.submit(0);
    }
    0
}

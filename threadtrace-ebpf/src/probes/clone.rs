//! syscalls:sys_exit_{clone,clone3,fork,vfork}: the syscalls that create
//! tasks. Nothing runs beyond a compare for calls that succeed; a failure
//! is counted, and sent with what attribution needs.
//!
//! A libc's pthread_create is a clone that creates a thread with its own
//! TLS (CLONE_THREAD | CLONE_SETTLS): such a failure is counted as
//! pthread_create, with the syscall kept in the event. For glibc the TLS
//! pointer is the new thread's `struct pthread`, where pthread_create has
//! already stored start_routine.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use threadtrace_common::Api;

use crate::emit::{create_failed, current_user_regs, Failure};

/// Offset of `long ret` in every sys_exit_* record (stable ABI).
pub const RET: usize = 16;

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_SETTLS: u64 = 0x0008_0000;
const ENOSYS: i32 = 38;
/// ERESTARTSYS..ERESTART_RESTARTBLOCK: the kernel restarts the call after
/// a signal; the caller never sees them.
const ERESTART: core::ops::RangeInclusive<i32> = 512..=516;
/// `struct clone_args`: flags at 0, tls at 56.
const CLONE_ARGS_TLS: u64 = 56;

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
fn on_exit(ctx: &TracePointContext, syscall: Api) -> u32 {
    // SAFETY: offset within the record, per the format file.
    let ret: i64 = match unsafe { ctx.read_at(RET) } {
        Ok(r) => r,
        Err(_) => return 0,
    };
    if ret >= 0 {
        return 0;
    }
    let errno = (-ret) as i32;
    // glibc falls back to clone when clone3 says ENOSYS (a seccomp policy
    // may say it to every call): not a failure to create anything.
    if (syscall == Api::Clone3 && errno == ENOSYS) || ERESTART.contains(&errno) {
        return 0;
    }
    let Some(regs) = current_user_regs() else {
        return 0;
    };
    // clone(flags, stack, parent_tid, child_tid, tls); clone3(args, size).
    let (flags, tls) = match syscall {
        Api::Clone => (regs.rdi, regs.r8),
        Api::Clone3 => {
            let args = regs.rdi;
            // SAFETY: fault-checked user reads of the caller's clone_args.
            unsafe {
                (
                    bpf_probe_read_user(args as *const u64).unwrap_or(0),
                    bpf_probe_read_user((args + CLONE_ARGS_TLS) as *const u64).unwrap_or(0),
                )
            }
        }
        _ => (0, 0),
    };
    let thread = flags & (CLONE_THREAD | CLONE_SETTLS) == CLONE_THREAD | CLONE_SETTLS;
    let f = Failure {
        api: if thread { Api::PthreadCreate } else { syscall },
        syscall,
        errno,
        flags,
        site: 0,
        pd: if thread { tls } else { 0 },
    };
    create_failed(ctx, &f, &regs);
    0
}

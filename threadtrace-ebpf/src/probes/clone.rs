//! The syscalls that create tasks (clone, clone3, fork, vfork), hooked one
//! of two ways: at the exit of `kernel_clone`, which all four call (fexit,
//! where the kernel allows it), or at the syscalls:sys_exit_* tracepoints.
//! Nothing runs beyond a compare for calls that succeed; a failure is
//! counted, and sent with what attribution needs, by one body for both:
//! the rest is read from the caller's saved registers, which are the same
//! at either place.
//!
//! A libc's pthread_create is a clone that creates a thread with its own
//! TLS whose tid the kernel clears at exit, for pthread_join
//! (CLONE_THREAD | CLONE_SETTLS | CLONE_CHILD_CLEARTID: glibc and musl
//! alike): such a failure is counted as pthread_create, with the syscall
//! kept in the event. A runtime that makes its own threads (Go sets
//! CLONE_SETTLS but joins nothing) stays `clone`. For glibc the TLS pointer
//! is the new thread's `struct pthread`, where pthread_create has already
//! stored start_routine; musl leaves its start arguments on the child's
//! stack, whose top word is read too.
use core::mem::offset_of;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_probe_read_user,
    macros::{fexit, tracepoint},
    programs::{FExitContext, TracePointContext},
    EbpfContext,
};
use threadtrace_common::Api;

use crate::emit::{
    count_and_allow, current_user_reg, current_user_regs, failure_key, native_syscall,
    send_failure, Failure,
};

/// Offset of `long ret` in every sys_exit_* record (stable ABI).
pub const RET: usize = 16;

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_SETTLS: u64 = 0x0008_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
const LIBC_THREAD: u64 = CLONE_THREAD | CLONE_SETTLS | CLONE_CHILD_CLEARTID;
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

/// x86_64 syscall numbers, as `orig_rax` holds them during the call.
const NR_CLONE: u64 = 56;
const NR_FORK: u64 = 57;
const NR_VFORK: u64 = 58;
const NR_CLONE3: u64 = 435;

/// `pid_t kernel_clone(struct kernel_clone_args *args)`: the new task's
/// pid, or a negative errno. What the tracepoints do not see is left out
/// here too: kernel threads (kthreadd, usermode helpers started by
/// kworkers: their saved registers say no syscall), and 32-bit tasks
/// (other syscall numbers, but clone3's: see `native_syscall`).
///
/// One difference remains: clone3 arguments the kernel refuses before it
/// tries to create anything (EINVAL, E2BIG, EFAULT) never reach
/// kernel_clone, so only the tracepoints see those.
#[fexit(function = "kernel_clone")]
pub fn fexit_kernel_clone(ctx: FExitContext) -> i32 {
    // The return value follows the one argument; an int: its upper half
    // is not defined.
    let ret: i32 = ctx.arg(1);
    if ret >= 0 {
        return 0;
    }
    let syscall = match native_syscall() {
        NR_CLONE => Api::Clone,
        NR_CLONE3 => Api::Clone3,
        NR_FORK => Api::Fork,
        NR_VFORK => Api::Vfork,
        _ => return 0,
    };
    failed(&ctx, syscall, ret as i64);
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, syscall: Api) -> u32 {
    // A direct load from the record: every clone of the host passes here.
    // SAFETY: offset within the record, per the format file.
    let ret =
        unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(RET) as *const i64) };
    if ret >= 0 {
        return 0;
    }
    failed(ctx, syscall, ret);
    0
}

/// A clone-family `syscall` that returned `ret` < 0, seen from either hook.
#[inline(always)]
fn failed<C: EbpfContext>(ctx: &C, syscall: Api, ret: i64) {
    let errno = (-ret) as i32;
    // glibc falls back to clone when clone3 says ENOSYS (a seccomp policy
    // may say it to every call): not a failure to create anything.
    if (syscall == Api::Clone3 && errno == ENOSYS) || ERESTART.contains(&errno) {
        return;
    }
    // In a storm most failures are only counted: what the count needs
    // (the flags) is read first, one register or one word at a time, and
    // the rest only for a failure that gets its event.
    let arg0 = current_user_reg(offset_of!(pt_regs, rdi));
    // clone(flags, stack, parent_tid, child_tid, tls); clone3(args, size).
    let flags = match syscall {
        Api::Clone => arg0,
        // SAFETY: fault-checked user read of the caller's clone_args.
        Api::Clone3 => unsafe { bpf_probe_read_user(arg0 as *const u64) }.unwrap_or(0),
        _ => 0,
    };
    let thread = flags & LIBC_THREAD == LIBC_THREAD;
    let api = if thread { Api::PthreadCreate } else { syscall };
    if !count_and_allow(failure_key(api, errno, 0)) {
        return;
    }
    let Some(regs) = current_user_regs() else {
        return;
    };
    let tls = match (thread, syscall) {
        (false, _) => 0,
        (true, Api::Clone) => regs.r8,
        // SAFETY: as above.
        (true, _) => {
            unsafe { bpf_probe_read_user((arg0 + CLONE_ARGS_TLS) as *const u64) }.unwrap_or(0)
        }
    };
    // clone(2)'s child stack; clone3 users (glibc) have `pd` instead.
    let child_stack = if thread && syscall == Api::Clone {
        regs.rsi
    } else {
        0
    };
    let f = Failure {
        api,
        syscall,
        errno,
        flags,
        site: 0,
        pd: tls,
        child_stack,
    };
    send_failure(ctx, &f, &regs);
}

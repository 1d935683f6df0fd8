//! mmap and mprotect, hooked at `ksys_mmap_pgoff` and `do_mprotect_pkey`
//! (fexit, where the kernel allows it) or at syscalls:sys_exit_{mmap,
//! mprotect}, with one body: a pthread_create that fails before
//! any clone, because the new thread's stack cannot be mapped (RLIMIT_AS,
//! vm.max_map_count, memory) or its guard page cannot be set up.
//!
//! Only failures are looked at, and only those that may be a stack: an
//! anonymous mapping (glibc passes MAP_STACK; others reserve PROT_NONE
//! first) failing for lack of memory. libc's mmap and mprotect wrappers
//! are leaves, so the return address at the user stack pointer is the call
//! site: counts are kept per site, and the collector decides which sites
//! lie inside pthread_create.
//!
//! A call that succeeds in mapping a file executable is handed to
//! `mapping` (the libraries ld.so loads arrive this way).
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{fexit, tracepoint},
    programs::{FExitContext, TracePointContext},
    EbpfContext,
};
use threadtrace_common::Api;

use crate::{
    emit::{create_failed, current_user_regs, native_syscall, Failure},
    probes::{clone::RET, mapping},
};

const ENOMEM: i32 = 12;
const EAGAIN: i32 = 11;
const PROT_NONE: u64 = 0;
const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_STACK: u64 = 0x2_0000;

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Mmap)
}

#[tracepoint]
pub fn sys_exit_mprotect(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, Api::Mprotect)
}

/// x86_64 syscall numbers.
const NR_MMAP: u64 = 9;
const NR_MPROTECT: u64 = 10;

/// `unsigned long ksys_mmap_pgoff(addr, len, prot, flags, fd, pgoff)`: the
/// address, or a negative errno. Only mmap(2) of 64-bit tasks calls it
/// with that syscall number (32-bit mmap2 and old_mmap do not).
#[fexit(function = "ksys_mmap_pgoff")]
pub fn fexit_ksys_mmap_pgoff(ctx: FExitContext) -> i32 {
    // The return value follows the six arguments.
    let ret = ctx.arg::<u64>(6) as i64;
    // What `after` returns on at once, decided from the arguments instead
    // of the saved registers (they are the same for a 64-bit mmap): every
    // mmap of the host passes here.
    if is_success(ret) && ctx.arg::<u64>(2) & PROT_EXEC == 0 {
        return 0;
    }
    if native_syscall() == NR_MMAP {
        after(&ctx, Api::Mmap, ret);
    }
    0
}

/// `int do_mprotect_pkey(start, len, prot, pkey)`: 0 or a negative errno;
/// pkey_mprotect(2) calls it too, and is left out as the tracepoint does.
#[fexit(function = "do_mprotect_pkey")]
pub fn fexit_do_mprotect_pkey(ctx: FExitContext) -> i32 {
    // The return value follows the four arguments; an int.
    let ret = ctx.arg::<i32>(4) as i64;
    if is_success(ret) && ctx.arg::<u64>(2) & PROT_EXEC == 0 {
        return 0;
    }
    if native_syscall() == NR_MPROTECT {
        after(&ctx, Api::Mprotect, ret);
    }
    0
}

/// mmap returns addresses above 2^63 on no architecture we run on: a
/// negative value is an errno.
#[inline(always)]
fn is_success(ret: i64) -> bool {
    ret >= 0 || ret < -4095
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, syscall: Api) -> u32 {
    // A direct load from the record: every mmap of the host passes here.
    // SAFETY: offset within the record, per the format file.
    let ret =
        unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(RET) as *const i64) };
    after(ctx, syscall, ret);
    0
}

/// An mmap or mprotect `syscall` that returned `ret`, seen from either
/// hook: the caller's saved registers are the same at both.
#[inline(always)]
fn after<C: EbpfContext>(ctx: &C, syscall: Api, ret: i64) {
    if is_success(ret) {
        // Success: a file mapped executable is what attribution needs
        // later; anything else returns after reading one register.
        mapping::on_success(syscall == Api::Mmap, ret as u64);
        return;
    }
    let errno = (-ret) as i32;
    if errno != ENOMEM && errno != EAGAIN {
        return;
    }
    let Some(regs) = current_user_regs() else {
        return;
    };
    // mmap(addr, len, prot, flags, fd, off): flags in r10 for syscalls.
    let flags = if syscall == Api::Mmap {
        let (addr, prot, flags) = (regs.rdi, regs.rdx, regs.r10);
        let stack_like = flags & MAP_STACK != 0 || (prot == PROT_NONE && addr == 0);
        if flags & MAP_ANONYMOUS == 0 || !stack_like {
            return;
        }
        flags
    } else {
        0
    };
    // SAFETY: fault-checked user read at the user stack pointer.
    let site = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
    let f = Failure {
        api: syscall,
        syscall,
        errno,
        flags,
        site,
        pd: 0,
        child_stack: 0,
    };
    create_failed(ctx, &f, &regs);
}

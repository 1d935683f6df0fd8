//! syscalls:sys_exit_{mmap,mprotect}: a pthread_create that fails before
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
    helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext, EbpfContext,
};
use threadtrace_common::Api;

use crate::{
    emit::{create_failed, current_user_regs, Failure},
    probes::{clone::RET, mapping},
};

const ENOMEM: i32 = 12;
const EAGAIN: i32 = 11;
const PROT_NONE: u64 = 0;
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

#[inline(always)]
fn on_exit(ctx: &TracePointContext, syscall: Api) -> u32 {
    // A direct load from the record: every mmap of the host passes here.
    // SAFETY: offset within the record, per the format file.
    let ret =
        unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(RET) as *const i64) };
    // mmap returns addresses above 2^63 on no architecture we run on: a
    // negative value is an errno.
    if ret >= 0 || ret < -4095 {
        // Success: a file mapped executable is what attribution needs
        // later; anything else returns after reading one register.
        mapping::on_success(syscall == Api::Mmap, ret as u64);
        return 0;
    }
    let errno = (-ret) as i32;
    if errno != ENOMEM && errno != EAGAIN {
        return 0;
    }
    let Some(regs) = current_user_regs() else {
        return 0;
    };
    // mmap(addr, len, prot, flags, fd, off): flags in r10 for syscalls.
    let flags = if syscall == Api::Mmap {
        let (addr, prot, flags) = (regs.rdi, regs.rdx, regs.r10);
        let stack_like = flags & MAP_STACK != 0 || (prot == PROT_NONE && addr == 0);
        if flags & MAP_ANONYMOUS == 0 || !stack_like {
            return 0;
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
    0
}

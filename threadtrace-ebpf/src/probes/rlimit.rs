//! Who changed which limit, from what, to what. glibc's setrlimit() is
//! prlimit64(0, ...) underneath. Hooked one of two ways:
//! - at the entry and exit of `do_prlimit`, which both syscalls call
//!   (fentry/fexit, where the kernel allows it): only the calls themselves
//!   pay, and the target's old limit is read from the target itself, any
//!   process;
//! - at syscalls:sys_{enter,exit}_{setrlimit,prlimit64} otherwise, which
//!   send every syscall of the host through the kernel's slower syscall
//!   exit.
//!
//! The entry reads the new value (the pointer is only meaningful then) and
//! the limit in force; the exit adds the result and, at the tracepoints,
//! the old value the kernel wrote back if the caller asked for it.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::info;
use threadtrace_common::{EventKind, Rlimit, RlimitApi, RlimitChange, ABSENT};

use crate::{
    emit::{native_syscall, reserve},
    maps::{InflightRlimit, CONFIG, RLIMIT_INFLIGHT},
};

const NR_SETRLIMIT: u64 = 160;
const NR_PRLIMIT64: u64 = 302;
const RLIM_NLIMITS: u32 = 16;

#[tracepoint]
pub fn sys_enter_setrlimit(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets per the syscall's format file (stable ABI).
    let (resource, new_ptr) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0) as u32,
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    enter(RlimitApi::Setrlimit, 0, resource, new_ptr, 0);
    0
}

#[tracepoint]
pub fn sys_enter_prlimit64(ctx: TracePointContext) -> u32 {
    // SAFETY: as above.
    let (pid, resource, new_ptr, old_ptr) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0) as i32,
            ctx.read_at::<u64>(24).unwrap_or(0) as u32,
            ctx.read_at::<u64>(32).unwrap_or(0),
            ctx.read_at::<u64>(40).unwrap_or(0),
        )
    };
    // A pure read (no new value) changes nothing: not an event.
    if new_ptr == 0 {
        return 0;
    }
    enter(RlimitApi::Prlimit64, pid, resource, new_ptr, old_ptr);
    0
}

#[tracepoint]
pub fn sys_exit_setrlimit(ctx: TracePointContext) -> u32 {
    exit_tracepoint(&ctx)
}

#[tracepoint]
pub fn sys_exit_prlimit64(ctx: TracePointContext) -> u32 {
    exit_tracepoint(&ctx)
}

#[inline(always)]
fn enter(api: RlimitApi, target_pid: i32, resource: u32, new_ptr: u64, old_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a fault-checked read of the caller's memory.
    let new = unsafe { bpf_probe_read_user(new_ptr as *const Rlimit) }.ok();
    let own = target_pid == 0 || target_pid as u32 == (pid_tgid >> 32) as u32;
    let old = if own {
        // SAFETY: the helper only returns the current task's address.
        limit_of(unsafe { bpf_get_current_task() } as *const u8, resource)
    } else {
        None
    };
    remember(api, target_pid, resource, new, old, old_ptr);
}

#[inline(always)]
fn remember(
    api: RlimitApi,
    target_pid: i32,
    resource: u32,
    new: Option<Rlimit>,
    old: Option<Rlimit>,
    old_ptr: u64,
) {
    let t = InflightRlimit {
        api: api as u32,
        resource,
        target_pid,
        has_new: new.is_some() as u32,
        new: new.unwrap_or_default(),
        has_old: old.is_some() as u32,
        _pad: 0,
        old: old.unwrap_or_default(),
        old_ptr,
    };
    let _ = RLIMIT_INFLIGHT.insert(&(bpf_get_current_pid_tgid() as u32), &t, 0);
}

/// `task`->signal->rlim[resource], when BTF gave the offsets.
#[inline(always)]
fn limit_of(task: *const u8, resource: u32) -> Option<Rlimit> {
    let cfg = CONFIG.load();
    if cfg.task_signal == ABSENT || cfg.signal_rlim == ABSENT || resource >= RLIM_NLIMITS {
        return None;
    }
    // SAFETY: kernel reads through bpf_probe_read_kernel, which fault-checks.
    unsafe {
        let signal: u64 =
            bpf_probe_read_kernel(task.add(cfg.task_signal as usize) as *const u64).ok()?;
        let rlim = (signal as *const u8).add(cfg.signal_rlim as usize + resource as usize * 16);
        bpf_probe_read_kernel(rlim as *const Rlimit).ok()
    }
}

/// `int do_prlimit(struct task_struct *tsk, unsigned int resource,
/// struct rlimit *new_rlim, struct rlimit *old_rlim)`: the new value is
/// the kernel's copy of the caller's.
#[fentry(function = "do_prlimit")]
pub fn fentry_do_prlimit(ctx: FEntryContext) -> i32 {
    let new_rlim: u64 = ctx.arg(2);
    // getrlimit and prlimit64 without a new value only read.
    if new_rlim == 0 {
        return 0;
    }
    // Only what the syscall tracepoints would see: 64-bit setrlimit and
    // prlimit64 (the kernel calls do_prlimit for nobody else).
    let api = match native_syscall() {
        NR_SETRLIMIT => RlimitApi::Setrlimit,
        NR_PRLIMIT64 => RlimitApi::Prlimit64,
        _ => return 0,
    };
    let task: *const u8 = ctx.arg(0);
    let resource: u32 = ctx.arg(1);
    // SAFETY: as above.
    let own = task == unsafe { bpf_get_current_task() } as *const u8;
    let target_pid = if own { 0 } else { tgid_of(task) };
    // SAFETY: a fault-checked read of the kernel's copy.
    let new = unsafe { bpf_probe_read_kernel(new_rlim as *const Rlimit) }.ok();
    remember(api, target_pid, resource, new, limit_of(task, resource), 0);
    0
}

#[fexit(function = "do_prlimit")]
pub fn fexit_do_prlimit(ctx: FExitContext) -> i32 {
    // The int return value follows the four arguments.
    let ret: i32 = ctx.arg(4);
    exit(&ctx, ret as i64);
    0
}

/// `task`->tgid, or -1 when BTF did not give its offset.
#[inline(always)]
fn tgid_of(task: *const u8) -> i32 {
    let cfg = CONFIG.load();
    if cfg.task_tgid == ABSENT {
        return -1;
    }
    // SAFETY: a fault-checked kernel read.
    unsafe { bpf_probe_read_kernel(task.add(cfg.task_tgid as usize) as *const i32) }.unwrap_or(-1)
}

#[inline(always)]
fn exit_tracepoint(ctx: &TracePointContext) -> u32 {
    // SAFETY: offset of `ret` in sys_exit_* records.
    let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    exit(ctx, ret);
    0
}

#[inline(always)]
fn exit<C: EbpfContext>(ctx: &C, ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let t = match unsafe { RLIMIT_INFLIGHT.get(&tid) } {
        Some(t) => *t,
        None => return,
    };
    let _ = RLIMIT_INFLIGHT.remove(&tid);
    info!(
        ctx,
        "rlimit {} of pid {} set: {}", t.resource, t.target_pid, ret
    );
    let Some(mut entry) = reserve::<RlimitChange>(EventKind::RlimitChange) else {
        return;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let p = &mut ev.payload;
    p.api = t.api;
    p.resource = t.resource;
    p.target_pid = t.target_pid;
    p.result = ret as i32;
    p.has_new = t.has_new;
    p.new = t.new;
    p.has_old = t.has_old;
    p.old = t.old;
    if t.old_ptr != 0 && ret == 0 {
        // SAFETY: user pointer the kernel just wrote the old value to.
        if let Ok(old) = unsafe { bpf_probe_read_user(t.old_ptr as *const Rlimit) } {
            p.has_old = 1;
            p.old = old;
        }
    }
    entry.submit(0);
}

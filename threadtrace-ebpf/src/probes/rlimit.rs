//! syscalls:sys_{enter,exit}_{setrlimit,prlimit64}: who changed which limit,
//! from what, to what. glibc's setrlimit() is prlimit64(0, ...) underneath.
//!
//! The entry reads the new value from user memory (the pointer is only
//! meaningful then) and the limit in force; the exit adds the result and the
//! old value the kernel wrote back, if the caller asked for it.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::info;
use threadtrace_common::{EventKind, Rlimit, RlimitApi, RlimitChange, ABSENT};

use crate::{
    emit::reserve,
    maps::{InflightRlimit, CONFIG, RLIMIT_INFLIGHT},
};

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
    exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_prlimit64(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[inline(always)]
fn enter(api: RlimitApi, target_pid: i32, resource: u32, new_ptr: u64, old_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let new = unsafe { bpf_probe_read_user(new_ptr as *const Rlimit) };
    let own = target_pid == 0 || target_pid as u32 == (pid_tgid >> 32) as u32;
    let old = if own { current_limit(resource) } else { None };
    let t = InflightRlimit {
        api: api as u32,
        resource,
        target_pid,
        has_new: new.is_ok() as u32,
        new: new.unwrap_or_default(),
        has_old: old.is_some() as u32,
        _pad: 0,
        old: old.unwrap_or_default(),
        old_ptr,
    };
    let _ = RLIMIT_INFLIGHT.insert(&(pid_tgid as u32), &t, 0);
}

/// current->signal->rlim[resource], when BTF gave the offsets.
#[inline(always)]
fn current_limit(resource: u32) -> Option<Rlimit> {
    let cfg = CONFIG.load();
    if cfg.task_signal == ABSENT || cfg.signal_rlim == ABSENT || resource >= RLIM_NLIMITS {
        return None;
    }
    // SAFETY: kernel reads through bpf_probe_read_kernel, which fault-checks.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let signal: u64 =
            bpf_probe_read_kernel(task.add(cfg.task_signal as usize) as *const u64).ok()?;
        let rlim = (signal as *const u8).add(cfg.signal_rlim as usize + resource as usize * 16);
        bpf_probe_read_kernel(rlim as *const Rlimit).ok()
    }
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let t = match unsafe { RLIMIT_INFLIGHT.get(&tid) } {
        Some(t) => *t,
        None => return 0,
    };
    let _ = RLIMIT_INFLIGHT.remove(&tid);
    // SAFETY: offset of `ret` in sys_exit_* records.
    let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    info!(
        ctx,
        "rlimit {} of pid {} set: {}", t.resource, t.target_pid, ret
    );
    let Some(mut entry) = reserve::<RlimitChange>(EventKind::RlimitChange) else {
        return 0;
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
    0
}

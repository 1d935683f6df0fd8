//! task:task_newtask, as a raw tracepoint: a task was created. A new
//! process is an event; a new thread returns at once. It runs for every
//! thread of the host, so it takes the tracepoint's arguments as they are
//! (task, clone_flags) instead of a formatted record the kernel would fill
//! first, and a thread costs one compare.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};
use threadtrace_common::{EventKind, ProcessFork, ABSENT};

use crate::{emit::reserve, maps::CONFIG};

const CLONE_THREAD: u64 = 0x0001_0000;

#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn task_newtask(ctx: RawTracePointContext) -> u32 {
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let off = CONFIG.load().task_pid;
    if off == ABSENT {
        return 0;
    }
    // SAFETY: fault-checked kernel read of the new task's pid.
    let child = unsafe { bpf_probe_read_kernel((task + off as u64) as *const i32) }.unwrap_or(0);
    if let Some(mut entry) = reserve::<ProcessFork>(EventKind::ProcessFork) {
        // SAFETY: reserved memory of the right size; header already set.
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        ev.payload.child_pid = child as u32;
        ev.payload._pad = 0;
        ev.payload.clone_flags = flags;
        entry.submit(0);
    }
    0
}

//! task:task_newtask: a task was created. A new process is an event; a new
//! thread returns at once (the tracepoint runs for every thread, so this
//! path is kept to one compare).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use threadtrace_common::{EventKind, ProcessFork};

use crate::emit::reserve;

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets per the format file: pid at 8, clone_flags at 32.
    let (child, flags) = unsafe {
        (
            ctx.read_at::<i32>(8).unwrap_or(0),
            ctx.read_at::<u64>(32).unwrap_or(0),
        )
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
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

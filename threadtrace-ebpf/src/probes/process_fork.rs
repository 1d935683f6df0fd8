//! task:task_newtask: a task was created. A new process is an event; a new
//! thread is only counted, under the code that created it.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use threadtrace_common::{EventKind, LiveKey, ProcessFork};

use crate::{
    emit::{add_live, reserve},
    maps::{PTHREAD_INFLIGHT, THREAD_ORIGIN},
};

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
        let pid_tgid = bpf_get_current_pid_tgid();
        // The creating thread is inside pthread_create: its caller says whose
        // thread this is.
        // SAFETY: read-only lookup of this thread's entry.
        let caller = unsafe { PTHREAD_INFLIGHT.get(&(pid_tgid as u32)) }
            .map(|t| t.caller)
            .unwrap_or(0);
        let key = LiveKey {
            tgid: (pid_tgid >> 32) as u32,
            _pad: 0,
            caller,
        };
        let _ = THREAD_ORIGIN.insert(&(child as u32), &key, 0);
        add_live(&key, 1);
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

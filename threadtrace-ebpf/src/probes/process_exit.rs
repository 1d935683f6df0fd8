//! sched:sched_process_exit, as a raw tracepoint: a task exited; an event
//! only when it was the last of its process, with the exit code (status or
//! fatal signal). A thread's exit returns after one compare.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use threadtrace_common::{EventKind, ProcessExit, ABSENT};

use crate::{emit::reserve, maps::CONFIG};

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    // (task, group_dead) where the format file has group_dead, else (task).
    let group_dead = if cfg.exit_group_dead != ABSENT {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    };
    if !group_dead {
        return 0;
    }
    let exit_code = if cfg.task_exit_code != ABSENT {
        // SAFETY: fault-checked kernel read at the BTF offset.
        unsafe {
            let task = bpf_get_current_task() as *const u8;
            bpf_probe_read_kernel(task.add(cfg.task_exit_code as usize) as *const i32).unwrap_or(-1)
        }
    } else {
        -1
    };
    if let Some(mut entry) = reserve::<ProcessExit>(EventKind::ProcessExit) {
        // SAFETY: reserved memory of the right size; header already set.
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        ev.payload.exit_code = exit_code;
        ev.payload._pad = 0;
        entry.submit(0);
    }
    0
}

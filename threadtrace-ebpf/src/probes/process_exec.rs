//! sched:sched_process_exec: a process became a new program. The collector
//! refreshes its process table and looks for a libc it has not probed yet;
//! the program's and its interpreter's text follow as `Mapping` events.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use threadtrace_common::{EventKind, ProcessExec};

use crate::emit::reserve;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = reserve::<ProcessExec>(EventKind::ProcessExec) else {
        return 0;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: format: __data_loc filename at 8, old_pid at 16.
    let loc: u32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    ev.payload.old_pid = unsafe { ctx.read_at::<i32>(16) }.unwrap_or(0) as u32;
    ev.payload._pad = 0;
    ev.payload.filename[0] = 0;
    // SAFETY: a kernel string inside the tracepoint record.
    unsafe {
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let _ = bpf_probe_read_kernel_str_bytes(src, &mut ev.payload.filename);
    }
    entry.submit(0);
    // After the exec event: the collector starts the new address space
    // there, then adds these.
    super::mapping::on_exec();
    0
}

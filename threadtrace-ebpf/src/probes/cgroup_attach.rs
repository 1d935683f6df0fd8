//! cgroup:cgroup_attach_task: a task was moved into a cgroup. The process
//! table must know it before the task's next failure: a process that moves
//! itself and fails right away is gone before /proc can be read.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use threadtrace_common::{CgroupAttach, EventKind};

use crate::emit::reserve;

#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = reserve::<CgroupAttach>(EventKind::CgroupAttach) else {
        return 0;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: format: dst_root at 8, pid at 24, __data_loc dst_path at 28.
    ev.payload.root = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1);
    ev.payload.pid = unsafe { ctx.read_at::<i32>(24) }.unwrap_or(0) as u32;
    let loc: u32 = unsafe { ctx.read_at(28) }.unwrap_or(0);
    ev.payload.path[0] = 0;
    // SAFETY: a kernel string inside the tracepoint record.
    unsafe {
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let _ = bpf_probe_read_kernel_str_bytes(src, &mut ev.payload.path);
    }
    entry.submit(0);
    0
}

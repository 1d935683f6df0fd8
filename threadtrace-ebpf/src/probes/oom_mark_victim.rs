//! oom:mark_victim: the OOM killer chose a victim. The running task is the
//! one whose allocation triggered it (the header); the victim is in the
//! record. Field offsets come from the format file (CONFIG): older kernels
//! only have `pid`.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use aya_log_ebpf::info;
use threadtrace_common::{EventKind, OomVictim, ABSENT};

use crate::{emit::reserve, maps::CONFIG};

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    // SAFETY: `pid` at 8 has been the first field since the tracepoint exists.
    let victim = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(0);
    info!(&ctx, "oom:mark_victim pid {}", victim);
    let Some(mut entry) = reserve::<OomVictim>(EventKind::OomVictim) else {
        return 0;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let p = &mut ev.payload;
    p.victim_pid = victim as u32;
    p.has_detail = (cfg.oom_anon_rss != ABSENT) as u32;
    p.uid = read_or(&ctx, cfg.oom_uid, u32::MAX);
    p.oom_score_adj = read_or::<i16>(&ctx, cfg.oom_score_adj, 0) as i32;
    p.total_vm_kb = read_or(&ctx, cfg.oom_total_vm, 0);
    p.anon_rss_kb = read_or(&ctx, cfg.oom_anon_rss, 0);
    p.file_rss_kb = read_or(&ctx, cfg.oom_file_rss, 0);
    p.shmem_rss_kb = read_or(&ctx, cfg.oom_shmem_rss, 0);
    p.comm = [0; 16];
    if cfg.oom_comm != ABSENT {
        // __data_loc: low 16 bits offset of the string in the record.
        let loc: u32 = read_or(&ctx, cfg.oom_comm, 0);
        let off = (loc & 0xffff) as usize;
        // SAFETY: a kernel string inside the tracepoint record.
        unsafe {
            let _ =
                bpf_probe_read_kernel_str_bytes((ctx.as_ptr() as *const u8).add(off), &mut p.comm);
        }
    }
    entry.submit(0);
    0
}

#[inline(always)]
fn read_or<T: Copy>(ctx: &TracePointContext, off: u32, default: T) -> T {
    if off == ABSENT {
        return default;
    }
    // SAFETY: offset taken from this tracepoint's format file.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or(default)
}

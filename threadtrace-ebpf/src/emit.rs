//! What every probe does the same way: fill the header, count, reserve.
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_get_stack,
    },
    maps::ring_buf::RingBufEntry,
    EbpfContext,
};
use threadtrace_common::{
    stat, Api, CreateFailed, Event, EventKind, FailureKey, Header, StackCopy, UserStack, MAX_STACK,
    STACK_COPY, START_ROUTINE_SLOTS, URETPROBES,
};

use crate::maps::{
    CONFIG, DETAIL_BUDGET, EVENTS, FAILURES, PTHREAD_OFFSETS, RECENT_FAILURE, STATS,
};

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(v) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// See `count_and_allow`.
const RECHECK: u32 = 32;

/// The counter key of a failure of the current process.
#[inline(always)]
pub fn failure_key(api: Api, errno: i32, site: u64) -> FailureKey {
    FailureKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        api: api as u32,
        errno,
        _pad: 0,
        site,
    }
}

/// Adds `n` failures to `key`'s count in the table.
#[inline(always)]
fn add_failures(key: &FailureKey, n: u64) {
    for _ in 0..2 {
        if let Some(v) = FAILURES.get_ptr_mut(key) {
            // SAFETY: per-CPU value.
            unsafe { *v += n };
            return;
        }
        // Another CPU may insert the same key between our lookup and insert:
        // then the insert fails with EEXIST and the second lookup finds it.
        if FAILURES.insert(key, &n, BPF_NOEXIST as u64).is_ok() {
            return;
        }
    }
    bump(stat::FAILURES_OVERFLOW);
}

/// Counts one failure exactly, whatever happens to its event, and says
/// whether it gets an event with its stacks.
///
/// In a storm the stack capture is most of a failure's cost, and the
/// collector cannot use hundreds of thousands of stacks a second: past the
/// budget (`detail_per_sec` per process, CPU and second) a failure is only
/// counted. A storm also repeats one key on each CPU, so the last key's
/// count and budget live in a per-CPU slot (`RecentFailure`): a repeat
/// costs no map lookup.
#[inline(always)]
pub fn count_and_allow(key: FailureKey) -> bool {
    let budget = CONFIG.load().detail_per_sec;
    let Some(r) = RECENT_FAILURE.get_ptr_mut(0) else {
        add_failures(&key, 1);
        return true;
    };
    // SAFETY: this CPU's slot; nothing else writes it while we run here.
    let r = unsafe { &mut *r };
    if r.key == key {
        r.pending += 1;
    } else {
        // Out of the slot first, then into the table: a reader between
        // the two sees a count short for a moment, never counted twice.
        let (old, n) = (r.key, r.pending);
        r.pending = 0;
        if n > 0 {
            add_failures(&old, n);
        }
        if old.tgid != key.tgid {
            if old.tgid != 0 {
                let _ = DETAIL_BUDGET.insert(old.tgid, r.budget, 0);
            }
            r.budget = match DETAIL_BUDGET.get_ptr(key.tgid) {
                // SAFETY: this CPU's copy.
                Some(b) => unsafe { *b },
                None => threadtrace_common::DetailBudget::default(),
            };
        }
        r.key = key;
        r.pending = 1;
        r.recheck = 0;
    }
    if budget == 0 {
        return true;
    }
    // Spent budgets are the storm's common case: the clock is read every
    // RECHECK failures only (a new second is noticed a fraction of a
    // millisecond late at storm rates).
    if r.budget.used >= budget && r.recheck > 0 {
        r.recheck -= 1;
        bump(stat::DETAIL_SAMPLED_OUT);
        return false;
    }
    r.recheck = RECHECK;
    // SAFETY: no preconditions. (The coarse clock is refused to tracing
    // programs.)
    let second = unsafe { bpf_ktime_get_ns() } / 1_000_000_000;
    let b = &mut r.budget;
    if b.second != second {
        b.second = second;
        b.used = 0;
    }
    if b.used >= budget {
        bump(stat::DETAIL_SAMPLED_OUT);
        return false;
    }
    b.used += 1;
    true
}

#[inline(always)]
pub fn fill_header(h: &mut Header, kind: EventKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind as u32;
    // SAFETY: helpers without preconditions.
    unsafe {
        h.cpu = bpf_get_smp_processor_id();
        h.ktime_ns = bpf_ktime_get_ns();
        h.cgroup_id = bpf_get_current_cgroup_id();
    }
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Reserves an `Event<T>` with its header filled; counts a drop when the
/// ring buffer is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<Event<T>>> {
    match EVENTS.reserve::<Event<T>>(0) {
        Some(mut entry) => {
            // SAFETY: the header is written in full before submit.
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            fill_header(&mut ev.header, kind);
            Some(entry)
        }
        None => {
            bump(stat::RINGBUF_DROPS);
            None
        }
    }
}

/// The user stack by frame pointers, innermost first.
#[inline(always)]
pub fn user_stack<C: EbpfContext>(ctx: &C, stack: &mut UserStack) {
    // SAFETY: `ips` is a writable buffer of the size passed.
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            stack.ips.as_mut_ptr().cast(),
            (MAX_STACK * 8) as u32,
            BPF_F_USER_STACK as u64,
        )
    };
    stack.len = if n > 0 { (n as u32) / 8 } else { 0 };
    stack._pad = 0;
}

/// Copies registers and the top of the user stack. A stack whose top is
/// nearer than STACK_COPY faults as a whole; its top is then the end of
/// sp's page (a mapping ends on a page boundary, and sp + STACK_COPY is
/// below the next one), so the rest of that page is all there is.
#[inline(always)]
pub fn copy_user_stack(ip: u64, sp: u64, bp: u64, out: &mut StackCopy) {
    out.ip = ip;
    out.sp = sp;
    out.bp = bp;
    out._pad = 0;
    out.len = 0;
    // SAFETY: fault-checked user reads into a buffer of at least that size.
    unsafe {
        let dst = out.bytes.as_mut_ptr();
        if bpf_probe_read_user_buf(
            sp as *const u8,
            core::slice::from_raw_parts_mut(dst, STACK_COPY),
        )
        .is_ok()
        {
            out.len = STACK_COPY as u32;
            return;
        }
        let rest = PAGE - (sp as usize & (PAGE - 1));
        if rest <= STACK_COPY
            && bpf_probe_read_user_buf(sp as *const u8, core::slice::from_raw_parts_mut(dst, rest))
                .is_ok()
        {
            out.len = rest as u32;
        }
    }
}

const PAGE: usize = 4096;

/// The current task's user registers, for programs whose context is not
/// pt_regs (tracepoints). At a syscall's exit the argument registers still
/// hold what the caller passed: only rax (and rcx, r11) change.
#[inline(always)]
pub fn current_user_regs() -> Option<aya_ebpf::bindings::pt_regs> {
    let regs = current_user_regs_ptr();
    if regs.is_null() {
        return None;
    }
    // SAFETY: fault-checked read of the registers.
    unsafe { bpf_probe_read_kernel(regs).ok() }
}

/// Where the current task's user registers are saved.
#[inline(always)]
pub fn current_user_regs_ptr() -> *const aya_ebpf::bindings::pt_regs {
    use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
    // SAFETY: BTF helpers on the current task.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as *const _ }
}

/// One saved user register, at `offset` in `pt_regs`
/// (`core::mem::offset_of!`).
#[inline(always)]
pub fn current_user_reg(offset: usize) -> u64 {
    let regs = current_user_regs_ptr() as *const u8;
    if regs.is_null() {
        return 0;
    }
    // SAFETY: the helper returns a typed kernel pointer (BTF): the
    // verifier checks this load against struct pt_regs and makes it
    // fault-safe, without the cost of a helper call.
    unsafe { core::ptr::read_volatile(regs.add(offset) as *const u64) }
}

/// `__USER_CS`: a task in 64-bit mode (32-bit ones enter with
/// `__USER32_CS`, 0x23).
const USER_CS: u64 = 0x33;

/// The syscall the current task is in, for a 64-bit task (u64::MAX for
/// none, or a 32-bit task). For a hook inside a syscall's code, to do what
/// the syscall tracepoints do: they ignore 32-bit syscalls.
#[inline(always)]
pub fn native_syscall() -> u64 {
    if current_user_reg(core::mem::offset_of!(aya_ebpf::bindings::pt_regs, cs)) != USER_CS {
        return u64::MAX;
    }
    current_user_reg(core::mem::offset_of!(aya_ebpf::bindings::pt_regs, orig_rax))
}

/// The current task's RLIMIT_NPROC soft limit and its user's task count.
#[inline(always)]
pub fn nproc_snapshot(out: &mut threadtrace_common::NprocSnapshot) {
    use threadtrace_common::ABSENT;
    const RLIMIT_NPROC: usize = 6;
    const RLIMIT_AS: usize = 9;
    let cfg = crate::maps::CONFIG.load();
    out.valid = 0;
    out.threads = 0;
    out.as_soft = u64::MAX;
    if [
        cfg.task_signal,
        cfg.signal_rlim,
        cfg.task_real_cred,
        cfg.cred_ucounts,
        cfg.ucounts_rlimit,
    ]
    .contains(&ABSENT)
    {
        return;
    }
    // SAFETY: fault-checked kernel reads at offsets from this kernel's BTF.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task() as *const u8;
        let Ok(signal) = bpf_probe_read_kernel(task.add(cfg.task_signal as usize) as *const u64)
        else {
            return;
        };
        let rlim = (signal as *const u8).add(cfg.signal_rlim as usize + RLIMIT_NPROC * 16);
        let Ok(soft) = bpf_probe_read_kernel(rlim as *const u64) else {
            return;
        };
        if cfg.signal_nr_threads != ABSENT {
            out.threads = bpf_probe_read_kernel(
                (signal as *const u8).add(cfg.signal_nr_threads as usize) as *const u32,
            )
            .unwrap_or(0);
        }
        let rlim_as = (signal as *const u8).add(cfg.signal_rlim as usize + RLIMIT_AS * 16);
        out.as_soft = bpf_probe_read_kernel(rlim_as as *const u64).unwrap_or(u64::MAX);
        let Ok(cred) = bpf_probe_read_kernel(task.add(cfg.task_real_cred as usize) as *const u64)
        else {
            return;
        };
        let Ok(ucounts) =
            bpf_probe_read_kernel((cred as *const u8).add(cfg.cred_ucounts as usize) as *const u64)
        else {
            return;
        };
        // rlimit[UCOUNT_RLIMIT_NPROC], index 0.
        let Ok(count) = bpf_probe_read_kernel(
            (ucounts as *const u8).add(cfg.ucounts_rlimit as usize) as *const i64,
        ) else {
            return;
        };
        out.soft = soft;
        out.count = count;
        out.valid = 1;
    }
}

/// What a failed creation attempt carries beyond its header.
pub struct Failure {
    pub api: Api,
    pub syscall: Api,
    pub errno: i32,
    pub flags: u64,
    pub site: u64,
    pub pd: u64,
    /// clone's child stack pointer, for a libc thread (0 otherwise).
    pub child_stack: u64,
}

/// Counts a failure, then, within the process's detail budget, sends it
/// with the registers, stacks and (for glibc) start_routine candidates.
#[inline(always)]
pub fn create_failed<C: EbpfContext>(ctx: &C, f: &Failure, regs: &aya_ebpf::bindings::pt_regs) {
    if count_and_allow(failure_key(f.api, f.errno, f.site)) {
        send_failure(ctx, f, regs);
    }
}

/// The event of a failure already counted and within its budget.
#[inline(always)]
pub fn send_failure<C: EbpfContext>(ctx: &C, f: &Failure, regs: &aya_ebpf::bindings::pt_regs) {
    let Some(mut entry) = reserve::<CreateFailed>(EventKind::CreateFailed) else {
        return;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let p = &mut ev.payload;
    p.api = f.api as u32;
    p.syscall = f.syscall as u32;
    p.errno = f.errno;
    p._pad = 0;
    p.flags = f.flags;
    p.site = f.site;
    p.pd = f.pd;
    for i in 0..START_ROUTINE_SLOTS {
        p.start_routine[i] = 0;
        let off = match PTHREAD_OFFSETS.get(i as u32) {
            Some(&o) if o != 0 && f.pd != 0 => o,
            _ => continue,
        };
        // SAFETY: fault-checked user read.
        p.start_routine[i] =
            unsafe { bpf_probe_read_user((f.pd + off as u64) as *const u64) }.unwrap_or(0);
    }
    p.child_arg = [0, 0];
    if f.child_stack != 0 {
        // SAFETY: fault-checked user reads.
        let arg = unsafe { bpf_probe_read_user(f.child_stack as *const u64) }.unwrap_or(0);
        p.child_arg[0] = arg;
        if arg != 0 {
            // SAFETY: as above.
            p.child_arg[1] = unsafe { bpf_probe_read_user(arg as *const u64) }.unwrap_or(0);
        }
    }
    pending_uretprobes(&mut p.uretprobes);
    user_stack(ctx, &mut p.stack);
    copy_user_stack(regs.rip, regs.rsp, regs.rbp, &mut p.copy);
    nproc_snapshot(&mut p.nproc);
    entry.submit(0);
}

/// The return addresses uretprobes replaced on this thread's stack, with
/// the stack slot of each, from the kernel's list (offsets from BTF).
#[inline(always)]
fn pending_uretprobes(out: &mut [[u64; 2]; URETPROBES]) {
    use threadtrace_common::ABSENT;
    let cfg = CONFIG.load();
    for slot in out.iter_mut() {
        *slot = [0, 0];
    }
    if [
        cfg.task_utask,
        cfg.utask_return_instances,
        cfg.ri_stack,
        cfg.ri_orig_ret_vaddr,
        cfg.ri_next,
    ]
    .contains(&ABSENT)
    {
        return;
    }
    // SAFETY: fault-checked kernel reads at offsets from this kernel's BTF.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task() as *const u8;
        let Ok(utask) = bpf_probe_read_kernel(task.add(cfg.task_utask as usize) as *const u64)
        else {
            return;
        };
        if utask == 0 {
            return;
        }
        let Ok(mut ri) = bpf_probe_read_kernel(
            (utask as *const u8).add(cfg.utask_return_instances as usize) as *const u64,
        ) else {
            return;
        };
        for slot in out.iter_mut() {
            if ri == 0 {
                return;
            }
            let r = ri as *const u8;
            let stack =
                bpf_probe_read_kernel(r.add(cfg.ri_stack as usize) as *const u64).unwrap_or(0);
            let orig = bpf_probe_read_kernel(r.add(cfg.ri_orig_ret_vaddr as usize) as *const u64)
                .unwrap_or(0);
            *slot = [stack, orig];
            ri = bpf_probe_read_kernel(r.add(cfg.ri_next as usize) as *const u64).unwrap_or(0);
        }
    }
}

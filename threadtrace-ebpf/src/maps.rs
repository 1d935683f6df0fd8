//! Maps shared by the probes. Names are the contract with the collector
//! (threadtrace/src/kernel/).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use threadtrace_common::{
    stat, Config, DetailBudget, FailureKey, RecentFailure, Rlimit, START_ROUTINE_SLOTS,
};

/// Set by the collector at load time from tracefs formats and BTF.
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    oom_comm: u32::MAX,
    oom_total_vm: u32::MAX,
    oom_anon_rss: u32::MAX,
    oom_file_rss: u32::MAX,
    oom_shmem_rss: u32::MAX,
    oom_uid: u32::MAX,
    oom_score_adj: u32::MAX,
    exit_group_dead: u32::MAX,
    task_exit_code: u32::MAX,
    task_signal: u32::MAX,
    signal_rlim: u32::MAX,
    signal_nr_threads: u32::MAX,
    task_real_cred: u32::MAX,
    cred_ucounts: u32::MAX,
    ucounts_rlimit: u32::MAX,
    detail_per_sec: 0,
    task_utask: u32::MAX,
    utask_return_instances: u32::MAX,
    ri_stack: u32::MAX,
    ri_orig_ret_vaddr: u32::MAX,
    ri_next: u32::MAX,
    vma_start: u32::MAX,
    vma_end: u32::MAX,
    vma_pgoff: u32::MAX,
    vma_file: u32::MAX,
    vma_flags: u32::MAX,
    file_inode: u32::MAX,
    file_path: u32::MAX,
    path_dentry: u32::MAX,
    dentry_name: u32::MAX,
    dentry_parent: u32::MAX,
    qstr_name: u32::MAX,
    inode_ino: u32::MAX,
    inode_generation: u32::MAX,
    inode_sb: u32::MAX,
    sb_dev: u32::MAX,
    task_mm: u32::MAX,
    mm_start_code: u32::MAX,
    mm_saved_auxv: u32::MAX,
    task_fs: u32::MAX,
    fs_root: u32::MAX,
    task_pid: u32::MAX,
    task_tgid: u32::MAX,
    path_mnt: u32::MAX,
    mount_mnt: u32::MAX,
    mount_parent: u32::MAX,
    mount_mountpoint: u32::MAX,
    vfsmount_root: u32::MAX,
});

/// Events for the collector. Sized for bursts of a few tens of thousands of
/// failures; beyond that events are dropped and counted, counts are exact.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Exact failure counts per (tgid, api, errno), on every failure.
#[map]
pub static FAILURES: PerCpuHashMap<FailureKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Detail budgets per process (see `emit::count_and_allow`). Per CPU, so
/// that a storm on every core never contends on one entry.
#[map]
pub static DETAIL_BUDGET: LruPerCpuHashMap<u32, DetailBudget> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// See `RecentFailure`: one slot per CPU.
#[map]
pub static RECENT_FAILURE: PerCpuArray<RecentFailure> = PerCpuArray::with_max_entries(1, 0);

/// Health counters, indexed by `threadtrace_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Offsets of start_routine in glibc's `struct pthread`, one per libc
/// build the collector found (`_thread_db_pthread_start_routine`); 0 ends
/// the list. Filled at run time as new libcs show up.
#[map]
pub static PTHREAD_OFFSETS: Array<u32> = Array::with_max_entries(START_ROUTINE_SLOTS as u32, 0);

/// A setrlimit/prlimit64 under way (key: tid): what the entry saw.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InflightRlimit {
    pub api: u32,
    pub resource: u32,
    pub target_pid: i32,
    pub has_new: u32,
    pub new: Rlimit,
    /// The limit in force at entry, when the caller targets itself.
    pub has_old: u32,
    pub _pad: u32,
    pub old: Rlimit,
    /// Where the kernel writes the old value back (prlimit64), or 0.
    pub old_ptr: u64,
}

#[map]
pub static RLIMIT_INFLIGHT: HashMap<u32, InflightRlimit> = HashMap::with_max_entries(1024, 0);

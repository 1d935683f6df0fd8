//! Event types shared by the kernel programs and the collector.
//!
//! Every record on the ring buffer is an [`Event<T>`]: a common [`Header`]
//! followed by one payload. The header's `kind` says which payload follows,
//! so the collector can decode without knowing which program sent it.
//! Everything here is `#[repr(C)]`, fixed-size and free of pointers.
#![no_std]

/// Depth of user stacks captured with a failure: deep enough to reach from
/// libc's clone wrapper through a pool library into the application.
pub const MAX_STACK: usize = 32;
/// Bytes of user stack copied from the stack pointer, for unwinding with
/// .eh_frame in userspace through code built without frame pointers.
pub const STACK_COPY: usize = 4096;
/// Length of the exec'ed file name kept from `sched_process_exec`.
pub const FILENAME_LEN: usize = 256;
pub const COMM_LEN: usize = 16;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A task could not be created: a clone-family syscall failed, or the
    /// stack of a thread being created could not be mapped.
    CreateFailed = 1,
    RlimitChange = 3,
    OomVictim = 4,
    ProcessFork = 5,
    ProcessExec = 6,
    ProcessExit = 7,
    CgroupAttach = 8,
    /// A file was mapped executable (mmap, mprotect, or by exec).
    Mapping = 9,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::CreateFailed,
            3 => Self::RlimitChange,
            4 => Self::OomVictim,
            5 => Self::ProcessFork,
            6 => Self::ProcessExec,
            7 => Self::ProcessExit,
            8 => Self::CgroupAttach,
            9 => Self::Mapping,
            _ => return None,
        })
    }
}

/// A call that can fail to create a task. Both what a failure is counted
/// as (`pthread_create` for a libc creating a thread) and the syscall that
/// failed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    PthreadCreate = 1,
    Clone = 2,
    Clone3 = 3,
    Fork = 4,
    Vfork = 5,
    /// A failed anonymous mmap that may be a thread's stack: the collector
    /// decides from where it was called (inside pthread_create or not).
    Mmap = 6,
    /// A failed mprotect, likewise (a thread stack's guard page).
    Mprotect = 7,
}

impl Api {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::PthreadCreate,
            2 => Self::Clone,
            3 => Self::Clone3,
            4 => Self::Fork,
            5 => Self::Vfork,
            6 => Self::Mmap,
            7 => Self::Mprotect,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PthreadCreate => "pthread_create",
            Self::Clone => "clone",
            Self::Clone3 => "clone3",
            Self::Fork => "fork",
            Self::Vfork => "vfork",
            Self::Mmap => "mmap",
            Self::Mprotect => "mprotect",
        }
    }

    /// Syscalls whose failures are thread-creation failures only when they
    /// come from inside pthread_create.
    pub fn is_stack_setup(self) -> bool {
        matches!(self, Self::Mmap | Self::Mprotect)
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RlimitApi {
    Setrlimit = 1,
    Prlimit64 = 2,
}

/// Fields every event carries. `tgid`/`tid` are the task that ran the probe:
/// for an OOM kill that is the allocating (triggering) task, not the victim.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns); the collector maps it to wall time.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id of the task; 0 where only v1 is in use.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event<T> {
    pub header: Header,
    pub payload: T,
}

/// User stack instruction pointers, innermost first, as the kernel's frame
/// pointer walk found them. `len` entries are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    pub len: u32,
    pub _pad: u32,
    pub ips: [u64; MAX_STACK],
}

/// User registers and the top of the user stack when the event fired.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackCopy {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Valid bytes in `bytes`, from `sp` up.
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; STACK_COPY],
}

/// RLIMIT_NPROC as the kernel saw it when thread creation failed: the
/// failing task's soft limit and its user's task count. Userspace looks
/// later, when the failing process may have exited and the count dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NprocSnapshot {
    pub soft: u64,
    pub count: i64,
    /// 0 when BTF did not give the offsets to read them.
    pub valid: u32,
    /// The failing process's threads at the failure (it has often exited
    /// by the time anyone could count them); 0 when unknown.
    pub threads: u32,
    /// The soft RLIMIT_AS, what a thread's stack must fit in (read with
    /// the rest: the process has often exited when its failure is read).
    pub as_soft: u64,
}

/// Pending uretprobe returns captured with a failure.
pub const URETPROBES: usize = 4;

/// Slots for pthread_create's start_routine, read at failure time through
/// the offsets the collector found in each libc (`_thread_db_pthread_start_routine`).
pub const START_ROUTINE_SLOTS: usize = 4;

/// A task could not be created. Sent from the syscall's exit: no probe
/// runs on calls that succeed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CreateFailed {
    /// [`Api`] the failure is counted as: `PthreadCreate` for a clone that
    /// creates a thread the way a libc's pthread_create does (own TLS, and
    /// the tid cleared at exit for pthread_join), else the syscall: a
    /// runtime's own thread clone (Go's) is `Clone`.
    pub api: u32,
    /// [`Api`] of the syscall that failed.
    pub syscall: u32,
    /// Positive errno.
    pub errno: i32,
    pub _pad: u32,
    /// clone/clone3's flags; for mmap, its flags; 0 otherwise.
    pub flags: u64,
    /// mmap/mprotect: the return address of libc's wrapper (a leaf: it is
    /// at the user stack pointer), the call site that exact counts are
    /// kept per. 0 for the clone family.
    pub site: u64,
    /// glibc's pthread_create: the new thread's `struct pthread` (clone3's
    /// tls, which glibc also passes as the thread function's argument).
    pub pd: u64,
    /// The words at `pd` + each offset of `PTHREAD_OFFSETS`: one of them is
    /// start_routine, depending on which libc the process uses.
    pub start_routine: [u64; START_ROUTINE_SLOTS],
    /// A libc thread's clone(2): the word at the top of the child's stack
    /// (the argument the libc's clone stub leaves there for the child) and
    /// the word it points to. musl keeps the thread's start arguments
    /// there (`start_routine` first), not in its `struct pthread`.
    pub child_arg: [u64; 2],
    /// (stack slot, original return address) of the uretprobes pending on
    /// this thread, innermost first: their slots now hold the kernel's
    /// trampoline.
    pub uretprobes: [[u64; 2]; URETPROBES],
    /// Frame-pointer walk; the collector prefers .eh_frame on `copy`.
    pub stack: UserStack,
    pub copy: StackCopy,
    pub nproc: NprocSnapshot,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

/// RLIM_INFINITY as the kernel reports it.
pub const RLIM_INFINITY: u64 = u64::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RlimitChange {
    pub api: u32,
    pub resource: u32,
    /// 0 means the caller itself.
    pub target_pid: i32,
    /// 0 or a negative errno.
    pub result: i32,
    pub has_new: u32,
    pub has_old: u32,
    pub new: Rlimit,
    pub old: Rlimit,
}

/// oom:mark_victim. Fields other than `victim_pid` are present only when
/// the kernel's tracepoint carries them (`has_detail`). Sizes are in kB, as
/// the tracepoint records them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomVictim {
    pub victim_pid: u32,
    pub has_detail: u32,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub comm: [u8; COMM_LEN],
}

/// A new process (not a thread). The header is the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessFork {
    pub child_pid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
}

/// The header's tgid exec'ed `filename`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExec {
    pub old_pid: u32,
    pub _pad: u32,
    pub filename: [u8; FILENAME_LEN],
}

/// Path components a `Mapping` carries, from the file up towards the
/// process's root (across mounts), each cut at `MAPPING_NAME_LEN - 1` bytes.
pub const MAPPING_NAMES: usize = 10;
pub const MAPPING_NAME_LEN: usize = 64;

/// An executable file mapping of the header's tgid, as the kernel's VMA
/// describes it: what attribution needs to read the file after the process
/// is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// vm_pgoff: in pages.
    pub pgoff: u64,
    pub ino: u64,
    /// The superblock's dev_t, in the kernel's encoding (major << 20).
    pub dev: u32,
    pub generation: u32,
    /// How many of `names` are set; `reached_root` is 0 when the walk
    /// stopped before the process's root (the path is then partial): too
    /// deep, a mount outside the process's root or detached (lazily
    /// unmounted), a dentry cut off from its parents.
    pub depth: u32,
    pub reached_root: u32,
    pub names: [[u8; MAPPING_NAME_LEN]; MAPPING_NAMES],
}

/// The last thread of the header's tgid exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExit {
    /// task_struct.exit_code: `status << 8` for exit(), the signal number
    /// (| 0x80 for a core dump) for a fatal signal. -1 if unknown.
    pub exit_code: i32,
    pub _pad: u32,
}

/// A task was moved into a cgroup (cgroup:cgroup_attach_task): the process
/// table learns it in order, before any failure the move leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupAttach {
    /// The moved task.
    pub pid: u32,
    /// Hierarchy id, as in /proc/PID/cgroup's first column.
    pub root: i32,
    pub path: [u8; FILENAME_LEN],
}

/// Key of the exact failure counters: counted in the kernel on every
/// failure, whether or not the ring buffer had room for the event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FailureKey {
    pub tgid: u32,
    /// [`Api`] the failure is counted as.
    pub api: u32,
    pub errno: i32,
    pub _pad: u32,
    /// For mmap/mprotect, the call site (see [`CreateFailed::site`]): the
    /// collector learns which sites are inside pthread_create. 0 otherwise.
    pub site: u64,
}

/// Indexes into the per-CPU `STATS` array.
pub mod stat {
    /// Ring buffer had no room: the event was dropped (its count was not).
    pub const RINGBUF_DROPS: u32 = 0;
    /// FAILURES map was full: the failure went to `FAILURES_OVERFLOW` only.
    pub const FAILURES_OVERFLOW: u32 = 1;
    /// A failure over its process's detail budget: counted, no event.
    pub const DETAIL_SAMPLED_OUT: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Offsets resolved at load time (tracefs format files, BTF) so the kernel
/// programs follow the running kernel's layout instead of a compiled guess.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Offsets into oom:mark_victim's record; u32::MAX when absent.
    pub oom_comm: u32,
    pub oom_total_vm: u32,
    pub oom_anon_rss: u32,
    pub oom_file_rss: u32,
    pub oom_shmem_rss: u32,
    pub oom_uid: u32,
    pub oom_score_adj: u32,
    /// Offset of sched_process_exit's `group_dead`; u32::MAX when absent
    /// (then the exit of the thread whose tid == tgid ends the process).
    pub exit_group_dead: u32,
    /// Offset of task_struct.exit_code from BTF; u32::MAX when unknown.
    pub task_exit_code: u32,
    /// task_struct.signal and signal_struct.rlim from BTF: the limits in
    /// force before a setrlimit, which the syscall does not return.
    pub task_signal: u32,
    pub signal_rlim: u32,
    /// signal_struct.nr_threads: the failing process's thread count.
    pub signal_nr_threads: u32,
    /// task_struct.real_cred, cred.ucounts, ucounts.rlimit: the user's
    /// task count that RLIMIT_NPROC is checked against.
    pub task_real_cred: u32,
    pub cred_ucounts: u32,
    pub ucounts_rlimit: u32,
    /// Failure events with stacks per process, per CPU, per second; the
    /// failures past it are counted only. 0: no limit.
    pub detail_per_sec: u32,
    /// task_struct.utask, uprobe_task.return_instances and
    /// return_instance.{stack, orig_ret_vaddr, next}: where the kernel keeps
    /// the return addresses another tool's uretprobes replaced on the user
    /// stack (bpftrace on pthread_create, say), to put them back.
    pub task_utask: u32,
    pub utask_return_instances: u32,
    pub ri_stack: u32,
    pub ri_orig_ret_vaddr: u32,
    pub ri_next: u32,
    /// What the mapping probe walks: vm_area_struct.{vm_start, vm_end,
    /// vm_pgoff, vm_file, vm_flags}, file.{f_inode, f_path}, path.dentry,
    /// dentry.{d_name, d_parent}, qstr.name, inode.{i_ino, i_generation,
    /// i_sb}, super_block.s_dev, task_struct.mm and
    /// mm_struct.{start_code, saved_auxv}.
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_pgoff: u32,
    pub vma_file: u32,
    pub vma_flags: u32,
    pub file_inode: u32,
    pub file_path: u32,
    pub path_dentry: u32,
    pub dentry_name: u32,
    pub dentry_parent: u32,
    pub qstr_name: u32,
    pub inode_ino: u32,
    pub inode_generation: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub task_mm: u32,
    pub mm_start_code: u32,
    pub mm_saved_auxv: u32,
    /// task_struct.fs and fs_struct.root: the walk of a file's name stops
    /// at the process's own root, so names are as the process sees them.
    pub task_fs: u32,
    pub fs_root: u32,
    /// task_struct.pid: the new process's pid at task_newtask.
    pub task_pid: u32,
    /// task_struct.tgid: whose limit a prlimit64 at do_prlimit changes.
    pub task_tgid: u32,
    /// path.mnt, mount.{mnt, mnt_parent, mnt_mountpoint} and
    /// vfsmount.mnt_root: the name's walk crosses from the root of a
    /// file's mount (a tmpfs /tmp, a bind mount) to where it is mounted,
    /// as the kernel's d_path does. Without them the name stops at the
    /// root of the file's own mount.
    pub path_mnt: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
}

/// Per process and CPU: the failure events of the current second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DetailBudget {
    pub second: u64,
    pub used: u32,
    pub _pad: u32,
}

/// Per CPU: the last failure key seen and its failures not yet added to
/// the counter table, with its process's detail budget. A storm repeats
/// one key on each CPU: each repeat costs no map lookup. The collector
/// adds `pending` to `key`'s count (it is moved to the table, never kept
/// in both, when the CPU sees another key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentFailure {
    pub key: FailureKey,
    pub pending: u64,
    pub budget: DetailBudget,
    /// Failures to go, once the budget is spent, before the clock is read
    /// again to see whether a new second began.
    pub recheck: u32,
    pub _pad: u32,
}

pub const ABSENT: u32 = u32::MAX;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, repr(C), no padding holes left implicit.
    unsafe impl aya::Pod for FailureKey {}
    unsafe impl aya::Pod for RecentFailure {}
    unsafe impl aya::Pod for Config {}
}

//! `thread_create_failed`: pthread_create, clone, clone3, fork or vfork
//! returned an error; who asked, and why it failed.
use serde::{Deserialize, Serialize};
use threadtrace_common::Api;

use super::{names, K8s, Task};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadCreateFailed {
    #[serde(flatten)]
    pub task: Task,
    /// "pthread_create", "clone", "clone3", "fork" or "vfork".
    pub api: String,
    /// What was to be created: "thread" (CLONE_THREAD) or "process" (a
    /// fork). Absent in recordings made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    pub errno: i32,
    pub error: String,
    /// Who wanted the thread: "libopenblas", "libgomp", ..., or the
    /// executable's name when the program asked itself.
    pub library: Option<String>,
    /// That library's file, as the process sees it.
    pub module: Option<String>,
    /// The function in it that asked (e.g. blas_thread_init): the first
    /// frame past the libc and the runtime's own thread-spawning code.
    pub symbol: Option<String>,
    /// The language runtime that made the thread for the program: "go",
    /// "jvm", "node" or "rust". Absent for code calling its libc itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The C library whose pthread_create or fork was called: "glibc" or
    /// "musl". Absent when none was (Go's own clone) or it is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libc: Option<String>,
    /// Why the runtime wanted a thread, where its stack says so (Go's
    /// scheduler: a locked goroutine, a blocking system call, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The syscall that failed: for pthread_create, the clone inside it, or
    /// `mmap`/`mprotect` when the new thread's stack could not be set up.
    pub syscall: Option<String>,
    pub syscall_errno: Option<i32>,
    /// The cgroup that limits task creation: pids controller on cgroup v1,
    /// the unified hierarchy otherwise.
    pub cgroup: Option<String>,
    pub ppid: Option<u32>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    /// pthread_create's return address: the code that asked for the thread.
    pub caller: Option<u64>,
    /// The thread's function, what it would have run.
    pub start_routine: Option<Location>,
    /// Its address.
    pub start_routine_addr: Option<u64>,
    /// The user stack, innermost first, from inside libc's syscall wrapper.
    pub stack: Vec<Frame>,
    /// What attribution could not name (the library, or its function)
    /// and why: which frame's file could not be read, and what was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution_gap: Option<String>,
    /// Which limit was hit, where it came from, who holds the threads, and
    /// the remedy.
    pub cause: Option<Box<Cause>>,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<K8s>,
}

const ENOMEM: i32 = 12;
const EAGAIN: i32 = 11;

impl ThreadCreateFailed {
    /// Whether a process, not a thread, was to be created: a fork, vfork
    /// or clone without CLONE_THREAD.
    pub fn creates_process(&self) -> bool {
        match self.creates.as_deref() {
            Some(c) => c == "process",
            None => matches!(self.api.as_str(), "fork" | "vfork"),
        }
    }

    /// Whether the syscall that failed was setting up a thread's stack
    /// (mmap, mprotect), not creating the task.
    pub fn is_stack_setup(&self) -> bool {
        self.syscall
            .as_deref()
            .is_some_and(|s| s == Api::Mmap.name() || s == Api::Mprotect.name())
    }

    /// A stack-setup failure found to be inside pthread_create: reported as
    /// pthread_create does, which says EAGAIN when memory ran out.
    pub fn as_pthread_create(&mut self) {
        self.api = Api::PthreadCreate.name().into();
        if self.errno == ENOMEM {
            self.errno = EAGAIN;
            self.error = names::errno_name(EAGAIN);
        }
    }
}

/// One stack frame, innermost first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// The address in the process.
    pub addr: u64,
    /// The file, as the process sees it (inside its container).
    pub module: Option<String>,
    pub symbol: Option<String>,
    /// Offset of `addr` from the start of `symbol`.
    pub offset: Option<u64>,
    /// Offset in `module`'s file: with `build_id`, enough to symbolize
    /// again offline.
    pub file_offset: Option<u64>,
    pub build_id: Option<String>,
    /// How the file read for this frame was known to be the one mapped:
    /// `build_id` (it has one, recorded here) or `inode` (none: its device,
    /// inode and change time were checked against the mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identified_by: Option<String>,
}

/// A function in a module (pthread_create's start_routine).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Location {
    pub module: Option<String>,
    pub symbol: Option<String>,
}

/// The `cause` of a failed thread creation, decided from evidence only:
/// when nothing settles it, the kind is `unknown` and the detail says what
/// was seen.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Cause {
    /// rlimit_nproc, cgroup_pids, threads_max, pid_max, stack_alloc, memory
    /// or unknown.
    pub kind: String,
    pub limit: Option<u64>,
    pub current: Option<u64>,
    pub detail: String,
    /// The pids cgroup, for cgroup_pids.
    pub cgroup: Option<String>,
    pub inherited_from: Option<Ancestor>,
    pub set_by: Option<LimitSet>,
    pub holders: Vec<Holder>,
    pub remedy: String,
}

/// The oldest living ancestor that has the same limit: where a limit that
/// survived a limits.conf change is inherited from (incident 1's
/// supervisord).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    /// RFC 3339: a process started before a limits change keeps the old one.
    pub started: Option<String>,
}

/// An rlimit change seen during the recording that set this limit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LimitSet {
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub target_pid: u32,
    pub soft: u64,
}

/// A process holding threads under the limit that was hit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub threads: u64,
    /// Libraries that created its live threads, largest first.
    pub libraries: Vec<String>,
    /// Its threads but the main one in groups, largest first: by the name
    /// the runtime gave them (`pool-3-thread-*`, `GC Thread#*`), else by
    /// the library that created them, else by the runtime that made them
    /// (Go's Ms). Empty when the process was gone before it was looked at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ThreadGroup>,
}

/// Threads of one process that belong together.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadGroup {
    /// A thread-name pattern (`*` for the digits that differ), a library,
    /// or a runtime's kind of thread.
    pub name: String,
    pub threads: u64,
}

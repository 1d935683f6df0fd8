//! Words and numbers for people: how sizes, counts, times, holders and
//! growth read on every human surface (the lines of `record`, findings,
//! `report` and the dashboard), in one place so that each is said one way.
//! Reads the model; knows nothing of where the text goes. Escaping is not
//! done here: the surfaces escape what they print (`sanitize`).
mod attach;
pub mod growth;
pub mod headroom;
mod holders;
mod numbers;
mod time;

pub use attach::{attach_method, hook_attach};
pub use holders::{memory_held, runtime_name, threads_held};
pub use numbers::{
    bytes, bytes_fine, bytes_short, count, limit_or_infinity, limit_or_unlimited, thousands,
};
pub use time::{clock_ms, clock_s, uptime};

use crate::model::K8s;

/// What an SRE should read into the errno of a thread-creation failure.
pub fn errno_meaning(errno: i32) -> &'static str {
    match errno {
        11 => "a limit on tasks was hit (RLIMIT_NPROC, cgroup pids.max, threads-max) or the thread stack could not be mapped",
        12 => "the kernel could not allocate memory for the new task",
        1 => "not permitted (seccomp or a security module)",
        22 => "invalid flags or attributes",
        38 => "the syscall is not available (old kernel or seccomp)",
        _ => "",
    }
}

/// "pod shop/cart-7d4b9c8f6d-x2x9k, container app": the pod by name
/// where known (its UID otherwise), for findings and the dashboard.
/// Names are DNS labels and UIDs hex, checked when read: nothing here
/// needs escaping.
pub fn pod(k: &K8s) -> String {
    let pod = match (&k.namespace, &k.pod, &k.pod_uid) {
        (Some(ns), Some(p), _) => format!("pod {ns}/{p}"),
        (None, Some(p), _) => format!("pod {p}"),
        (_, None, Some(uid)) => format!("pod uid {uid}"),
        (_, None, None) => "a pod".to_string(),
    };
    match (&k.container, &k.container_id) {
        (Some(c), _) => format!("{pod}, container {c}"),
        (None, Some(id)) => format!("{pod}, container {}", &id[..id.len().min(12)]),
        (None, None) => pod,
    }
}

/// "thread creation" or "process creation": what one failure was to make.
pub fn creation(creates_process: bool) -> &'static str {
    if creates_process {
        "process creation"
    } else {
        "thread creation"
    }
}

/// What failures by these apis were creating, for a count of them:
/// pthread_create makes threads, fork and vfork processes; clone and
/// clone3 either.
pub fn creation_failures<'a>(apis: impl IntoIterator<Item = &'a str>) -> &'static str {
    let (mut threads, mut processes, mut either) = (false, false, false);
    for api in apis {
        match api {
            "pthread_create" => threads = true,
            "fork" | "vfork" => processes = true,
            _ => either = true,
        }
    }
    match (threads, processes, either) {
        (true, false, false) | (false, false, false) => "thread-creation failures",
        (false, true, false) => "process-creation failures",
        _ => "thread- or process-creation failures",
    }
}

/// What a storm's failures were creating ("thread", "process").
pub fn storm_failures(creates: &[String]) -> &'static str {
    let has = |w: &str| creates.iter().any(|c| c == w);
    match (has("thread"), has("process")) {
        (false, true) => "process-creation failures",
        (true, true) => "thread- and process-creation failures",
        _ => "thread-creation failures",
    }
}

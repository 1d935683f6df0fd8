//! Kubernetes attribution without the API server: which pod and container
//! a process runs in, from what every node already has.
//!
//! 1. The process's cgroup path gives the pod UID, the container ID and
//!    often the runtime (`cgroup.rs`).
//! 2. kubelet's log directories give the namespace, pod and container
//!    names (`logs.rs`); they appear as containers start, so a miss is
//!    retried, at most once a second.
//! 3. When those directories are not there, the pod's hostname (its name,
//!    unless the pod sets `hostname:`) is the last hint for the pod name.
//!
//! Each answer is cached, bounded, so that a storm of events costs a hash
//! lookup each. The CRI socket (images, labels) is not asked: an RPC per
//! new container from a tracer that runs while the node is in trouble
//! costs more than it tells.
pub mod cgroup;
pub mod logs;
pub mod workload;

use std::{
    collections::HashMap,
    io::Read,
    sync::Arc,
    time::{Duration, Instant},
};

use logs::LogIndex;

use crate::model::K8s;

/// Cgroup paths whose parse is remembered; pods and containers whose
/// names are. Past the bound a cache starts over: a miss costs a parse or
/// an index lookup, never a wrong answer.
const PATHS: usize = 8192;
const PODS: usize = 4096;
/// How much of /proc/PID/environ is read for HOSTNAME.
const ENVIRON_MAX: usize = 32 * 1024;

#[derive(Default)]
struct PodInfo {
    names: Option<logs::PodNames>,
    /// The hostname hint, when the log directory did not name the pod.
    hostname: Option<Arc<str>>,
    /// While the names are unknown: when to look again, and how often we
    /// did (a pod whose log directories are not mounted costs a lookup
    /// per minute at most).
    retry_at: Option<Instant>,
    tries: u32,
    /// Programs whose environment was read for HOSTNAME, in vain, as
    /// (pid, hash of its command name): an environment is set at exec,
    /// so a process is asked again after each exec (runc's init and a
    /// runtime's helpers are in the pod's cgroup before the container's
    /// program, which has HOSTNAME, replaces them); HOSTNAME_TRIES at most.
    hostname_tried: Vec<(u32, u64)>,
}

/// Processes of a pod asked for its hostname at most: the first process
/// to be seen in a pod is often not the container's (a shell moving
/// itself in, a runtime's helper), the next ones are.
const HOSTNAME_TRIES: usize = 32;
/// Longest wait between two lookups of a pod's names.
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Pods {
    paths: HashMap<Box<str>, Option<Arc<cgroup::PodRef>>>,
    pods: HashMap<Box<str>, PodInfo>,
    logs: LogIndex,
}

impl Default for Pods {
    fn default() -> Self {
        Pods::new(LogIndex::from_env())
    }
}

impl Pods {
    pub fn new(logs: LogIndex) -> Self {
        Pods {
            paths: HashMap::new(),
            pods: HashMap::new(),
            logs,
        }
    }

    /// The pod of a cgroup path, parsed once.
    pub fn pod_of_path(&mut self, path: &str) -> Option<Arc<cgroup::PodRef>> {
        let key = cgroup::key(path);
        if let Some(p) = self.paths.get(key.as_ref()) {
            return p.clone();
        }
        if self.paths.len() >= PATHS {
            self.paths.clear();
        }
        let p = cgroup::parse(&key).map(Arc::new);
        self.paths.insert(key.into(), p.clone());
        p
    }

    /// The pod of `/proc/PID/cgroup`'s lines, first found.
    pub fn pod_of(&mut self, cgroups: &[(String, String)]) -> Option<Arc<cgroup::PodRef>> {
        cgroup::lines_in_order(cgroups).find_map(|p| self.pod_of_path(p))
    }

    /// Everything known about the pod of process `pid` in `cgroups`.
    /// `comm` tells one program of a process from the next it execs.
    pub fn resolve(&mut self, pid: u32, comm: &str, cgroups: &[(String, String)]) -> Option<K8s> {
        let r = self.pod_of(cgroups)?;
        let now = Instant::now();
        let mut k = K8s {
            pod_uid: Some(r.pod_uid.clone()),
            container_id: r.container_id.clone(),
            runtime: r.runtime.map(str::to_string),
            ..Default::default()
        };
        if let Some(id) = &r.container_id {
            if let Some(c) = self.logs.container(id, now) {
                k.namespace = Some(c.namespace.to_string());
                k.pod = Some(c.pod.to_string());
                k.container = Some(c.container.to_string());
            }
        }
        let program = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            comm.hash(&mut h);
            (pid, h.finish())
        };
        let (names, hostname) = self.pod_info(&r.pod_uid, program, now);
        if let Some(n) = &names {
            k.namespace = Some(n.namespace.to_string());
            k.pod = Some(n.pod.to_string());
        }
        if k.pod.is_none() {
            if let Some(h) = &hostname {
                k.pod = Some(h.to_string());
                k.derived.push("pod".into());
            }
        }
        if let Some(w) = k.pod.as_deref().map(workload::of_pod) {
            k.workload = Some(w.to_string());
            k.derived.push("workload".into());
        }
        Some(k)
    }

    /// A pod's names: from its log directory, looked up again after a
    /// miss with a backoff (1 s, 2 s, ... 60 s), else the hostname hint.
    fn pod_info(
        &mut self,
        uid: &str,
        program: (u32, u64),
        now: Instant,
    ) -> (Option<logs::PodNames>, Option<Arc<str>>) {
        if !self.pods.contains_key(uid) && self.pods.len() >= PODS {
            self.pods.clear();
        }
        let info = self.pods.entry(uid.into()).or_default();
        if info.names.is_none() && info.retry_at.is_none_or(|at| now >= at) {
            info.names = self.logs.pod(uid, now);
            let wait = Duration::from_secs(1u64 << info.tries.min(6)).min(RETRY_MAX);
            info.retry_at = Some(now + wait);
            info.tries += 1;
        }
        if info.names.is_none()
            && info.hostname.is_none()
            && info.hostname_tried.len() < HOSTNAME_TRIES
            && !info.hostname_tried.contains(&program)
        {
            info.hostname = environ_hostname(program.0).map(Arc::from);
            info.hostname_tried.push(program);
        }
        (info.names.clone(), info.hostname.clone())
    }

    /// Scans of the log directories so far.
    #[cfg(test)]
    pub fn log_scans(&self) -> u64 {
        self.logs.scans
    }
}

/// The process's `HOSTNAME`, as the container runtime set it: containerd's
/// and CRI-O's CRI implementations and Docker put the container's
/// hostname, which kubelet sets to the pod name, in every container's
/// environment. Reading the UTS hostname itself would take a setns(2) into
/// the pod's UTS namespace, which needs CAP_SYS_ADMIN and a thread to do
/// it on; the environment needs only the ptrace read access the tracer
/// already has. It is what the process was started with, so it is a hint,
/// marked as derived. Read bounded: an environment can be megabytes.
pub fn environ_hostname(pid: u32) -> Option<String> {
    let f = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut buf = Vec::with_capacity(4096);
    f.take(ENVIRON_MAX as u64).read_to_end(&mut buf).ok()?;
    hostname_in(&buf)
}

/// HOSTNAME in an environment block (NUL-separated), when it is a name
/// a runtime could have set.
fn hostname_in(environ: &[u8]) -> Option<String> {
    let value = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"HOSTNAME="))?;
    let s = std::str::from_utf8(value).ok()?;
    // A pod name: what a runtime would have set; anything else is noise.
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const UID: &str = "6ef3ab5c-9a47-4d3b-9e2c-3bdb3e0c1a12";
    const UID_: &str = "6ef3ab5c_9a47_4d3b_9e2c_3bdb3e0c1a12";
    const ID: &str = "4e3b2c1d0f9e8d7c6b5a493827161504f3e2d1c0b9a89786756453423120f1e0";

    fn node(root: &Path) {
        std::fs::create_dir_all(
            root.join("pods")
                .join(format!("shop_cart-7d4b9c8f6d-x2x9k_{UID}"))
                .join("app"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        std::os::unix::fs::symlink(
            format!("../pods/shop_cart-7d4b9c8f6d-x2x9k_{UID}/app/0.log"),
            root.join("containers")
                .join(format!("cart-7d4b9c8f6d-x2x9k_shop_app-{ID}.log")),
        )
        .unwrap();
    }

    fn lines(path: &str) -> Vec<(String, String)> {
        vec![("pids".into(), "/".into()), ("".into(), path.into())]
    }

    #[test]
    fn a_container_is_named_from_the_log_directories() {
        let dir = tempfile::tempdir().unwrap();
        node(dir.path());
        let mut pods = Pods::new(LogIndex::new(dir.path()));
        let k = pods
            .resolve(
                u32::MAX,
                "java",
                &lines(&format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                )),
            )
            .unwrap();
        assert_eq!(
            k,
            K8s {
                namespace: Some("shop".into()),
                pod: Some("cart-7d4b9c8f6d-x2x9k".into()),
                pod_uid: Some(UID.into()),
                container: Some("app".into()),
                container_id: Some(ID.into()),
                runtime: Some("containerd".into()),
                workload: Some("cart".into()),
                derived: vec!["workload".into()],
            }
        );
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["derived"], serde_json::json!(["workload"]));
        // Cached: a storm of events does not rescan.
        let scans = pods.log_scans();
        for _ in 0..1000 {
            pods.resolve(
                u32::MAX,
                "java",
                &lines(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            );
        }
        assert_eq!(pods.log_scans(), scans);
    }

    #[test]
    fn described_by_name_or_by_id() {
        let mut k = K8s {
            namespace: Some("shop".into()),
            pod: Some("cart-1".into()),
            container: Some("app".into()),
            container_id: Some(ID.into()),
            ..Default::default()
        };
        assert_eq!(crate::words::pod(&k), "pod shop/cart-1, container app");
        k.container = None;
        k.namespace = None;
        assert_eq!(crate::words::pod(&k), "pod cart-1, container 4e3b2c1d0f9e");
        k.pod = None;
        k.pod_uid = Some(UID.into());
        k.container_id = None;
        assert_eq!(crate::words::pod(&k), format!("pod uid {UID}"));
    }

    #[test]
    fn outside_kubernetes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut pods = Pods::new(LogIndex::new(dir.path()));
        assert_eq!(
            pods.resolve(1, "bash", &lines("/user.slice/session-1.scope")),
            None
        );
        assert_eq!(pods.log_scans(), 0, "no directory read for a host process");
    }

    #[test]
    fn unknown_names_are_null_and_the_uid_is_still_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut pods = Pods::new(LogIndex::new(&dir.path().join("missing")));
        // u32::MAX: no such process, so no hostname hint either.
        let k = pods
            .resolve(u32::MAX, "x", &lines(&format!("/kubepods/pod{UID}/{ID}")))
            .unwrap();
        assert_eq!(k.pod_uid.as_deref(), Some(UID));
        assert_eq!(
            (k.namespace, k.pod, k.container, k.workload),
            (None, None, None, None)
        );
        let json = serde_json::to_string(&K8s::default()).unwrap();
        assert_eq!(
            json,
            r#"{"namespace":null,"pod":null,"pod_uid":null,"container":null,"container_id":null,"runtime":null,"workload":null}"#
        );
    }

    /// A `sleep` with HOSTNAME set, once its exec is complete: spawn
    /// returns when the child has left the parent's memory (vfork), and
    /// its new environment is in place only at the end of the exec.
    fn sleeper(hostname: &str) -> Guard {
        let child = scopeguard(
            std::process::Command::new("sleep")
                .arg("30")
                .env("HOSTNAME", hostname)
                .spawn()
                .unwrap(),
        );
        let environ = format!("/proc/{}/environ", child.0.id());
        for _ in 0..500 {
            if !std::fs::read(&environ).unwrap_or_default().is_empty() {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("sleep never completed its exec");
    }

    #[test]
    fn the_hostname_in_the_environment_is_a_hint() {
        let child = sleeper("batch-28312345-8w2lp");
        let pid = child.0.id();
        assert_eq!(
            environ_hostname(pid).as_deref(),
            Some("batch-28312345-8w2lp")
        );
        let dir = tempfile::tempdir().unwrap();
        let mut pods = Pods::new(LogIndex::new(dir.path()));
        let path = lines(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        // The first process seen in the pod has no HOSTNAME (a shell that
        // moved itself in): the next one is asked, within the same second.
        assert_eq!(pods.resolve(u32::MAX, "sh", &path).unwrap().pod, None);
        // The same process before its exec (runc's init, a runtime's
        // helper): no HOSTNAME yet. Asked again once it runs its program.
        let mut before = Pods::new(LogIndex::new(dir.path()));
        before.pod_info(UID, (pid, 1), Instant::now());
        before.pods.get_mut(UID).unwrap().hostname = None;
        assert!(before.resolve(pid, "sleep", &path).unwrap().pod.is_some());
        let k = pods.resolve(pid, "sleep", &path).unwrap();
        assert_eq!(k.pod.as_deref(), Some("batch-28312345-8w2lp"));
        assert_eq!(k.workload.as_deref(), Some("batch"));
        assert_eq!(k.derived, vec!["pod", "workload"]);
    }

    #[test]
    fn hostile_hostnames_are_not_pod_names() {
        assert_eq!(hostname_in(b"A=1\0HOSTNAME=a\x1b[2Jb\0"), None);
        assert_eq!(hostname_in(b"HOSTNAME=\0"), None);
        assert_eq!(hostname_in(b"XHOSTNAME=web-0\0"), None);
        assert_eq!(hostname_in(&[b'x'; 100]), None);
        assert_eq!(
            hostname_in(b"PATH=/bin\0HOSTNAME=web-0\0").as_deref(),
            Some("web-0")
        );
    }

    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn scopeguard(c: std::process::Child) -> Guard {
        Guard(c)
    }
}

//! Pod and container names from the log files kubelet keeps on every node,
//! without asking the API server:
//!
//! - `/var/log/pods/<namespace>_<pod>_<uid>/`, made when the pod starts;
//! - `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`, a link
//!   made when the container is created.
//!
//! Namespaces, pod and container names are DNS labels or subdomains: they
//! never hold `_`, so the names split unambiguously. Only directory
//! entries' names are read; nothing is opened, no link is followed.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Where kubelet's log directories are. The end-to-end tests simulate a
/// node in a scratch directory and point the tracer there with this
/// variable (`<dir>/pods`, `<dir>/containers`); it is not a user option.
pub const ROOT_VAR: &str = "THREADTRACE_K8S_LOG_ROOT";
const DEFAULT_ROOT: &str = "/var/log";

/// Entries indexed per directory at most: a node runs a few hundred pods;
/// a directory with more is read that far.
const ENTRIES: usize = 32_768;
/// Longest name kept: pod names are at most 253 bytes.
const NAME_MAX: usize = 253;
/// A miss rescans the directories at most this often.
const RESCAN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: Arc<str>,
    pub pod: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNames {
    pub namespace: Arc<str>,
    pub pod: Arc<str>,
    pub container: Arc<str>,
}

/// Both directories, indexed by pod UID and container ID; rebuilt on a
/// miss, at most once per RESCAN.
pub struct LogIndex {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    pods: HashMap<Box<str>, PodNames>,
    containers: HashMap<Box<str>, ContainerNames>,
    scanned: Option<Instant>,
    pub scans: u64,
}

impl LogIndex {
    pub fn new(root: &Path) -> Self {
        LogIndex {
            pods_dir: root.join("pods"),
            containers_dir: root.join("containers"),
            pods: HashMap::new(),
            containers: HashMap::new(),
            scanned: None,
            scans: 0,
        }
    }

    /// The node's directories, or the test's (ROOT_VAR).
    pub fn from_env() -> Self {
        let root = std::env::var_os(ROOT_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Self::new(&root)
    }

    pub fn pod(&mut self, uid: &str, now: Instant) -> Option<PodNames> {
        if let Some(p) = self.pods.get(uid) {
            return Some(p.clone());
        }
        self.rescan(now);
        self.pods.get(uid).cloned()
    }

    pub fn container(&mut self, id: &str, now: Instant) -> Option<ContainerNames> {
        if let Some(c) = self.containers.get(id) {
            return Some(c.clone());
        }
        self.rescan(now);
        self.containers.get(id).cloned()
    }

    fn rescan(&mut self, now: Instant) {
        if self
            .scanned
            .is_some_and(|t| now.saturating_duration_since(t) < RESCAN)
        {
            return;
        }
        self.scanned = Some(now);
        self.scans += 1;
        self.pods = names_in(&self.pods_dir)
            .filter_map(|n| pod_dir(&n))
            .collect();
        self.containers = names_in(&self.containers_dir)
            .filter_map(|n| container_log(&n))
            .collect();
    }
}

/// Up to ENTRIES names of a directory, skipping what is not UTF-8 or is
/// too long to be a Kubernetes name.
fn names_in(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .take(ENTRIES)
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() <= 2 * NAME_MAX + 128)
}

/// `<namespace>_<pod>_<uid>` → (uid, names).
pub fn pod_dir(name: &str) -> Option<(Box<str>, PodNames)> {
    let (namespace, rest) = name.split_once('_')?;
    let (pod, uid) = rest.rsplit_once('_')?;
    if !dns(namespace) || !dns(pod) || uid.is_empty() || uid.contains('_') {
        return None;
    }
    Some((
        uid.into(),
        PodNames {
            namespace: namespace.into(),
            pod: pod.into(),
        },
    ))
}

/// `<pod>_<namespace>_<container>-<id>.log` → (id, names).
pub fn container_log(name: &str) -> Option<(Box<str>, ContainerNames)> {
    let stem = name.strip_suffix(".log")?;
    let (pod, rest) = stem.split_once('_')?;
    let (namespace, rest) = rest.split_once('_')?;
    let (container, id) = rest.rsplit_once('-')?;
    if !dns(pod) || !dns(namespace) || !dns(container) || id.is_empty() {
        return None;
    }
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((
        id.into(),
        ContainerNames {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        },
    ))
}

/// A DNS subdomain as Kubernetes validates names: what the API server
/// accepts, so anything else in these directories is not kubelet's.
fn dns(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6ef3ab5c-9a47-4d3b-9e2c-3bdb3e0c1a12";
    const ID: &str = "4e3b2c1d0f9e8d7c6b5a493827161504f3e2d1c0b9a89786756453423120f1e0";

    #[test]
    fn names_split_on_underscores_only() {
        let (uid, p) = pod_dir(&format!("kube-system_coredns-5d78c9869d-x7m2q_{UID}")).unwrap();
        assert_eq!(&*uid, UID);
        assert_eq!(
            (&*p.namespace, &*p.pod),
            ("kube-system", "coredns-5d78c9869d-x7m2q")
        );
        let (id, c) = container_log(&format!(
            "coredns-5d78c9869d-x7m2q_kube-system_coredns-{ID}.log"
        ))
        .unwrap();
        assert_eq!(&*id, ID);
        assert_eq!(
            (&*c.pod, &*c.namespace, &*c.container),
            ("coredns-5d78c9869d-x7m2q", "kube-system", "coredns")
        );
        // A container whose name has dashes: the id is after the last one.
        let (_, c) = container_log(&format!("web-0_prod_istio-proxy-{ID}.log")).unwrap();
        assert_eq!(&*c.container, "istio-proxy");
    }

    #[test]
    fn what_kubelet_would_not_write_is_ignored() {
        assert!(pod_dir("no-underscores").is_none());
        assert!(pod_dir(&format!("NS_pod_{UID}")).is_none());
        assert!(pod_dir(&format!("ns_po\u{1b}[2Jd_{UID}")).is_none());
        assert!(container_log(&format!("p_ns_c-{ID}")).is_none(), "no .log");
        assert!(container_log("p_ns_c-notanid.log").is_none());
        assert!(container_log(&format!("p_ns_-{ID}.log")).is_none());
    }

    #[test]
    fn a_miss_rescans_at_most_once_a_second_and_finds_later_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pods")).unwrap();
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        let mut idx = LogIndex::new(dir.path());
        let t0 = Instant::now();
        assert_eq!(idx.pod(UID, t0), None);
        std::fs::create_dir(dir.path().join("pods").join(format!("default_web-0_{UID}"))).unwrap();
        std::fs::write(
            dir.path()
                .join("containers")
                .join(format!("web-0_default_app-{ID}.log")),
            "",
        )
        .unwrap();
        assert_eq!(idx.pod(UID, t0 + Duration::from_millis(10)), None);
        assert_eq!(idx.scans, 1, "not rescanned within a second");
        let p = idx.pod(UID, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(&*p.pod, "web-0");
        assert_eq!(idx.scans, 2);
        let c = idx.container(ID, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(&*c.container, "app");
        assert_eq!(idx.scans, 2, "found in the index the last scan built");
    }
}

//! `k8s`: the Kubernetes pod and container of a process, read from its
//! cgroup path and kubelet's log directories, not from the API server.
use serde::{Deserialize, Serialize};

/// What an event says about the process's pod; absent outside Kubernetes,
/// fields null when unknown.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct K8s {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// "containerd", "cri-o" or "docker" when the cgroup path says.
    pub runtime: Option<String>,
    /// The Deployment, StatefulSet, DaemonSet or Job, guessed from the pod
    /// name: see `derived`.
    pub workload: Option<String>,
    /// The fields guessed rather than read: "workload" (from the pod
    /// name's shape), "pod" (from the pod's hostname).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<String>,
}

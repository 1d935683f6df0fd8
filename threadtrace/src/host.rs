//! Facts about the traced host, for the `started` line, trace file header
//! and `doctor`.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    /// "v1", "v2" or "hybrid".
    pub cgroup: String,
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl HostFacts {
    pub fn collect() -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let v1 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup"));
        let v2 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup2"));
        HostFacts {
            hostname: read_trim("/proc/sys/kernel/hostname").unwrap_or_default(),
            kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cgroup: match (v1, v2) {
                (true, true) => "hybrid",
                (true, false) => "v1",
                (false, true) => "v2",
                (false, false) => "none",
            }
            .into(),
            pid_max: read_trim("/proc/sys/kernel/pid_max").and_then(|s| s.parse().ok()),
            threads_max: read_trim("/proc/sys/kernel/threads-max").and_then(|s| s.parse().ok()),
        }
    }
}

//! Where pthread_create lives: every libc mapped on the host, in every
//! mount namespace. Uprobes attach to an inode, so one attach per distinct
//! file covers every process that maps it, containers included.
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// A libc as found through one process.
#[derive(Debug, Clone)]
pub struct Found {
    /// Path the tracer can open (through /proc/PID/root for containers).
    pub host_path: PathBuf,
    /// Path as the owning process sees it, plus its mount namespace when
    /// that is not ours.
    pub display: String,
}

/// Names of files that may define pthread_create: glibc (libpthread before
/// 2.34, libc after) and musl.
pub fn is_libc(basename: &str) -> bool {
    basename == "libc.so.6"
        || basename == "libpthread.so.0"
        || (basename.starts_with("libc-2.") && basename.ends_with(".so"))
        || (basename.starts_with("libpthread-") && basename.ends_with(".so"))
        || basename.starts_with("ld-musl-")
        || basename.starts_with("libc.musl-")
}

const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];
const LIB_NAMES: &[&str] = &[
    "libc.so.6",
    "libpthread.so.0",
    "ld-musl-x86_64.so.1",
    "ld-musl-aarch64.so.1",
];

/// The libcs present under a root directory ("/" or /proc/PID/root), used
/// or not: a container's libc is probed before its first pthread_create.
pub fn in_root(root: &Path, ns_label: Option<&str>) -> Vec<Found> {
    let mut out = Vec::new();
    for dir in LIB_DIRS {
        for name in LIB_NAMES {
            let host_path = root.join(dir).join(name);
            if host_path.is_file() {
                let display = format!("/{dir}/{name}");
                let display = match ns_label {
                    Some(ns) => format!("{display} (in {ns})"),
                    None => display,
                };
                out.push(Found { host_path, display });
            }
        }
    }
    out
}

/// The libcs a running process maps.
pub fn mapped_by(pid: u32, own_mntns: Option<u64>) -> Vec<Found> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let ns = mount_ns(pid);
    let foreign = ns.is_some() && ns != own_mntns;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let base = path.rsplit('/').next().unwrap_or("");
        if !path.starts_with('/') || !is_libc(base) || !seen.insert(path) {
            continue;
        }
        let (host_path, display) = if foreign {
            (
                PathBuf::from(format!("/proc/{pid}/root{path}")),
                format!("{path} (in mnt ns {}, pid {pid})", ns.unwrap_or(0)),
            )
        } else {
            (PathBuf::from(path), path.to_string())
        };
        out.push(Found { host_path, display });
    }
    out
}

pub fn mount_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// Every libc mapped by a running process, and the host's own.
pub fn scan_host() -> Vec<Found> {
    let own = mount_ns(std::process::id());
    let mut out = in_root(Path::new("/"), None);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.extend(mapped_by(pid, own));
            }
        }
    }
    out
}

/// Files already probed, by (device, inode), and filesystem views already
/// searched, by (mount namespace, root directory): a chroot inside a known
/// namespace is a new view too.
#[derive(Default)]
pub struct LibcTargets {
    inodes: HashSet<(u64, u64)>,
    views: HashSet<(u64, u64, u64)>,
}

/// (mount namespace, root directory device and inode) of a process.
fn view(pid: u32) -> Option<(u64, u64, u64)> {
    let root = std::fs::metadata(format!("/proc/{pid}/root")).ok()?;
    Some((mount_ns(pid)?, root.dev(), root.ino()))
}

impl LibcTargets {
    pub fn unseen(&mut self, found: Vec<Found>) -> Vec<Found> {
        found
            .into_iter()
            .filter(|f| match std::fs::metadata(&f.host_path) {
                Ok(m) => self.inodes.insert((m.dev(), m.ino())),
                Err(_) => false,
            })
            .collect()
    }

    /// A process exec'ed: if it sees a filesystem we have not searched (a
    /// container, a chroot), look for libcs in its root now, before its
    /// loader maps one.
    pub fn after_exec(&mut self, pid: u32) -> Vec<Found> {
        let Some(v) = view(pid) else {
            return Vec::new();
        };
        if !self.views.insert(v) {
            return Vec::new();
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let label = format!("mnt ns {}, pid {pid}", v.0);
        let mut found = in_root(&root, Some(&label));
        found.extend(mapped_by(pid, None));
        found
    }

    pub fn note_own_namespace(&mut self) {
        if let Some(v) = view(std::process::id()) {
            self.views.insert(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_glibc_and_musl() {
        for n in [
            "libc.so.6",
            "libpthread.so.0",
            "libc-2.31.so",
            "libpthread-2.28.so",
            "ld-musl-x86_64.so.1",
        ] {
            assert!(is_libc(n), "{n}");
        }
        for n in [
            "libcrypto.so.3",
            "libc++.so.1",
            "libgomp.so.1",
            "libcap.so.2",
        ] {
            assert!(!is_libc(n), "{n}");
        }
    }

    #[test]
    fn finds_this_hosts_libc() {
        let found = in_root(Path::new("/"), None);
        assert!(
            found.iter().any(|f| f.display.ends_with("libc.so.6")),
            "{found:?}"
        );
        let mut t = LibcTargets::default();
        let n = t.unseen(found.clone()).len();
        assert!(n >= 1);
        // The same files again are not new: /lib and /usr/lib are one inode.
        assert_eq!(t.unseen(found).len(), 0);
    }
}

//! Reading memory: a process's resident memory (/proc/PID/statm), and a
//! memory cgroup's limit and usage, on cgroup v1 and v2.
use std::io::Read as _;

use crate::model::MemoryCgroup;

/// Resident and total pages of a process, from /proc/PID/statm, in bytes:
/// (size, resident). A process without memory of its own (a kernel
/// thread) has size 0.
pub fn statm(pid: u32) -> Option<(u64, u64)> {
    let mut f = std::fs::File::open(format!("/proc/{pid}/statm")).ok()?;
    let mut buf = [0u8; 128];
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let size: u64 = fields.next()?.parse().ok()?;
    let resident: u64 = fields.next()?.parse().ok()?;
    let page = page_size();
    Some((size * page, resident * page))
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64)
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

fn read_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The memory cgroup whose limit applies: the victim's own or the nearest
/// ancestor with a finite limit; None when no limit applies (a global OOM).
pub fn memory_cgroup(victim_cgroup: &str) -> Option<MemoryCgroup> {
    let mut dir = std::path::Path::new(victim_cgroup);
    loop {
        let (limit, usage) = if dir.join("memory.limit_in_bytes").exists() {
            (
                read_u64(&dir.join("memory.limit_in_bytes")),
                read_u64(&dir.join("memory.usage_in_bytes")),
            )
        } else if dir.join("memory.max").exists() {
            (
                read_u64(&dir.join("memory.max")),
                read_u64(&dir.join("memory.current")),
            )
        } else {
            return None;
        };
        if let Some(l) = limit.filter(|&l| l < V1_UNLIMITED) {
            return Some(MemoryCgroup {
                path: dir.display().to_string(),
                limit_bytes: l,
                usage_bytes: usage,
                grew_bytes: None,
                window_s: None,
            });
        }
        dir = dir.parent()?;
    }
}

/// The cgroup the kernel kills whole with an OOM victim in
/// `victim_cgroup`: the highest with memory.oom.group 1 from the
/// victim's up to `domain`, the memory cgroup whose limit was reached
/// (to the root for a global OOM), as the kernel looks for it
/// (mem_cgroup_get_oom_group). None when none is set, on cgroup v1 (no
/// such file), and once the cgroup is removed.
pub fn oom_group(victim_cgroup: &str, domain: Option<&str>) -> Option<String> {
    let domain = domain.map(std::path::Path::new);
    let mut dir = std::path::Path::new(victim_cgroup);
    let mut group = None;
    // The root has no memory.oom.group: the walk ends there.
    while let Ok(v) = std::fs::read_to_string(dir.join("memory.oom.group")) {
        if v.trim() == "1" {
            group = Some(dir);
        }
        if domain == Some(dir) {
            break;
        }
        let Some(up) = dir.parent() else { break };
        dir = up;
    }
    group.map(|g| g.display().to_string())
}

/// A memory cgroup's usage now (v1 or v2).
pub fn usage_bytes(path: &str) -> Option<u64> {
    let dir = std::path::Path::new(path);
    read_u64(&dir.join("memory.usage_in_bytes")).or_else(|| read_u64(&dir.join("memory.current")))
}

/// Resident memory of a process now (/proc/PID/statm), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    statm(pid).map(|(_, rss)| rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root (no file) / a (1) / b (0) / c (1), the victim in c: its
    /// group is the highest set between c and the cgroup whose limit was
    /// reached, never above that one.
    #[test]
    fn the_group_is_the_highest_set_up_to_the_limit_reached() {
        let root = std::env::temp_dir().join(format!("tt-oom-group-{}", std::process::id()));
        let c = root.join("a/b/c");
        std::fs::create_dir_all(&c).unwrap();
        let set = |d: &str, v: &str| std::fs::write(root.join(d).join("memory.oom.group"), v);
        set("a", "1\n").unwrap();
        set("a/b", "0\n").unwrap();
        set("a/b/c", "1\n").unwrap();
        let path = |d: &str| root.join(d).display().to_string();
        let c_path = path("a/b/c");
        // Domain b: a is above it and does not count.
        assert_eq!(oom_group(&c_path, Some(&path("a/b"))), Some(c_path.clone()));
        // Domain a (or a global OOM): a, the highest.
        assert_eq!(oom_group(&c_path, Some(&path("a"))), Some(path("a")));
        assert_eq!(oom_group(&c_path, None), Some(path("a")));
        // None set: no group.
        set("a", "0").unwrap();
        set("a/b/c", "0").unwrap();
        assert_eq!(oom_group(&c_path, None), None);
        // Gone, or cgroup v1: no file, no group.
        assert_eq!(oom_group(&path("a/x"), None), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

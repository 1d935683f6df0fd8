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

/// A memory cgroup's usage now (v1 or v2).
pub fn usage_bytes(path: &str) -> Option<u64> {
    let dir = std::path::Path::new(path);
    read_u64(&dir.join("memory.usage_in_bytes")).or_else(|| read_u64(&dir.join("memory.current")))
}

/// Resident memory of a process now (/proc/PID/statm), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    statm(pid).map(|(_, rss)| rss)
}

//! Who holds what, in a few words.
use super::{bytes, count};
use crate::model::{Holder, MemHolder};

/// The first three thread holders, "comm[pid] 120 threads (pool-1-thread-*
/// 100, GC Thread#* 8), ...": each with its three largest groups.
pub fn threads_held(holders: &[Holder]) -> String {
    holders
        .iter()
        .take(3)
        .map(|h| {
            let mut s = format!("{}[{}] {}", h.comm, h.pid, count(h.threads, "thread"));
            if !h.groups.is_empty() {
                let groups: Vec<String> = h
                    .groups
                    .iter()
                    .take(3)
                    .map(|g| format!("{} {}", g.name, g.threads))
                    .collect();
                s += &format!(" ({})", groups.join(", "));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A runtime's name as its users write it.
pub fn runtime_name(runtime: &str) -> &str {
    match runtime {
        "go" => "Go",
        "jvm" => "JVM",
        "node" => "Node.js",
        "rust" => "Rust std",
        other => other,
    }
}

/// The first three memory holders, "comm[pid] 180 MiB, ...".
pub fn memory_held(holders: &[MemHolder]) -> String {
    holders
        .iter()
        .take(3)
        .map(|h| format!("{}[{}] {}", h.comm, h.pid, bytes(h.rss_bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

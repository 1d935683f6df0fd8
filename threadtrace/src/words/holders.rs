//! Who holds what, in a few words.
use super::{bytes, count};
use crate::model::{Holder, MemHolder};

/// The first three thread holders, "comm[pid] 120 threads, ...".
pub fn threads_held(holders: &[Holder]) -> String {
    holders
        .iter()
        .take(3)
        .map(|h| format!("{}[{}] {}", h.comm, h.pid, count(h.threads, "thread")))
        .collect::<Vec<_>>()
        .join(", ")
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

//! A cache bounded in bytes, not entries: what the collector remembers
//! per process (causes, who set a limit, oversubscription already
//! reported, OOM victims) is keyed by pids and names that any user can
//! multiply. Past its budget the least recently used entries go, and
//! are counted, so that the summary can say what was forgotten.
use std::hash::Hash;

use lru::LruCache;
use serde::Serialize;

pub struct ByteLru<K: Hash + Eq, V> {
    /// Unbounded in entries: the budget in bytes bounds it.
    map: LruCache<K, (usize, V)>,
    bytes: usize,
    budget: usize,
    /// Entries dropped to stay under the budget.
    pub evicted: u64,
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    pub fn new(budget: usize) -> Self {
        ByteLru {
            map: LruCache::unbounded(),
            bytes: 0,
            budget,
            evicted: 0,
        }
    }

    /// The entry, made the most recently used.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(_, v)| v)
    }

    /// The entry, its recency left as it is.
    pub fn peek(&self, k: &K) -> Option<&V> {
        self.map.peek(k).map(|(_, v)| v)
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains(k)
    }

    /// Inserts `v`, which holds `bytes` (its key included), then drops
    /// the least recently used entries while over budget.
    pub fn insert(&mut self, k: K, v: V, bytes: usize) {
        if let Some((old, _)) = self.map.put(k, (bytes, v)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        while self.bytes > self.budget && self.map.len() > 1 {
            let Some((_, (b, _))) = self.map.pop_lru() else {
                break;
            };
            self.bytes -= b;
            self.evicted += 1;
        }
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Bytes of a value as JSON: close to what its strings and vectors hold
/// on the heap, without allocating.
pub fn json_bytes<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes_least_recently_used_first_and_counted() {
        let mut c = ByteLru::new(1000);
        for i in 0..10u32 {
            c.insert(i, format!("v{i}"), 100);
        }
        assert_eq!((c.len(), c.bytes(), c.evicted), (10, 1000, 0));
        assert!(c.get(&0).is_some(), "0 is now the most recent");
        c.insert(10, "big".into(), 300);
        assert_eq!(c.evicted, 3, "1, 2 and 3 went");
        assert!(c.contains(&0) && !c.contains(&1) && !c.contains(&3) && c.contains(&4));
        assert!(c.bytes() <= 1000);
        c.insert(4, "again".into(), 50);
        assert_eq!(c.bytes(), 950, "a replaced entry's bytes are given back");
        // One entry larger than the budget is still kept, alone.
        c.insert(99, "huge".into(), 5000);
        assert_eq!(
            (c.len(), c.peek(&99).map(String::as_str)),
            (1, Some("huge"))
        );
    }

    #[test]
    fn json_bytes_counts_without_allocating() {
        assert_eq!(json_bytes("abc"), 5);
        assert_eq!(json_bytes(&vec!["x".repeat(100)]), 104);
    }
}

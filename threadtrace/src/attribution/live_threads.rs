//! Who holds the threads: live threads per (process, creating library),
//! from the kernel's +1/-1 counts, plus the threads each process already
//! had when recording started ("unattributed").
use std::collections::BTreeMap;

use crate::events::session::ThreadCount;

pub const UNATTRIBUTED: &str = "unattributed";

/// Rows, largest first, at most `max`.
///
/// - `live`: (pid, caller) → threads alive created from `caller`;
/// - `library_of(pid, caller)`: the library of that code;
/// - `processes`: (pid, comm, threads it has now) of every process shown.
pub fn rows(
    live: &BTreeMap<(u32, u64), i64>,
    mut library_of: impl FnMut(u32, u64) -> String,
    processes: &[(u32, String, i64)],
    max: usize,
) -> Vec<ThreadCount> {
    let mut per: BTreeMap<(u32, String), i64> = BTreeMap::new();
    for (&(pid, caller), &n) in live {
        let lib = if caller == 0 {
            UNATTRIBUTED.to_string()
        } else {
            library_of(pid, caller)
        };
        *per.entry((pid, lib)).or_default() += n;
    }
    let mut out = Vec::new();
    for (pid, comm, total) in processes {
        let attributed: i64 = per
            .range((*pid, String::new())..)
            .take_while(|((p, _), _)| p == pid)
            .map(|(_, n)| n)
            .sum();
        // The main thread is not a created thread.
        let before = total - 1 - attributed;
        if before > 0 {
            *per.entry((*pid, UNATTRIBUTED.to_string())).or_default() += before;
        }
        for ((p, lib), n) in per
            .range((*pid, String::new())..)
            .take_while(|((p, _), _)| p == pid)
        {
            if *n > 0 {
                out.push(ThreadCount {
                    pid: *p,
                    comm: comm.clone(),
                    library: lib.clone(),
                    live: *n,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        b.live
            .cmp(&a.live)
            .then(a.pid.cmp(&b.pid))
            .then(a.library.cmp(&b.library))
    });
    out.truncate(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_threads_by_creating_library_and_what_was_there_before() {
        let mut live = BTreeMap::new();
        live.insert((10, 0x1000), 24); // OpenBLAS pool
        live.insert((10, 0x2000), 4); // libgomp team
        live.insert((11, 0x1000), 24);
        live.insert((12, 0), 2); // raw clone
        let lib = |_pid: u32, caller: u64| {
            if caller == 0x1000 {
                "libopenblas"
            } else {
                "libgomp"
            }
            .to_string()
        };
        let procs = vec![
            (10, "python3".to_string(), 1 + 24 + 4 + 3),
            (11, "python3".to_string(), 25),
            (12, "go".to_string(), 3),
        ];
        let r = rows(&live, lib, &procs, 100);
        let get = |pid: u32, l: &str| {
            r.iter()
                .find(|t| t.pid == pid && t.library == l)
                .map(|t| t.live)
        };
        assert_eq!(get(10, "libopenblas"), Some(24));
        assert_eq!(get(10, "libgomp"), Some(4));
        assert_eq!(
            get(10, UNATTRIBUTED),
            Some(3),
            "threads from before recording"
        );
        assert_eq!(get(11, UNATTRIBUTED), None);
        assert_eq!(get(12, UNATTRIBUTED), Some(2));
        assert_eq!(r[0].live, 24);
        assert_eq!(rows(&live, lib, &procs, 2).len(), 2);
    }
}

//! The `cause` of a failed thread creation, decided from evidence only:
//! when nothing settles it, the kind is `unknown` and the detail says what
//! was seen.
use super::evidence::Evidence;
use crate::{model::Cause, words};

const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;

fn cause(kind: &str, limit: Option<u64>, current: Option<u64>, detail: String) -> Cause {
    Cause {
        kind: kind.into(),
        limit,
        current,
        detail,
        cgroup: None,
        inherited_from: None,
        set_by: None,
        holders: Vec::new(),
        remedy: String::new(),
    }
}

/// The cause from evidence, in the order the kernel checks: memory, the
/// thread's own stack (no clone tried), pids cgroup, RLIMIT_NPROC,
/// threads-max, pid_max.
pub fn decide(api: &str, errno: i32, clone_tried: bool, e: &Evidence) -> Cause {
    // The new thread's stack could not be mapped (mmap or mprotect failed
    // inside pthread_create): pthread_create says EAGAIN, the syscall ENOMEM.
    if api == "pthread_create" && !clone_tried {
        return stack_alloc(e);
    }
    if errno == ENOMEM {
        return cause(
            "memory",
            None,
            None,
            "the kernel could not allocate memory for the new task (ENOMEM)".into(),
        );
    }
    if errno != EAGAIN {
        return cause(
            "unknown",
            None,
            None,
            format!("errno {errno} is not a limit on tasks"),
        );
    }
    pids_cgroup(e)
        .or_else(|| rlimit_nproc(e))
        .or_else(|| host_limit(e))
        .unwrap_or_else(|| nothing_at_its_limit(e))
}

fn stack_alloc(e: &Evidence) -> Cause {
    let mut why = Vec::new();
    if let Some(as_) = e.rlimit_as {
        why.push(format!("RLIMIT_AS is {} MiB", as_ >> 20));
    }
    if let (Some(maps), Some(max)) = (e.map_count, e.max_map_count) {
        if maps + 16 >= max {
            why.push(format!("{maps} of vm.max_map_count {max} mappings used"));
        }
    }
    let detail = if why.is_empty() {
        "pthread_create failed before any clone: the thread's stack or TLS could not be mapped (memory)".to_string()
    } else {
        format!(
            "pthread_create failed before any clone: the thread's stack could not be mapped; {}",
            why.join(", ")
        )
    };
    cause("stack_alloc", e.rlimit_as, None, detail)
}

fn pids_cgroup(e: &Evidence) -> Option<Cause> {
    let p = e.pids.as_ref()?;
    if !(p.max_events_moved || p.max.is_some_and(|m| p.current >= m)) {
        return None;
    }
    let max = p.max.map_or_else(|| "max".to_string(), |m| m.to_string());
    let detail = match (p.max_events_moved, p.process_cgroup_unknown) {
        (true, false) => format!(
            "the pids cgroup {} refused new tasks: its pids.events max counter moved \
             (pids.current {} of pids.max {max} when read)",
            p.cgroup, p.current
        ),
        (true, true) => format!(
            "the pids cgroup {} refused new tasks then: its pids.events max counter moved \
             (pids.current {} of pids.max {max} when read); the process was gone before its \
             own cgroup could be read",
            p.cgroup, p.current
        ),
        (false, _) => format!(
            "the pids cgroup {} is at its limit: pids.current {} of pids.max {max}",
            p.cgroup, p.current
        ),
    };
    let mut c = cause("cgroup_pids", p.max, Some(p.current), detail);
    c.cgroup = Some(p.cgroup.clone());
    Some(c)
}

/// Root is not bound by RLIMIT_NPROC.
fn rlimit_nproc(e: &Evidence) -> Option<Cause> {
    let n = e.nproc?;
    (e.uid != 0 && n.soft != u64::MAX && n.count >= n.soft as i64).then(|| {
        cause(
            "rlimit_nproc",
            Some(n.soft),
            Some(n.count as u64),
            format!(
                "user {} had {} (threads count) at the failure, the soft RLIMIT_NPROC of the failing process is {}",
                e.uid,
                words::count(n.count, "task"),
                n.soft
            ),
        )
    })
}

/// kernel.threads-max, then kernel.pid_max, within 64 tasks of the host's.
fn host_limit(e: &Evidence) -> Option<Cause> {
    let total = e.threads_total?;
    for (kind, name, max) in [
        ("threads_max", "kernel.threads-max", e.threads_max),
        ("pid_max", "kernel.pid_max", e.pid_max),
    ] {
        if let Some(max) = max.filter(|&m| total + 64 >= m) {
            return Some(cause(
                kind,
                Some(max),
                Some(total),
                format!("{total} tasks on the host, {name} is {max}"),
            ));
        }
    }
    None
}

fn nothing_at_its_limit(e: &Evidence) -> Cause {
    let mut seen = Vec::new();
    if let Some(n) = e.nproc {
        seen.push(format!(
            "user {} had {} tasks, RLIMIT_NPROC soft {}",
            e.uid, n.count, n.soft
        ));
    }
    if let Some(p) = &e.pids {
        seen.push(format!(
            "pids cgroup {} at pids.current {} of pids.max {}, its pids.events max counter unchanged",
            p.cgroup,
            p.current,
            p.max.map_or_else(|| "max".to_string(), |m| m.to_string())
        ));
    }
    if let (Some(t), Some(m)) = (e.threads_total, e.threads_max) {
        seen.push(format!("{t} tasks on the host, threads-max {m}"));
    }
    cause(
        "unknown",
        None,
        None,
        format!("no limit was seen at its maximum: {}", seen.join("; ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::evidence::{Nproc, Pids};

    fn ev() -> Evidence {
        Evidence {
            uid: 1000,
            threads_total: Some(300),
            threads_max: Some(190_000),
            pid_max: Some(4_194_304),
            ..Default::default()
        }
    }

    #[test]
    fn rlimit_nproc_when_the_user_was_at_the_limit() {
        let e = Evidence {
            nproc: Some(Nproc {
                soft: 1024,
                count: 1024,
            }),
            ..ev()
        };
        let c = decide("pthread_create", 11, true, &e);
        assert_eq!(
            (c.kind.as_str(), c.limit, c.current),
            ("rlimit_nproc", Some(1024), Some(1024))
        );
        // Root is not bound by RLIMIT_NPROC.
        let root = Evidence { uid: 0, ..e };
        assert_eq!(decide("pthread_create", 11, true, &root).kind, "unknown");
    }

    #[test]
    fn cgroup_pids_when_its_max_counter_moved() {
        let pids = Pids {
            cgroup: "/sys/fs/cgroup/pids/app".into(),
            current: 3,
            max: Some(4),
            max_events_moved: true,
            process_cgroup_unknown: false,
        };
        let e = Evidence {
            pids: Some(pids),
            nproc: Some(Nproc {
                soft: 1024,
                count: 10,
            }),
            ..ev()
        };
        let c = decide("clone3", 11, true, &e);
        assert_eq!(c.kind, "cgroup_pids");
        assert_eq!(c.cgroup.as_deref(), Some("/sys/fs/cgroup/pids/app"));
        assert_eq!((c.limit, c.current), (Some(4), Some(3)));
    }

    #[test]
    fn stack_alloc_when_no_clone_was_tried() {
        let e = Evidence {
            rlimit_as: Some(300_000 << 10),
            ..ev()
        };
        let c = decide("pthread_create", 11, false, &e);
        assert_eq!(c.kind, "stack_alloc");
        assert!(c.detail.contains("RLIMIT_AS is 292 MiB"), "{}", c.detail);
    }

    #[test]
    fn memory_threads_max_and_unknown() {
        assert_eq!(decide("clone", 12, true, &ev()).kind, "memory");
        let full = Evidence {
            threads_total: Some(189_990),
            ..ev()
        };
        assert_eq!(decide("clone", 11, true, &full).kind, "threads_max");
        let c = decide(
            "clone",
            11,
            true,
            &Evidence {
                nproc: Some(Nproc {
                    soft: 1024,
                    count: 5,
                }),
                ..ev()
            },
        );
        assert_eq!(c.kind, "unknown");
        assert!(c.detail.contains("had 5 tasks"), "{}", c.detail);
    }
}

//! The tracer's own limits. It asks the OOM killer to spare it (it must
//! see the kills), so it must bound itself: RLIMIT_DATA caps its private
//! writable memory (heap, anonymous mappings, thread stacks; not the
//! shared BPF ring buffer, not the main stack), and past it an allocation
//! fails and the tracer stops instead of the host running out. Its file
//! descriptor soft limit goes up to the hard one, so that reading many
//! processes' files does not fail at 1024.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot read {0}: {1}")]
    Get(&'static str, io::Error),
    #[error("cannot set {0}: {1}")]
    Set(&'static str, io::Error),
}

fn get(
    resource: libc::__rlimit_resource_t,
    name: &'static str,
) -> Result<libc::rlimit, LimitError> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return Err(LimitError::Get(name, io::Error::last_os_error()));
    }
    Ok(r)
}

fn set(
    resource: libc::__rlimit_resource_t,
    name: &'static str,
    r: libc::rlimit,
) -> Result<(), LimitError> {
    // SAFETY: setrlimit reads one rlimit from a valid pointer.
    if unsafe { libc::setrlimit(resource, &r) } != 0 {
        return Err(LimitError::Set(name, io::Error::last_os_error()));
    }
    Ok(())
}

/// The soft RLIMIT_NOFILE raised to the hard one; returns the new limit.
pub fn raise_fd_limit() -> Result<u64, LimitError> {
    let mut r = get(libc::RLIMIT_NOFILE, "RLIMIT_NOFILE")?;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        set(libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", r)?;
    }
    Ok(r.rlim_cur)
}

/// RLIMIT_DATA, soft and hard, at `bytes` (never above what it was): the
/// hard limit too, since the tracer gives up CAP_SYS_RESOURCE and never
/// needs more.
pub fn cap_memory(bytes: u64) -> Result<u64, LimitError> {
    let r = get(libc::RLIMIT_DATA, "RLIMIT_DATA")?;
    let cap = bytes.min(r.rlim_max);
    set(
        libc::RLIMIT_DATA,
        "RLIMIT_DATA",
        libc::rlimit {
            rlim_cur: cap,
            rlim_max: cap,
        },
    )?;
    Ok(cap)
}

/// The kills are what it watches: the OOM killer must not take it (it
/// bounds itself with `cap_memory` instead).
pub fn protect_from_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("cannot set oom_score_adj to -1000 ({e}): the OOM killer may take the tracer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_soft_limit_reaches_the_hard_one() {
        let n = raise_fd_limit().unwrap();
        let r = get(libc::RLIMIT_NOFILE, "RLIMIT_NOFILE").unwrap();
        assert_eq!((r.rlim_cur, r.rlim_max), (n, n));
    }

    /// In a child process: the limit is for the rest of its life.
    #[test]
    fn an_allocation_past_the_memory_cap_fails_instead_of_growing() {
        // SAFETY: the child only calls async-signal-safe-enough libc
        // functions and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Above what this (test) process already uses.
            let data_kb: u64 = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmData:"))?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let ok = cap_memory((data_kb << 10) + (256 << 20)).is_ok();
            // black_box: the compiler may otherwise elide a malloc whose
            // memory is not used, and assume it succeeded.
            let big = std::hint::black_box(512usize << 20);
            // SAFETY: plain malloc and free.
            let p = std::hint::black_box(unsafe { libc::malloc(big) });
            let refused = p.is_null();
            unsafe { libc::free(p) };
            let small = std::hint::black_box(unsafe { libc::malloc(1 << 20) });
            let code = (!ok) as i32 | ((!refused) as i32) << 1 | (small.is_null() as i32) << 2;
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
    }
}

//! One specific thing to do, per cause.
use crate::{
    model::{Cause, Holder, LimitNear, ThreadCreateFailed},
    sanitize, words,
};

/// Who asked for the thread, as far as the remedy goes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asker<'a> {
    pub pid: u32,
    pub library: Option<&'a str>,
    pub symbol: Option<&'a str>,
    pub runtime: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl<'a> Asker<'a> {
    pub fn of(e: &'a ThreadCreateFailed) -> Self {
        Asker {
            pid: e.task.pid,
            library: e.library.as_deref(),
            symbol: e.symbol.as_deref(),
            runtime: e.runtime.as_deref(),
            reason: e.reason.as_deref(),
        }
    }

    /// A library's code asked, nothing more known.
    #[cfg(test)]
    pub fn library(library: &'a str) -> Self {
        Asker {
            library: Some(library),
            ..Default::default()
        }
    }
}

/// The environment variable that sizes a pool library's threads.
pub fn pool_variable(library: &str) -> Option<&'static str> {
    Some(match library {
        "libopenblas" => "OPENBLAS_NUM_THREADS",
        "libgomp" | "libomp" | "libiomp5" => "OMP_NUM_THREADS",
        "libmkl" => "MKL_NUM_THREADS",
        "libblis" => "BLIS_NUM_THREADS",
        "libtbb" => "TBB_NUM_THREADS",
        "libuv" => "UV_THREADPOOL_SIZE",
        _ => return None,
    })
}

/// Fewer threads, in the terms of the code that asked: its pool's
/// variable, its runtime's knob.
fn fewer_threads(a: &Asker<'_>) -> String {
    let symbol = a.symbol.unwrap_or("");
    match a.library.and_then(pool_variable) {
        Some("OPENBLAS_NUM_THREADS") => {
            return "OPENBLAS_NUM_THREADS=1 (and OMP_NUM_THREADS=1 next, for libgomp)".into()
        }
        Some("UV_THREADPOOL_SIZE") => {
            return "a smaller libuv thread pool: UV_THREADPOOL_SIZE=N (4 by default)".into()
        }
        Some(v) => return format!("{v}=1"),
        None => {}
    }
    let reason = a.reason.unwrap_or("");
    match a.runtime {
        Some("go") => {
            let what = if reason.contains("LockOSThread") {
                "fewer goroutines locked to their threads at once (each runtime.LockOSThread \
                 holds an OS thread until runtime.UnlockOSThread or the goroutine ends)"
            } else if reason.contains("system calls") {
                "fewer goroutines in blocking system calls or cgo calls at once (each holds an \
                 OS thread)"
            } else {
                "a lower GOMAXPROCS (threads running Go code at once)"
            };
            format!(
                "{what}; debug.SetMaxThreads(N) below the limit makes Go stop with its own \
                 message instead"
            )
        }
        Some("rust") if symbol.starts_with("tokio::runtime::blocking") => {
            "a smaller tokio blocking pool: runtime::Builder::max_blocking_threads(N) (512 by \
             default)"
                .into()
        }
        Some("rust") => {
            "fewer threads per process: a bounded pool instead of a std::thread per task".into()
        }
        Some("node") if symbol.contains("Worker") => {
            "fewer worker_threads Workers at once (reuse a bounded pool of them)".into()
        }
        Some("jvm") => "fewer Java threads: bounded pools (Executors.newFixedThreadPool(N)) \
             instead of a thread per task; the JVM's own with -XX:ParallelGCThreads, \
             -XX:CICompilerCount"
            .into(),
        _ => "fewer threads per process".into(),
    }
}

/// The holder with the most threads, when it is another process: its
/// largest group is what to shrink.
fn largest_other(holders: &[Holder], pid: u32) -> Option<String> {
    let h = holders.first().filter(|h| h.pid != pid)?;
    let g = h.groups.first()?;
    Some(format!(
        "; or shrink what holds the most: {} in {}[{}] ({})",
        g.name,
        h.comm,
        h.pid,
        words::count(g.threads, "thread")
    ))
}

pub fn remedy(c: &Cause, asker: &Asker<'_>) -> String {
    let fewer = fewer_threads(asker);
    let other = largest_other(&c.holders, asker.pid).unwrap_or_default();
    let r = remedy_for(c, &fewer);
    match c.kind.as_str() {
        "rlimit_nproc" | "cgroup_pids" | "threads_max" | "pid_max" => r + &other,
        _ => r,
    }
}

fn remedy_for(c: &Cause, fewer: &str) -> String {
    match c.kind.as_str() {
        "rlimit_nproc" => {
            let limit = c.limit.unwrap_or(0);
            match &c.inherited_from {
                Some(a) => format!(
                    "{fewer}; or raise the limit: restart {}[{}], which still has nproc {limit} (its children inherit it; \
                     `prlimit --pid {} --nproc=N:N` first, or fix limits.conf / LimitNPROC= and restart it)",
                    a.comm, a.pid, a.pid
                ),
                None => format!("{fewer}; or raise RLIMIT_NPROC (now {limit}) for this user: limits.conf nproc, systemd LimitNPROC="),
            }
        }
        "cgroup_pids" => format!(
            "raise pids.max of {} (now {}): `echo N > {}`; or {fewer}",
            c.cgroup.as_deref().unwrap_or("the cgroup"),
            c.limit.map(|l| l.to_string()).unwrap_or_else(|| "max".into()),
            // Its owner chose the name: quoted, it stays a path.
            match &c.cgroup {
                Some(cg) => sanitize::shell(&format!("{cg}/pids.max")).into_owned(),
                None => "<cgroup>/pids.max".into(),
            }
        ),
        "stack_alloc" => match c.limit {
            Some(bytes) => format!(
                "raise RLIMIT_AS (ulimit -v, now {} MiB) or shrink thread stacks (ulimit -s, pthread_attr_setstacksize); or {fewer}",
                bytes >> 20
            ),
            None => format!("check memory and vm.max_map_count; shrink thread stacks (ulimit -s); or {fewer}"),
        },
        "memory" => "the host or cgroup is out of memory: see the top memory holders, free memory or raise the limit".into(),
        "threads_max" => format!("raise kernel.threads-max (now {}): sysctl -w kernel.threads-max=N; or {fewer}", c.limit.unwrap_or(0)),
        "pid_max" => format!("raise kernel.pid_max (now {}): sysctl -w kernel.pid_max=N; or {fewer}", c.limit.unwrap_or(0)),
        _ => format!("no limit was at its maximum; compare the detail with `ulimit -a` of the process; or {fewer}"),
    }
}

/// What to do before a limit runs out: raise it now (the exact command),
/// or cap the pool that holds the most.
pub fn before_limit(e: &LimitNear) -> String {
    let l = &e.limit;
    // Twice the limit: room for the pool that is growing, not unlimited.
    let raised = l.max.saturating_mul(2).max(l.max + 1);
    let quoted = |file: &str| match &l.cgroup {
        Some(cg) => sanitize::shell(&format!("{cg}/{file}")).into_owned(),
        None => format!("<cgroup>/{file}"),
    };
    let raise = match l.kind.as_str() {
        "rlimit_nproc" => match (&e.inherited_from, l.pid) {
            (Some(a), Some(pid)) => format!(
                "raise it now: `prlimit --pid {pid} --nproc={raised}:{raised}`; for good, restart {}[{}] with a higher nproc (limits.conf, systemd LimitNPROC=), its children inherit it",
                a.comm, a.pid
            ),
            (None, Some(pid)) => format!(
                "raise it now: `prlimit --pid {pid} --nproc={raised}:{raised}`; for good, limits.conf nproc or systemd LimitNPROC= of its service"
            ),
            _ => "raise RLIMIT_NPROC: limits.conf nproc, systemd LimitNPROC=".into(),
        },
        "cgroup_pids" => format!("raise it now: `echo {raised} > {}`", quoted("pids.max")),
        "memory_cgroup" => {
            let file = if l.cgroup.as_deref().is_some_and(|cg| {
                std::path::Path::new(cg).join("memory.limit_in_bytes").exists()
            }) {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            let raised = l.max.saturating_add(l.max / 2);
            format!(
                "raise it now: `echo {raised} > {}`; or find what grows among the holders",
                quoted(file)
            )
        }
        "threads_max" => format!("raise it now: `sysctl -w kernel.threads-max={raised}`"),
        "pid_max" => format!(
            "raise it now: `sysctl -w kernel.pid_max={}`",
            raised.min(4_194_304)
        ),
        _ => String::new(),
    };
    // The holder with the most threads, if a pool library made them.
    let pool = e.holders.iter().find_map(|h| {
        let lib = h.libraries.first()?;
        Some((pool_variable(lib)?, lib, h))
    });
    match pool {
        Some((var, lib, h)) => format!(
            "{raise}; or cap the pool that holds the most: {var}=N for {lib} in {}[{}] ({} threads)",
            h.comm, h.pid, h.threads
        ),
        None => raise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnosis::evidence::Evidence, model::Ancestor};

    #[test]
    fn remedies_name_the_pool_variable_and_the_supervisor() {
        let e = Evidence {
            uid: 1000,
            nproc: Some(crate::diagnosis::evidence::Nproc {
                soft: 1024,
                count: 1024,
            }),
            ..Default::default()
        };
        let mut c = crate::diagnosis::decide("pthread_create", 11, true, &e);
        c.inherited_from = Some(Ancestor {
            pid: 77,
            comm: "supervisord".into(),
            started: None,
        });
        let r = remedy(&c, &Asker::library("libopenblas"));
        assert!(r.starts_with("OPENBLAS_NUM_THREADS=1"), "{r}");
        assert!(
            r.contains("restart supervisord[77], which still has nproc 1024")
                && r.contains("prlimit --pid 77"),
            "{r}"
        );
        assert!(remedy(&c, &Asker::library("libgomp")).starts_with("OMP_NUM_THREADS=1"));
        assert_eq!(pool_variable("libmkl"), Some("MKL_NUM_THREADS"));
    }

    #[test]
    fn remedies_speak_the_runtime_s_terms() {
        let e = Evidence {
            uid: 1000,
            nproc: Some(crate::diagnosis::evidence::Nproc { soft: 8, count: 8 }),
            ..Default::default()
        };
        let c = crate::diagnosis::decide("clone", 11, true, &e);
        let go = Asker {
            runtime: Some("go"),
            reason: Some("goroutines locked to their OS threads (runtime.LockOSThread) ..."),
            ..Default::default()
        };
        let r = remedy(&c, &go);
        assert!(
            r.contains("runtime.LockOSThread") && r.contains("debug.SetMaxThreads"),
            "{r}"
        );
        let tokio = Asker {
            runtime: Some("rust"),
            symbol: Some("tokio::runtime::blocking::pool::Spawner::spawn_thread"),
            ..Default::default()
        };
        assert!(remedy(&c, &tokio).contains("max_blocking_threads"));
        assert!(remedy(&c, &Asker::library("libuv")).contains("UV_THREADPOOL_SIZE"));
        let jvm = Asker {
            runtime: Some("jvm"),
            ..Default::default()
        };
        assert!(remedy(&c, &jvm).contains("newFixedThreadPool"));
    }

    /// The pool that holds the most threads, in another process, is named.
    #[test]
    fn the_largest_other_holder_s_pool_is_named() {
        let mut c = crate::diagnosis::decide("pthread_create", 11, true, &Evidence::default());
        c.kind = "rlimit_nproc".into();
        c.holders = vec![Holder {
            pid: 812,
            comm: "java".into(),
            threads: 320,
            libraries: vec!["libjvm".into()],
            groups: vec![crate::model::ThreadGroup {
                name: "pool-1-thread-*".into(),
                threads: 300,
            }],
        }];
        let r = remedy(
            &c,
            &Asker {
                pid: 900,
                ..Default::default()
            },
        );
        assert!(
            r.ends_with(
                "; or shrink what holds the most: pool-1-thread-* in java[812] (300 threads)"
            ),
            "{r}"
        );
        // Its own threads are what "fewer threads" already says.
        let own = remedy(
            &c,
            &Asker {
                pid: 812,
                ..Default::default()
            },
        );
        assert!(!own.contains("shrink"), "{own}");
    }

    /// A delegated cgroup's name is its owner's choice: in the command a
    /// person pastes, it stays one word.
    #[test]
    fn a_cgroup_path_in_a_command_is_quoted() {
        let mut c = crate::diagnosis::decide("clone", 11, true, &Evidence::default());
        c.kind = "cgroup_pids".into();
        c.limit = Some(5);
        c.cgroup = Some("/sys/fs/cgroup/pids/x;$(touch /tmp/pwned);#".into());
        let r = remedy(&c, &Asker::default());
        assert!(
            r.contains("`echo N > '/sys/fs/cgroup/pids/x;$(touch /tmp/pwned);#/pids.max'`"),
            "{r}"
        );
        c.cgroup = Some("/sys/fs/cgroup/pids/app".into());
        assert!(
            remedy(&c, &Asker::default()).contains("`echo N > /sys/fs/cgroup/pids/app/pids.max`"),
            "plain paths stay plain"
        );
    }
}

//! Attribution for every runtime: real programs, as user nobody under a
//! small RLIMIT_NPROC, fail to create a thread and end at once, while the
//! tracer records. Each failure must name the runtime and the libc, the
//! code that asked past the runtime's own thread-spawning path, why the
//! runtime wanted a thread, who holds the user's threads (by thread
//! group), and a remedy in the runtime's terms.
//!
//! Go without cgo (static, the runtime's own clone) and with cgo (glibc's
//! pthread_create); C linked to musl, dynamic and static; a JVM holding a
//! fixed pool while another process fails; Node's libuv thread pool and
//! worker_threads; Rust's std::thread and tokio's blocking pool.
//!
//! RLIMIT_NPROC counts every task of the user on the host: each scenario
//! first waits until user nobody runs nothing.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use threadtrace_e2e::*;

const NOBODY: u32 = 65534;

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tests/programs/NAME.go built into the scratch directory, with cgo or
/// without (then a static executable). The build cache is kept between
/// runs.
fn go_build(name: &str, cgo: bool) -> PathBuf {
    let out = scratch().join(name);
    let cache = std::env::temp_dir().join("threadtrace-e2e-gocache");
    run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(programs().join(format!("{name}.go")))
            .env("CGO_ENABLED", if cgo { "1" } else { "0" })
            .env("GOCACHE", &cache)
            .env("GOFLAGS", "")
            .env("GO111MODULE", "off"),
        &format!("go build {name}.go"),
    );
    out
}

/// tests/programs/rt_musl.c built with musl-gcc into scratch()/OUT:
/// dynamically linked to musl's libc.so (musl-gcc's default), or -static.
fn musl_build(out: &str, static_: bool) -> PathBuf {
    let exe = scratch().join(out);
    let mut cmd = Command::new("musl-gcc");
    cmd.args(["-O1", "-o"])
        .arg(&exe)
        .arg(programs().join("rt_musl.c"));
    if static_ {
        cmd.arg("-static");
    }
    run(&mut cmd, "musl-gcc rt_musl.c");
    exe
}

/// tests/programs/rt_rust (a Cargo project of its own, not a member of
/// the workspace) built offline; its binary BIN copied into the scratch
/// directory. Its target directory is kept between runs.
fn rust_build(bin: &str) -> PathBuf {
    let target = std::env::temp_dir().join("threadtrace-e2e-rt_rust-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(cargo)
            .args([
                "build",
                "--release",
                "--offline",
                "--locked",
                "--manifest-path",
            ])
            .arg(programs().join("rt_rust/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"),
        "cargo build tests/programs/rt_rust",
    );
    let exe = scratch().join(bin);
    std::fs::copy(target.join("release").join(bin), &exe).unwrap();
    exe
}

/// Tasks (threads) of user nobody on the host.
fn nobody_tasks() -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        if uid == Some(NOBODY) {
            n += status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1);
        }
    }
    n
}

/// Waits until user nobody runs nothing: the ulimits below count every
/// task of the user on the host.
fn nobody_idle() {
    let idle = poll(Duration::from_secs(10), || {
        (nobody_tasks() == 0).then_some(())
    });
    assert!(
        idle.is_some(),
        "user nobody still runs {} tasks: the RLIMIT_NPROC scenarios need none",
        nobody_tasks()
    );
}

/// `as_nobody`, which must end within `limit` (the failure ends the
/// program at once).
fn as_nobody_quick(script: &str, limit: Duration) -> Output {
    let t0 = Instant::now();
    let out = as_nobody(script);
    assert!(
        t0.elapsed() < limit,
        "the program did not end at once ({:?}): {}",
        t0.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `script` as nobody (once nobody has no task left) while the
/// tracer records.
fn traced(script: &str, limit: Duration) -> (Output, Records) {
    nobody_idle();
    let t = Tracer::start(&[]);
    let out = as_nobody_quick(script, limit);
    (out, t.stop())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pid_of(out: &Output) -> u32 {
    field(out, "pid")
        .unwrap_or_else(|| panic!("no pid= line: {out:?}"))
        .parse()
        .unwrap()
}

/// Every failure recorded for `pid`, at least one.
fn failures(rec: &Records, pid: u32) -> Vec<Value> {
    let fails: Vec<Value> = rec
        .of_pid("thread_create_failed", pid)
        .into_iter()
        .cloned()
        .collect();
    assert!(!fails.is_empty(), "no failure for pid {pid}");
    fails
}

/// What every failure here has: a thread asked for, EAGAIN for
/// RLIMIT_NPROC, and a remedy.
fn assert_rlimit_thread_failure(f: &Value) {
    assert_eq!(f["creates"], "thread", "{f:#}");
    assert_eq!(f["error"], "EAGAIN", "{f:#}");
    assert_eq!(f["cause"]["kind"], "rlimit_nproc", "{f:#}");
    assert!(f["cause"]["remedy"].is_string(), "{f:#}");
    assert!(
        f["cause"]["holders"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "who holds the threads: {f:#}"
    );
}

fn remedy(f: &Value) -> &str {
    f["cause"]["remedy"].as_str().unwrap_or_default()
}

/// The holder entry of process `pid` in a failure's cause.
fn holder(f: &Value, pid: u32) -> Value {
    f["cause"]["holders"]
        .as_array()
        .expect("cause.holders")
        .iter()
        .find(|h| h["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} is not among the holders: {f:#}"))
}

/// A holder's thread group whose name satisfies `name`.
fn group(holder: &Value, name: impl Fn(&str) -> bool) -> Option<&Value> {
    holder["groups"]
        .as_array()
        .expect("holder groups")
        .iter()
        .find(|g| g["name"].as_str().is_some_and(&name))
}

/// The stack goes through some frame named `symbol`.
fn stack_has(f: &Value, symbol: &str) -> bool {
    f["stack"]
        .as_array()
        .is_some_and(|s| s.iter().any(|fr| fr["symbol"] == symbol))
}

/// Symbols of the Go runtime's own thread-spawning path: never the asker.
const GO_SPAWN_PATH: [&str; 5] = [
    "runtime.clone",
    "runtime.newosproc",
    "runtime.newm",
    "runtime.asmcgocall",
    "_cgo_",
];

/// Why the Go scheduler starts an M: the asker of a Go runtime failure.
const GO_REASONS: [&str; 6] = [
    "runtime.startm",
    "runtime.startlockedm",
    "runtime.templateThread",
    "runtime.startTemplateThread",
    "runtime.main",
    "runtime.handoffp",
];

fn assert_go_asker(f: &Value, exe: &str) {
    assert_eq!(f["runtime"], "go", "{f:#}");
    assert_eq!(f["library"], exe, "the executable: {f:#}");
    let symbol = f["symbol"].as_str().unwrap_or_else(|| panic!("{f:#}"));
    assert!(
        !GO_SPAWN_PATH.iter().any(|p| symbol.starts_with(p)),
        "the asker is past the runtime's spawning path, not {symbol}: {f:#}"
    );
    assert!(
        GO_REASONS.contains(&symbol),
        "a reason of the Go scheduler, not {symbol}: {f:#}"
    );
    let reason = f["reason"].as_str().unwrap_or_else(|| panic!("{f:#}"));
    assert!(
        reason.contains("LockOSThread"),
        "50 goroutines locked to their threads: {f:#}"
    );
    assert!(
        remedy(f).contains("debug.SetMaxThreads") || remedy(f).contains("LockOSThread"),
        "a remedy in Go's terms: {f:#}"
    );
    let own = holder(f, f["pid"].as_u64().unwrap() as u32);
    assert!(
        group(&own, |n| n.contains("Go")).is_some(),
        "the Go process's threads are a Go group: {f:#}"
    );
}

/// Go without cgo, static: the runtime clones its Ms itself. 50
/// goroutines each lock their OS thread and block; under `ulimit -u 8`
/// the runtime dies with "runtime: failed to create new OS thread".
#[test]
fn go_static_locked_goroutines_are_attributed_to_the_scheduler() {
    if !require_root() {
        return;
    }
    let exe = go_build("rt_golocked", false);
    let (out, rec) = traced(
        &format!("echo pid=$$; ulimit -u 8; exec {}", exe.display()),
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert!(
        err.contains("runtime: failed to create new OS thread"),
        "{err}"
    );
    let pid = pid_of(&out);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    for f in failures(&rec, pid) {
        assert_rlimit_thread_failure(&f);
        assert_eq!(f["api"], "clone", "Go's own clone, no libc: {f:#}");
        assert_eq!(f["syscall"], "clone", "{f:#}");
        assert!(
            f["libc"].is_null(),
            "a static Go program has no libc: {f:#}"
        );
        assert_go_asker(&f, "rt_golocked");
        assert_eq!(f["module"], exe.display().to_string(), "{f:#}");
    }
}

/// The same program with cgo, linked to glibc: the runtime asks
/// pthread_create for its Ms (and _cgo_try_pthread_create retries EAGAIN
/// before "runtime/cgo: pthread_create failed" aborts the process).
#[test]
fn go_cgo_locked_goroutines_are_attributed_to_the_scheduler() {
    if !require_root() {
        return;
    }
    let exe = go_build("rt_gocgo", true);
    let (out, rec) = traced(
        &format!("echo pid=$$; ulimit -u 8; exec {}", exe.display()),
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert!(err.contains("runtime/cgo: pthread_create failed"), "{err}");
    let pid = pid_of(&out);
    for f in failures(&rec, pid) {
        assert_rlimit_thread_failure(&f);
        assert_eq!(f["api"], "pthread_create", "{f:#}");
        assert_eq!(f["libc"], "glibc", "{f:#}");
        assert_go_asker(&f, "rt_gocgo");
        assert!(stack_has(&f, "pthread_create"), "{f:#}");
    }
}

fn assert_musl_failure(f: &Value, exe: &Path) {
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert!(f["runtime"].is_null(), "plain C has no runtime: {f:#}");
    assert_eq!(f["libc"], "musl", "{f:#}");
    assert_eq!(
        f["library"],
        exe.file_name().unwrap().to_string_lossy().as_ref(),
        "the executable: {f:#}"
    );
    assert_eq!(f["symbol"], "start_workers", "{f:#}");
    assert_eq!(f["module"], exe.display().to_string(), "{f:#}");
    assert_eq!(f["start_routine"]["symbol"], "worker_main", "{f:#}");
    assert!(stack_has(f, "pthread_create"), "{f:#}");
}

/// C linked dynamically to musl (/lib/ld-musl-x86_64.so.1, musl-gcc's
/// default), built without unwind tables or frame pointers in musl's
/// libc.so: the failure still names start_workers and worker_main.
#[test]
fn musl_dynamic_program_is_named_by_its_function() {
    if !require_root() {
        return;
    }
    let exe = musl_build("rt_musl_dynamic", false);
    let (out, rec) = traced(
        &format!("ulimit -u 4; exec {}", exe.display()),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("rt_musl: pthread_create: Resource temporarily unavailable"),
        "{out:?}"
    );
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    assert_eq!(fails.len(), 1, "one failed pthread_create");
    assert_musl_failure(&fails[0], &exe);
    let libc_frame = &fails[0]["stack"][0];
    assert!(
        libc_frame["module"]
            .as_str()
            .is_some_and(|m| m.contains("musl")),
        "the innermost frame is musl's libc.so: {:#}",
        fails[0]
    );
}

/// The same, `musl-gcc -static`: musl's pthread_create is in the
/// executable itself, and must not be taken for the asker.
#[test]
fn musl_static_program_is_named_by_its_function() {
    if !require_root() {
        return;
    }
    let exe = musl_build("rt_musl_static", true);
    let (out, rec) = traced(
        &format!("ulimit -u 4; exec {}", exe.display()),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    assert_eq!(fails.len(), 1, "one failed pthread_create");
    assert_musl_failure(&fails[0], &exe);
}

/// Kills the JVM (run by runuser as nobody) when the test ends.
struct Jvm {
    _runuser: Daemon,
    pid: u32,
}

impl Drop for Jvm {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the JVM this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

/// A JVM of user nobody holds a fixed pool of 300 blocked threads
/// (Executors.newFixedThreadPool) and does not fail; another process of
/// the same user (rt_musl.c, built with gcc against glibc) cannot create
/// its 4th thread. The failure says who holds the user's threads: the JVM,
/// by thread group ("pool-1-thread-*" 300), and the remedy names the pool.
#[test]
fn jvm_thread_pool_is_named_as_the_holder() {
    if !require_root() {
        return;
    }
    const POOL: u64 = 300;
    let classes = scratch().join("java");
    std::fs::create_dir_all(&classes).unwrap();
    run(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(programs().join("rt_javapool.java")),
        "javac rt_javapool.java",
    );
    run(
        Command::new("chmod").arg("-R").arg("a+rX").arg(&classes),
        "chmod",
    );
    let prog = compile_c("rt_musl", &["-pthread"]);
    nobody_idle();
    let log = scratch().join("rt_javapool.out");
    let jvm_out = std::fs::File::create(&log).unwrap();
    let runuser = Daemon::spawn(
        "the JVM",
        Command::new("runuser")
            .args(["-u", "nobody", "--", "bash", "-c"])
            .arg(format!(
                "ulimit -u 1000; exec java -cp {} rt_javapool {POOL}",
                classes.display()
            ))
            .stdout(jvm_out)
            .stderr(Stdio::inherit()),
    );
    let ready = poll(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let pid = text
            .lines()
            .find_map(|l| l.strip_prefix("pid="))?
            .parse::<u32>()
            .ok()?;
        text.lines().any(|l| l == "ready").then_some(pid)
    });
    let jvm_pid = ready.expect("the JVM did not start its pool within 60 s");
    let jvm = Jvm {
        _runuser: runuser,
        pid: jvm_pid,
    };
    let held: u64 = threads_of(jvm.pid).parse().unwrap();
    assert!(held > POOL, "the JVM holds its pool and its own threads");
    let t = Tracer::start(&[]);
    let out = as_nobody_quick(
        &format!("ulimit -u {}; exec {}", held + 4, prog.display()),
        Duration::from_secs(10),
    );
    let rec = t.stop();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    assert_eq!(fails.len(), 1);
    let f = &fails[0];
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert!(
        f["runtime"].is_null(),
        "the failing program is plain C: {f:#}"
    );
    assert_eq!(f["libc"], "glibc", "{f:#}");
    assert_eq!(f["library"], "rt_musl", "{f:#}");
    assert_eq!(f["symbol"], "start_workers", "{f:#}");
    assert_eq!(f["start_routine"]["symbol"], "worker_main", "{f:#}");
    let holders = f["cause"]["holders"].as_array().unwrap();
    assert_eq!(holders[0]["pid"], jvm.pid, "the JVM holds the most: {f:#}");
    let h = holder(f, jvm.pid);
    assert_eq!(h["comm"], "java", "{f:#}");
    assert!(h["threads"].as_u64().unwrap() >= POOL, "{f:#}");
    assert!(
        h["libraries"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "libjvm")),
        "{f:#}"
    );
    let pool = group(&h, |n| n == "pool-1-thread-*")
        .unwrap_or_else(|| panic!("the pool is a group of its own: {f:#}"));
    assert_eq!(pool["threads"], POOL, "{f:#}");
    assert!(
        group(&h, |n| n.starts_with("GC Thread")).is_some(),
        "the JVM's own threads are named too: {f:#}"
    );
    assert!(
        remedy(f).contains("pool-1-thread"),
        "the remedy names the pool that holds the threads: {f:#}"
    );
    // A JVM failure (thread_native_entry) would have been this JVM's own:
    // it must not fail here.
    assert!(rec.of_pid("thread_create_failed", jvm.pid).is_empty());
    drop(jvm);
}

/// Node starts 7 threads of its own; `ulimit -u 10` lets it start but not
/// libuv's thread pool of UV_THREADPOOL_SIZE=64 (the first fs call
/// starts it): libuv aborts at once.
#[test]
fn node_libuv_pool_that_cannot_start_is_attributed_to_libuv() {
    if !require_root() {
        return;
    }
    let (out, rec) = traced("echo pid=$$; ulimit -u 10; UV_THREADPOOL_SIZE=64 exec /usr/bin/node -e \"require('fs').readFile('/etc/hostname', () => {})\"", Duration::from_secs(10));
    assert!(!out.status.success(), "libuv aborts: {out:?}");
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    let f = &fails[0];
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert_eq!(f["runtime"], "node", "{f:#}");
    assert_eq!(f["libc"], "glibc", "{f:#}");
    assert_eq!(f["library"], "libuv", "libuv, linked into node: {f:#}");
    assert!(f["symbol"].is_string(), "{f:#}");
    assert!(
        remedy(f).contains("UV_THREADPOOL_SIZE"),
        "a remedy in libuv's terms: {f:#}"
    );
}

/// worker_threads: `new Worker()` in a loop until one cannot start
/// (ERR_WORKER_INIT_FAILED); the script exits 1 at once.
#[test]
fn node_worker_threads_are_attributed_to_the_worker() {
    if !require_root() {
        return;
    }
    // Where nobody can read it: the checkout may be private to root.
    let script = scratch().join("rt_nodeworkers.js");
    std::fs::copy(programs().join("rt_nodeworkers.js"), &script).unwrap();
    let (out, rec) = traced(
        &format!("ulimit -u 12; exec /usr/bin/node {}", script.display()),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("ERR_WORKER_INIT_FAILED"), "{out:?}");
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    let f = &fails[0];
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert_eq!(f["runtime"], "node", "{f:#}");
    assert_eq!(f["libc"], "glibc", "{f:#}");
    // Node's own binary (nodesource), or Debian's libnode.
    assert!(f["library"] == "node" || f["library"] == "libnode", "{f:#}");
    assert!(
        f["symbol"].as_str().is_some_and(|s| s.contains("Worker")),
        "node::worker::Worker::StartThread, not libuv's uv_thread_create: {f:#}"
    );
}

/// Rust's std: thread::Builder::spawn in a loop until it returns Err; the
/// program exits 1 at once. The asker is the program's function, past
/// std's spawning path.
#[test]
fn rust_std_thread_spawn_is_attributed_to_the_crate() {
    if !require_root() {
        return;
    }
    let exe = rust_build("rt_rust_std");
    let (out, rec) = traced(
        &format!("ulimit -u 8; exec {}", exe.display()),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("failed to spawn thread"), "{out:?}");
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    assert_eq!(fails.len(), 1);
    let f = &fails[0];
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert_eq!(f["runtime"], "rust", "{f:#}");
    assert_eq!(f["libc"], "glibc", "{f:#}");
    assert_eq!(f["library"], "rt_rust_std", "{f:#}");
    assert!(
        f["symbol"]
            .as_str()
            .is_some_and(|s| s.starts_with("rt_rust_std::")),
        "the crate's function (spawn_workers), not std's: {f:#}"
    );
    assert!(
        f["start_routine"]["symbol"]
            .as_str()
            .is_some_and(|s| s.contains("thread_start")),
        "{f:#}"
    );
}

/// tokio's blocking pool: a multi-thread runtime with 4 workers under
/// `ulimit -u 5`, so that its blocking pool cannot start a single thread;
/// the first spawn_blocking panics ("OS can't spawn worker thread") and
/// the program exits 101 at once.
#[test]
fn tokio_blocking_pool_is_attributed_to_tokio() {
    if !require_root() {
        return;
    }
    let exe = rust_build("rt_rust_tokio");
    let (out, rec) = traced(
        &format!("ulimit -u 5; RUST_BACKTRACE=0 exec {} 4", exe.display()),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert!(
        stderr(&out).contains("OS can't spawn worker thread"),
        "{out:?}"
    );
    let pid = pid_of(&out);
    let fails = failures(&rec, pid);
    let f = &fails[0];
    assert_rlimit_thread_failure(f);
    assert_eq!(f["api"], "pthread_create", "{f:#}");
    assert_eq!(f["runtime"], "rust", "{f:#}");
    assert_eq!(f["libc"], "glibc", "{f:#}");
    assert_eq!(f["library"], "rt_rust_tokio", "{f:#}");
    assert!(
        f["symbol"]
            .as_str()
            .is_some_and(|s| s.starts_with("tokio::runtime::blocking")),
        "{f:#}"
    );
    assert!(
        f["start_routine"]["symbol"]
            .as_str()
            .is_some_and(|s| s.contains("thread_start")),
        "{f:#}"
    );
    assert!(
        remedy(f).contains("max_blocking_threads"),
        "a remedy in tokio's terms: {f:#}"
    );
}

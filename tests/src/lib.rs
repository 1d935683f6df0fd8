//! Harness for the end-to-end scenarios in tests/tests/: run the real
//! threadtrace binary as root while real programs fail for real.
//!
//! `cargo xtask test` builds the binary, installs the Debian packages the
//! scenarios need, and runs them one at a time (each traces the whole host).
use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Whether this scenario can run. Outside CI, without root, it is skipped
/// and says why; in CI (CI=true) a missing root is a failure.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("end-to-end tests must run as root in CI");
    }
    eprintln!(
        "skipped: end-to-end scenarios load eBPF programs and need root (sudo cargo xtask test)"
    );
    false
}

pub fn bin() -> PathBuf {
    std::env::var_os("THREADTRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/threadtrace")
        })
}

/// A scratch directory every user can read and execute from.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("threadtrace-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Compiles tests/programs/NAME.c with gcc into the scratch directory.
pub fn compile_c(name: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("programs")
        .join(format!("{name}.c"));
    let out = scratch().join(name);
    let status = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .args(flags)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc {name}.c failed");
    out
}

/// Compiles tests/programs/NAME.c into a shared library `OUT` (a path),
/// position-independent, with extra `flags` (e.g. `-Wl,--build-id=none`).
pub fn compile_c_lib(name: &str, out: &Path, flags: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("programs")
        .join(format!("{name}.c"));
    let status = Command::new("gcc")
        .args(["-O1", "-shared", "-fPIC", "-pthread", "-o"])
        .arg(out)
        .arg(&src)
        .args(flags)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc -shared {name}.c failed");
}

/// A directory in the scratch one that user nobody owns (to replace files
/// in it as the failing program).
pub fn nobody_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    dir
}

/// Keeps every CPU busy while it lives: attribution must not depend on
/// winning a race with the failing process.
pub struct CpuLoad(Vec<Child>);

impl CpuLoad {
    pub fn start() -> CpuLoad {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuLoad(
            (0..cpus)
                .map(|_| {
                    Command::new("bash")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("bash")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// numpy from PyPI (its wheel vendors OpenBLAS as
/// numpy.libs/libscipy_openblas64_-HASH.so, built without a build id),
/// installed once into a directory every user can read; its path.
pub fn pypi_numpy() -> PathBuf {
    let dir = std::env::temp_dir().join("threadtrace-e2e-pypi-numpy");
    if !dir.join("numpy").exists() {
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new("/usr/bin/python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&tmp)
            .arg("numpy")
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install numpy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status();
    dir
}

/// The frame of a failure's stack that asked for the thread (at `caller`).
pub fn asker_frame(f: &Value) -> Value {
    f["stack"]
        .as_array()
        .expect("stack")
        .iter()
        .find(|fr| fr["addr"] == f["caller"])
        .cloned()
        .unwrap_or_else(|| panic!("no frame at the caller: {f:#}"))
}

/// `bash -c SCRIPT` as user nobody, where RLIMIT_NPROC binds.
pub fn as_nobody(script: &str) -> Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "bash", "-c", script])
        .output()
        .expect("runuser")
}

pub fn bash(script: &str) -> Output {
    Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash")
}

/// What a running tracer costs: (VmRSS, VmHWM) in KiB and its open fds.
pub fn footprint(pid: u32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (kb("VmRSS:"), kb("VmHWM:"), fds)
}

/// A process's thread count, from /proc/PID/status.
pub fn threads_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .to_string()
}

/// A process's resident memory in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A process's open file descriptors.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The value of `KEY=value` in a program's output.
pub fn field(out: &Output, key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// A running `threadtrace record --json`.
pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub started: Value,
}

impl Tracer {
    /// Starts it and waits for the `started` line: every probe attached.
    /// Scenarios about single failures raise the storm threshold, so that
    /// each failure is printed; storm scenarios set their own.
    pub fn start(extra: &[&str]) -> Tracer {
        Tracer::start_env(extra, &[])
    }

    /// The same, with these environment variables set for the tracer.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Tracer {
        let storms: &[&str] = if extra.contains(&"--storm-threshold") {
            &[]
        } else {
            &["--storm-threshold", "1000000"]
        };
        let mut child = Command::new(bin())
            .args(["record", "--json"])
            .args(storms)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn threadtrace");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no started line within 60 s");
        let started: Value = serde_json::from_str(&first).expect("started line is JSON");
        assert_eq!(started["kind"], "started", "first line: {first}");
        Tracer {
            child,
            lines: rx,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as the OOM killer or an operator would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGINT (as Ctrl-C) and returns every line it printed
    /// after `started`, parsed.
    pub fn stop(self) -> Records {
        self.stop_with(libc::SIGINT)
    }

    pub fn stop_with(mut self, sig: i32) -> Records {
        // Let the ring buffer deliver what the workload just caused.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30))
            .expect("threadtrace did not stop within 30 s");
        assert!(status.success(), "threadtrace exited with {status}");
        let records: Vec<Value> = self
            .lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        for r in &records {
            assert_words_for_people(r);
        }
        Records(records)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Text that shows a value's Rust form instead of words: `Some(200)`,
/// `None`, `Ok(..)`, `Err(..)`, `["a", "b"]`.
pub fn debug_form(text: &str) -> Option<&'static str> {
    ["Some(", "None", "Ok(", "Err(", "[\"", "\"]"]
        .into_iter()
        .find(|p| text.contains(p))
}

/// Every sentence written for people in a record (titles, evidence,
/// details, remedies, consequences, gaps): words, not `{:?}` of values.
/// Every scenario's records go through this.
pub fn assert_words_for_people(v: &Value) {
    const FOR_PEOPLE: [&str; 6] = [
        "title",
        "evidence",
        "detail",
        "remedy",
        "consequence",
        "attribution_gap",
    ];
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    fn walk(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if FOR_PEOPLE.contains(&k.as_str()) {
                        let mut texts = Vec::new();
                        strings(x, &mut texts);
                        for t in texts {
                            if let Some(p) = debug_form(t) {
                                panic!("{k} holds {p:?}, a value's Rust form, not words: {t}");
                            }
                        }
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(walk),
            _ => {}
        }
    }
    walk(v);
}

/// `threadtrace report FILE`: its text, which must read as words.
pub fn report_text(file: &Path) -> String {
    let out = Command::new(bin())
        .arg("report")
        .arg(file)
        .output()
        .expect("threadtrace report");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for t in [&text, &err] {
        if let Some(p) = debug_form(t) {
            panic!("report shows {p:?}, a value's Rust form, not words:\n{t}");
        }
    }
    format!("{text}{err}")
}

/// `threadtrace report --json FILE`, which must exit 0, parsed.
pub fn report_json(file: &Path) -> Value {
    let out = Command::new(bin())
        .args(["report", "--json"])
        .arg(file)
        .output()
        .expect("threadtrace report");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("report --json is JSON");
    assert_words_for_people(&v);
    v
}

/// A report's exact failure count for one process.
pub fn report_count(report: &Value, pid: u32) -> u64 {
    report["counters"]["by_process"]
        .as_array()
        .expect("by_process")
        .iter()
        .filter(|p| p["pid"] == pid)
        .map(|p| p["count"].as_u64().unwrap())
        .sum()
}

/// What a recording printed.
pub struct Records(pub Vec<Value>);

impl Records {
    pub fn kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.0.iter().filter(move |v| v["kind"] == kind)
    }

    pub fn of_pid<'a>(&'a self, kind: &'a str, pid: u32) -> Vec<&'a Value> {
        self.kind(kind).filter(|v| v["pid"] == pid).collect()
    }

    pub fn summary(&self) -> &Value {
        let last = self.0.last().expect("no lines after started");
        assert_eq!(last["kind"], "summary", "last line: {last}");
        last
    }

    /// The summary's exact count for (pid, api), 0 if none.
    pub fn counted(&self, pid: u32, api: &str) -> u64 {
        self.summary()["by_process"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["pid"] == pid && r["api"] == api)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    }
}

/// Where cgroups are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether /sys/fs/cgroup is cgroup2, unified (every controller in one
/// hierarchy), rather than v1 (one hierarchy per controller, as in
/// systemd's hybrid layout). Decided once, from the file system's magic.
pub fn cgroup_v2() -> bool {
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V2.get_or_init(|| {
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        let path = std::ffi::CString::new(CGROUP_ROOT).unwrap();
        // SAFETY: statfs(2) into a zeroed struct it fills.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            panic!("statfs {CGROUP_ROOT}: {}", std::io::Error::last_os_error());
        }
        st.f_type as i64 == CGROUP2_SUPER_MAGIC
    })
}

/// The hierarchy that holds `controller`: /sys/fs/cgroup/CONTROLLER on
/// v1, /sys/fs/cgroup itself on v2.
pub fn cgroup_hierarchy(controller: &str) -> PathBuf {
    if cgroup_v2() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        Path::new(CGROUP_ROOT).join(controller)
    }
}

/// How threadtrace names the hierarchy of a `controller` cgroup in
/// `process_cgroup` records: the controller on v1, "" on v2.
pub fn cgroup_hierarchy_name(controller: &str) -> &str {
    if cgroup_v2() {
        ""
    } else {
        controller
    }
}

/// On v2: makes sure `controller` is enabled in `dir`'s
/// cgroup.subtree_control, so that its children have the controller's
/// files (already enabled is fine).
pub fn cgroup_enable_controller(dir: &Path, controller: &str) {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == controller) {
        return;
    }
    std::fs::write(&file, format!("+{controller}"))
        .unwrap_or_else(|e| panic!("+{controller} > {}: {e}", file.display()));
}

/// A cgroup made for one scenario, removed afterwards (with any cgroup
/// the scenario made below it): `/sys/fs/cgroup/CONTROLLER/NAME` on
/// cgroup v1, `/sys/fs/cgroup/NAME` with CONTROLLER enabled on v2. Its
/// setters write the file of the layout found.
pub struct Cgroup {
    pub path: PathBuf,
    controller: String,
}

impl Cgroup {
    pub fn new(controller: &str, name: &str) -> Cgroup {
        if cgroup_v2() {
            cgroup_enable_controller(Path::new(CGROUP_ROOT), controller);
        }
        let path = cgroup_hierarchy(controller)
            .join(format!("threadtrace-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup {
            path,
            controller: controller.to_string(),
        }
    }

    /// Writes a file of this cgroup, by name (the same in v1 and v2, as
    /// pids.max, or the layout's own): prefer the typed setters.
    pub fn set(&self, file: &str, value: &str) {
        std::fs::write(self.path.join(file), value)
            .unwrap_or_else(|e| panic!("{} = {value}: {e}", self.path.join(file).display()));
    }

    /// pids.max (the same file in v1 and v2).
    pub fn set_pids_max(&self, max: u64) {
        self.set("pids.max", &max.to_string());
    }

    /// The memory limit: memory.limit_in_bytes on v1; memory.max on v2,
    /// and memory.swap.max 0 where there is swap accounting, so that the
    /// OOM killer comes at the limit as on v1, not after swapping.
    pub fn set_memory_max(&self, bytes: u64) {
        if cgroup_v2() {
            if self.path.join("memory.swap.max").exists() {
                self.set("memory.swap.max", "0");
            }
            self.set("memory.max", &bytes.to_string());
        } else {
            self.set("memory.limit_in_bytes", &bytes.to_string());
        }
    }

    /// The CFS bandwidth limit: cpu.cfs_period_us and cpu.cfs_quota_us on
    /// v1, cpu.max "QUOTA PERIOD" on v2.
    pub fn set_cpu_quota(&self, quota_us: u64, period_us: u64) {
        if cgroup_v2() {
            self.set("cpu.max", &format!("{quota_us} {period_us}"));
        } else {
            self.set("cpu.cfs_period_us", &period_us.to_string());
            self.set("cpu.cfs_quota_us", &quota_us.to_string());
        }
    }

    /// How threadtrace names the source of a CPU quota set with
    /// `set_cpu_quota`: "cgroup cpu.cfs_quota_us" on v1, "cgroup cpu.max"
    /// on v2.
    pub fn cpu_quota_source() -> &'static str {
        if cgroup_v2() {
            "cgroup cpu.max"
        } else {
            "cgroup cpu.cfs_quota_us"
        }
    }

    /// The kernel's count of OOM kills in this memory cgroup: `oom_kill`
    /// of memory.oom_control on v1, of memory.events on v2.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if cgroup_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        counter(&self.read(file), "oom_kill")
    }

    /// The kernel's count of forks and clones refused at pids.max: `max`
    /// of pids.events (the same file in v1 and v2).
    pub fn pids_max_events(&self) -> Option<u64> {
        counter(&self.read("pids.events"), "max")
    }

    /// The controller this cgroup was made for.
    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// This cgroup's path as /proc/PID/cgroup gives it, relative to its
    /// hierarchy's root: `/threadtrace-e2e-NAME-PID`.
    pub fn relative(&self) -> String {
        format!("/{}", self.path.file_name().unwrap().to_string_lossy())
    }

    /// `{env} exec {program}` by a shell that first moves itself into this
    /// cgroup; its output starts with `pid=PID`, the pid the program runs
    /// as (the shell execs it: no extra process, no extra exec).
    pub fn exec(&self, env: &str, program: &str) -> Output {
        bash(&format!(
            "echo $$ > {}/cgroup.procs; echo pid=$$; {env} exec {program}",
            self.path.display()
        ))
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }
}

/// The value of `KEY N` in a flat-keyed cgroup file (memory.events,
/// memory.oom_control, pids.events).
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Empties a cgroup directory (killing what is left in it) and removes
/// it, the cgroups below it first.
pub fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Kill what is left and wait for the cgroup to empty before rmdir.
        remove_cgroup(&self.path);
    }
}

/// A terminal for the dashboard: a detached tmux session on a private
/// server, killed with everything in it when dropped.
pub struct Tmux {
    socket: PathBuf,
    status: PathBuf,
}

impl Tmux {
    /// Runs `command` in a WIDTH×HEIGHT terminal, under a shell that
    /// writes its exit status to a file (tmux's own pane status is not
    /// always reaped) and survives Ctrl-C. The pane stays afterwards, so
    /// that the screen left behind can be read.
    pub fn start(width: u16, height: u16, command: &str) -> Tmux {
        static SESSIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Its own socket file: kill-server does not remove it.
        let t = Tmux {
            socket: scratch().join(format!("tmux-{n}.socket")),
            status: scratch().join(format!("tmux-{n}.status")),
        };
        let _ = std::fs::remove_file(&t.status);
        // remain-on-exit must be set before the command can exit: the
        // session starts with a placeholder, then the pane is respawned.
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sleep 1000000",
        ]);
        t.tmux(&["set-option", "-t", "e2e", "remain-on-exit", "on"]);
        t.tmux(&[
            "respawn-pane",
            "-k",
            "-t",
            "e2e",
            "-e",
            "LANG=C.UTF-8",
            &format!("trap : INT; {command}; echo $? > {}", t.status.display()),
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's title, as escape sequences in its output may set it.
    pub fn title(&self) -> String {
        self.tmux(&["display", "-p", "-t", "e2e", "#{pane_title}"])
            .trim()
            .to_string()
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "e2e"])
    }

    /// Polls the screen until `ready` accepts it; panics with the last
    /// screen after `limit`.
    pub fn wait_for(&self, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ready(&s) {
                return s;
            }
            if t0.elapsed() > limit {
                panic!("screen not as expected after {limit:?}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keys as tmux names them: "q", "C-c", "Tab", "Enter", "Escape".
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend(keys);
        self.tmux(&args);
    }

    pub fn resize(&self, width: u16, height: u16) {
        self.tmux(&[
            "resize-window",
            "-t",
            "e2e",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    /// The pid of the command (the child of the pane's shell).
    pub fn pid(&self) -> u32 {
        let shell: u32 = self
            .tmux(&["display", "-p", "-t", "e2e", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane_pid");
        let t0 = Instant::now();
        loop {
            let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("a pid");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no command in the pane"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The command's exit status once it has exited (128 + N for signal
    /// N, as the shell says), or None after `limit`.
    pub fn exit_status(&self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(s) = std::fs::read_to_string(&self.status)
                .ok()
                .filter(|s| s.ends_with('\n'))
            {
                return Some(s.trim().parse().expect("a status"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.status);
    }
}

/// A free TCP port on loopback (bound then released: another process
/// could take it in between, which these tests accept).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: (status line and headers, body), or None when
/// nothing answers.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(String, String)> {
    http_get_accepting(addr, path, None)
}

/// `http_get` with an Accept header.
pub fn http_get_accepting(
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// The sum of the samples of `name` (as exposed, e.g. `foo_total`) whose
/// labels include every pair of `labels`, in an exposition text; None
/// when no sample matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some(x) => x,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

/// Polls `f` every 200 ms until it gives Some, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A process started by a test, killed (with its process group) when the
/// test ends, however it ends.
pub struct Daemon {
    pub child: Child,
    pub name: &'static str,
}

impl Daemon {
    /// Starts `cmd` in a process group of its own.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Daemon {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { child, name }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = scratch().join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `record --json` with stdout going to `stdout_file` (not a pipe), as a
/// service's would; returns once `started` is there.
pub fn record_to_file(args: &[&str], stdout_file: &Path) -> Child {
    let out = std::fs::File::create(stdout_file).unwrap();
    let child = Command::new(bin())
        .args(["record", "--json", "--storm-threshold", "1000000"])
        .args(args)
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(stdout_file)
        .unwrap_or_default()
        .contains("\"started\"")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no started line");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

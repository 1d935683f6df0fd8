//! Who wanted the thread, on real distribution binaries built without
//! frame pointers: Debian's OpenBLAS (through numpy), libgomp, and a
//! program calling pthread_create itself; numpy's PyPI wheel, whose
//! OpenBLAS has no build id; a library without one loaded with dlopen by a
//! program that exits at once, with both CPUs busy; a library replaced on
//! disk after the failure.
use std::path::Path;

use threadtrace_e2e::*;

fn only_failure(rec: &Records, pid: u32) -> serde_json::Value {
    let fails = rec.of_pid("thread_create_failed", pid);
    assert!(!fails.is_empty(), "no failure for pid {pid}");
    fails[0].clone()
}

/// Incident 1 (docs/incidents.md): `import numpy` under RLIMIT_NPROC, OpenBLAS's pool fails.
#[test]
fn numpy_openblas_is_attributed_to_libopenblas() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let out = as_nobody("echo pid=$$; ulimit -u 1; exec /usr/bin/python3 -c 'import numpy'");
    let rec = t.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OpenBLAS blas_thread_init: pthread_create failed"),
        "{stderr}"
    );
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let f = only_failure(&rec, pid);
    assert_eq!(f["api"], "pthread_create");
    assert_eq!(f["syscall"], "clone3");
    assert_eq!(f["library"], "libopenblas", "{f:#}");
    assert_eq!(f["symbol"], "blas_thread_init", "{f:#}");
    assert!(f["module"].as_str().unwrap().contains("openblas"), "{f:#}");
    let asker = asker_frame(&f);
    assert_eq!(asker["module"], f["module"]);
    assert_eq!(asker["identified_by"], "build_id");
    assert!(asker["build_id"].as_str().unwrap().len() == 40);
    assert!(
        f["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|fr| fr["symbol"] == "pthread_create"),
        "the stack goes through pthread_create: {f:#}"
    );
    assert_eq!(
        f["start_routine"]["module"], f["module"],
        "the pool's thread function is OpenBLAS's too"
    );
}

/// libgomp exits right after its failure: attribution must not need the
/// process.
#[test]
fn openmp_is_attributed_to_libgomp_after_the_process_exits() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!(
        "echo pid=$$; ulimit -u 4; OMP_NUM_THREADS=16 exec {}",
        omp.display()
    ));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let rec = t.stop();
    let f = only_failure(&rec, pid);
    assert_eq!(f["library"], "libgomp", "{f:#}");
    assert!(
        f["module"].as_str().unwrap().contains("libgomp.so"),
        "{f:#}"
    );
    assert!(f["symbol"].is_string(), "a named libgomp function: {f:#}");
    assert!(asker_frame(&f)["module"]
        .as_str()
        .unwrap()
        .contains("libgomp.so"));
}

/// The program asked itself: the executable's name, and its function.
#[test]
fn a_program_calling_pthread_create_is_named_by_its_executable() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!("ulimit -u 8; exec {} 32", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let fails = rec.of_pid("thread_create_failed", pid);
    assert_eq!(
        fails.len() as u64,
        field(&out, "failed").unwrap().parse::<u64>().unwrap()
    );
    for f in fails {
        assert_eq!(f["library"], "thread_burst", "{f:#}");
        assert_eq!(f["symbol"], "main", "{f:#}");
        assert_eq!(f["module"], burst.display().to_string());
        assert_eq!(f["start_routine"]["symbol"], "worker", "{f:#}");
    }
}

/// A tmpfs mounted at a directory of the scratch one, unmounted when
/// dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(name: &str) -> Tmpfs {
        let dir = scratch().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "threadtrace-e2e"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            std::process::Command::new("umount")
                .args(lazy.then_some("-l"))
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// The program on a mount of its own (a tmpfs /tmp, a separate /home or
/// /opt): named by its whole path, not the path inside its mount, and
/// read by that path once it has exited.
#[test]
fn a_program_on_a_mount_of_its_own_is_named_by_its_whole_path() {
    if !require_root() {
        return;
    }
    let built = compile_c("thread_burst", &["-pthread"]);
    let mount = Tmpfs::mount("own-mount");
    let bin = mount.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let burst = bin.join("thread_burst");
    std::fs::copy(&built, &burst).unwrap();
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!("ulimit -u 8; exec {} 32", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid")
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)))
        .parse()
        .unwrap();
    let fails = rec.of_pid("thread_create_failed", pid);
    assert!(!fails.is_empty(), "no failure for pid {pid}");
    for f in fails {
        assert_eq!(f["module"], burst.display().to_string(), "{f:#}");
        assert_eq!(f["library"], "thread_burst", "{f:#}");
        assert_eq!(f["symbol"], "main", "{f:#}");
        assert_eq!(f["start_routine"]["module"], f["module"], "{f:#}");
        assert_eq!(f["start_routine"]["symbol"], "worker", "{f:#}");
    }
}

/// A fork that does not come through pthread_create, in code without
/// frame pointers (glibc's fork, the Python interpreter): unwound with
/// .eh_frame and attributed to the interpreter, though the process exits
/// right after with BlockingIOError.
#[test]
fn python_subprocess_fork_is_unwound_past_libc() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let out = as_nobody("echo pid=$$; ulimit -u 1; exec /usr/bin/python3 -c 'import subprocess; subprocess.run([\"true\"])'");
    let rec = t.stop();
    assert!(String::from_utf8_lossy(&out.stderr).contains("BlockingIOError"));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let clone = rec
        .of_pid("thread_create_failed", pid)
        .into_iter()
        .find(|f| f["api"] == "clone")
        .cloned()
        .expect("glibc's fork is the clone syscall");
    assert!(
        clone["library"].as_str().unwrap().starts_with("python3"),
        "{clone:#}"
    );
    let stack = clone["stack"].as_array().unwrap();
    assert!(
        stack[0]["module"].as_str().unwrap().contains("libc.so"),
        "{clone:#}"
    );
    assert!(
        stack.len() >= 5,
        "unwound past libc into the interpreter: {clone:#}"
    );
    assert!(stack
        .iter()
        .any(|f| f["module"].as_str().is_some_and(|m| m.contains("python3"))));
}

/// Live threads per (process, library), read from glibc's own list of
/// each process's threads: those created before recording started are
/// attributed too.
#[test]
fn live_threads_are_counted_per_creating_library() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let spawn = |n: &str| {
        std::process::Command::new(&burst)
            .args([n, "0", "120000"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut before = spawn("12");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = Tracer::start(&[]);
    let mut during = spawn("7");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rec = t.stop();
    let threads = rec.summary()["threads"].as_array().unwrap().clone();
    let live = |pid: u32, lib: &str| {
        threads
            .iter()
            .find(|t| t["pid"] == pid && t["library"] == lib)
            .map(|t| t["live"].as_i64().unwrap())
    };
    assert_eq!(live(before.id(), "thread_burst"), Some(12), "{threads:#?}");
    assert_eq!(live(before.id(), "unattributed"), None);
    assert_eq!(live(during.id(), "thread_burst"), Some(7), "{threads:#?}");
    assert_eq!(live(during.id(), "unattributed"), None);
    before.kill().unwrap();
    during.kill().unwrap();
    before.wait().unwrap();
    during.wait().unwrap();
}

/// seeds/000 as a pip user has it: numpy's wheel vendors OpenBLAS as
/// numpy.libs/libscipy_openblas64_-HASH.so, with no build id, and the
/// process dies at `import numpy`.
#[test]
fn pypi_numpy_openblas_without_build_id_is_attributed() {
    if !require_root() {
        return;
    }
    let site = pypi_numpy();
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!(
        "echo pid=$$; ulimit -u 1; PYTHONPATH={} exec /usr/bin/python3 -c 'import numpy'",
        site.display()
    ));
    let rec = t.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pthread_create failed"), "{stderr}");
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let f = only_failure(&rec, pid);
    assert_eq!(f["library"], "libopenblas", "{f:#}");
    let module = f["module"].as_str().unwrap();
    assert!(module.contains("numpy.libs/libscipy_openblas"), "{f:#}");
    assert_eq!(f["symbol"], "blas_thread_init", "{f:#}");
    let asker = asker_frame(&f);
    assert_eq!(asker["identified_by"], "inode", "{f:#}");
    assert!(asker["build_id"].is_null());
    let s = rec.summary();
    assert_eq!(s["attribution"]["attributed"], 1, "{s:#}");
    assert_eq!(s["attribution"]["unattributed"], 0, "{s:#}");
}

/// A library without a build id, loaded with dlopen long after exec,
/// fails to create a thread and the program `_exit`s at once, while both
/// CPUs are busy: the failure must still name the library and function,
/// every time.
#[test]
fn dlopened_library_without_build_id_in_a_process_that_exits_at_once() {
    if !require_root() {
        return;
    }
    const RUNS: usize = 20;
    let dir = nobody_dir("dlopen-nobuildid");
    let lib = dir.join("libspawner.so");
    compile_c_lib("spawner", &lib, &["-Wl,--build-id=none"]);
    let prog = compile_c("dlopen_spawn", &["-ldl"]);
    let load = CpuLoad::start();
    let t = Tracer::start(&[]);
    let mut pids = Vec::new();
    for _ in 0..RUNS {
        let out = as_nobody(&format!(
            "ulimit -u 1; exec {} {} 4",
            prog.display(),
            lib.display()
        ));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        pids.push(field(&out, "pid").unwrap().parse::<u32>().unwrap());
    }
    let rec = t.stop();
    drop(load);
    let mut attributed = 0;
    for pid in &pids {
        let f = only_failure(&rec, *pid);
        assert!(
            f["library"] == "libspawner" && f["symbol"] == "spawn_workers",
            "run of pid {pid}: {f:#}"
        );
        assert_eq!(f["module"], lib.display().to_string());
        let asker = asker_frame(&f);
        assert_eq!(asker["identified_by"], "inode");
        assert!(asker["build_id"].is_null());
        assert_eq!(
            f["start_routine"]["module"],
            lib.display().to_string(),
            "{f:#}"
        );
        attributed += 1;
    }
    eprintln!("attributed {attributed} of {RUNS} with both CPUs busy");
}

/// The library is replaced on disk right after the failure, before the
/// program exits: the event names the function of the file that was
/// mapped, or says it cannot, never a function of the new file.
#[test]
fn a_library_replaced_after_the_failure_is_never_misread() {
    if !require_root() {
        return;
    }
    let prog = compile_c("dlopen_spawn", &["-ldl"]);
    for mode in ["rename", "inplace"] {
        let dir = nobody_dir(&format!("replaced-{mode}"));
        let lib = dir.join("libspawner.so");
        let decoy = dir.join("libdecoy.so");
        compile_c_lib("spawner", &lib, &["-Wl,--build-id=none"]);
        compile_c_lib("decoy", &decoy, &["-Wl,--build-id=none"]);
        for p in [&lib, &decoy] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
        let t = Tracer::start(&[]);
        let out = as_nobody(&format!(
            "ulimit -u 1; exec {} {} 4 {mode} {}",
            prog.display(),
            lib.display(),
            decoy.display()
        ));
        let rec = t.stop();
        let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
        let f = only_failure(&rec, pid);
        let text = f.to_string();
        assert!(!text.contains("decoy_never_ran"), "{mode}: {f:#}");
        let named = f["symbol"] == "spawn_workers";
        let said_why = f["symbol"].is_null()
            && f["attribution_gap"]
                .as_str()
                .is_some_and(|w| w.contains("libspawner.so"));
        assert!(named || said_why, "{mode}: {f:#}");
        assert!(Path::new(&lib).exists());
    }
}

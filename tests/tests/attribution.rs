//! Who wanted the thread, on real distribution binaries built without
//! frame pointers: Debian's OpenBLAS (through numpy), libgomp, and a
//! program calling pthread_create itself.
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
    assert_eq!(f["library"], "libopenblas", "{f:#}");
    assert_eq!(f["symbol"], "blas_thread_init", "{f:#}");
    assert!(f["module"].as_str().unwrap().contains("openblas"), "{f:#}");
    assert_eq!(f["stack"][0]["module"], f["module"]);
    assert!(f["stack"][0]["build_id"].as_str().unwrap().len() == 40);
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
    assert!(f["stack"][0]["module"]
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

/// Live threads per (process, library): threads created while recording
/// are counted under their creator; those from before are "unattributed".
#[test]
fn live_threads_are_counted_per_creating_library() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let spawn = |n: &str| {
        std::process::Command::new(&burst)
            .args([n, "0", "5000"])
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
    assert_eq!(live(before.id(), "unattributed"), Some(12), "{threads:#?}");
    assert_eq!(live(before.id(), "thread_burst"), None);
    assert_eq!(live(during.id(), "thread_burst"), Some(7), "{threads:#?}");
    assert_eq!(live(during.id(), "unattributed"), None);
    before.kill().unwrap();
    during.kill().unwrap();
    before.wait().unwrap();
    during.wait().unwrap();
}

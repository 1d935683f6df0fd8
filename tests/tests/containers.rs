//! Processes with a libc of their own (a container's, a chroot's; here a
//! copy, a new inode) are seen from their first instruction: failures are
//! caught at the syscalls, nothing is attached to a libc. Their files are
//! named as the process sees them and read inside its root, also after
//! the container's last process has exited.
use std::path::{Path, PathBuf};

use threadtrace_e2e::*;

fn host_libc() -> PathBuf {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("glibc")
}

/// A root directory with its own copy of libc, the loader and thread_burst.
fn mini_root(name: &str) -> PathBuf {
    let burst = compile_c("thread_burst", &["-pthread"]);
    let root = scratch().join(name);
    let lib = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    std::fs::copy(host_libc(), lib.join("libc.so.6")).unwrap();
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::copy(&burst, root.join("thread_burst")).unwrap();
    root
}

fn run_in(
    root: &Path,
    cg: &Cgroup,
    unshare: &str,
    delay_ms: u32,
) -> (u32, u64, std::process::Output) {
    let out = bash(&format!(
        "echo $$ > {}/cgroup.procs; exec {unshare} chroot {} /thread_burst 32 {delay_ms}",
        cg.path.display(),
        root.display()
    ));
    let pid = field(&out, "pid")
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)))
        .parse()
        .unwrap();
    let failed = field(&out, "failed").unwrap().parse().unwrap();
    (pid, failed, out)
}

fn assert_all_via_pthread_create(rec: &Records, pid: u32, failed: u64) {
    assert!(failed > 0);
    let fails = rec.of_pid("thread_create_failed", pid);
    assert_eq!(fails.len() as u64, failed, "{fails:#?}");
    assert!(
        fails
            .iter()
            .all(|f| f["api"] == "pthread_create" && f["syscall"] == "clone3"),
        "{fails:#?}"
    );
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
}

#[test]
fn a_container_is_seen_from_its_first_instruction() {
    if !require_root() {
        return;
    }
    let root = mini_root("container");
    let cg = Cgroup::new("pids", "container");
    cg.set_pids_max(6);
    let t = Tracer::start(&[]);
    // No delay: the program creates its threads as soon as it starts, and
    // exits right after.
    let (pid, failed, _) = run_in(&root, &cg, "unshare -m", 0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let rec = t.stop();
    assert_all_via_pthread_create(&rec, pid, failed);
    // Named as the container sees its files.
    for f in rec.of_pid("thread_create_failed", pid) {
        assert_eq!(f["module"], "/thread_burst", "{f:#}");
        assert_eq!(f["library"], "thread_burst");
        assert_eq!(f["symbol"], "main");
        assert_eq!(f["start_routine"]["symbol"], "worker", "{f:#}");
    }
}

#[test]
fn a_chroot_in_our_own_namespace_is_seen_too() {
    if !require_root() {
        return;
    }
    let root = mini_root("chroot");
    let cg = Cgroup::new("pids", "chroot");
    cg.set_pids_max(6);
    let t = Tracer::start(&[]);
    let (pid, failed, _) = run_in(&root, &cg, "", 0);
    let rec = t.stop();
    assert_all_via_pthread_create(&rec, pid, failed);
    let f = rec.of_pid("thread_create_failed", pid)[0].clone();
    assert_eq!(f["library"], "thread_burst", "{f:#}");
}

//! Files an unprivileged process maps to steer, hang or bloat the tracer
//! while it attributes a failure: a huge sparse memfd on the stack's path,
//! a library path that turns into a FIFO, a thousand distinct libraries.
//! Attribution reads only the files the stack passes through, opens them
//! without side effects (O_PATH, then a regular-file check), reads bounded
//! ranges, and keeps no descriptor open.
use std::{
    os::unix::fs::FileTypeExt,
    time::{Duration, Instant},
};

use threadtrace_e2e::*;

fn spawner_lib(dir: &std::path::Path) -> std::path::PathBuf {
    let lib = dir.join("libspawner.so");
    compile_c_lib("spawner", &lib, &[]);
    std::os::unix::fs::chown(&lib, Some(65534), Some(65534)).unwrap();
    lib
}

/// Stops the tracer, and says how long that took.
fn stop_timed(t: Tracer) -> (Records, Duration) {
    let t0 = Instant::now();
    let rec = t.stop();
    (rec, t0.elapsed())
}

#[test]
fn a_huge_sparse_memfd_on_the_stack_is_read_in_bounded_pieces() {
    if !require_root() {
        return;
    }
    let dir = nobody_dir("hostile-memfd");
    let lib = spawner_lib(&dir);
    let prog = compile_c("hostile_maps", &["-ldl"]);
    let t = Tracer::start(&[]);
    let before = rss_kib(t.pid());
    let out = as_nobody(&format!(
        "ulimit -u 1; exec {} memfd {} 8",
        prog.display(),
        lib.display()
    ));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(t.pid());
    let (rec, took) = stop_timed(t);
    let f = rec.of_pid("thread_create_failed", pid)[0].clone();
    assert_eq!(
        f["symbol"], "spawn_workers",
        "read through the memfd: {f:#}"
    );
    assert!(
        f["module"].as_str().unwrap().starts_with("/memfd:spawner"),
        "{f:#}"
    );
    eprintln!("tracer RSS {before} KiB before, {after} KiB after an 8 GiB memfd");
    assert!(after < before + 64 * 1024, "{before} → {after} KiB");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}

#[test]
fn a_library_path_that_became_a_fifo_does_not_hang_the_tracer() {
    if !require_root() {
        return;
    }
    let dir = nobody_dir("hostile-fifo");
    let lib = spawner_lib(&dir);
    let prog = compile_c("hostile_maps", &["-ldl"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!(
        "ulimit -u 1; exec {} fifo {}",
        prog.display(),
        lib.display()
    ));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert!(std::fs::metadata(&lib).unwrap().file_type().is_fifo());
    std::thread::sleep(Duration::from_millis(500));
    let (rec, took) = stop_timed(t);
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    let f = rec.of_pid("thread_create_failed", pid)[0].clone();
    // Attributed through the live mapping, or unattributed, saying why:
    // never blocked on the FIFO.
    assert!(
        f["symbol"] == "spawn_workers" || f["attribution_gap"].is_string(),
        "{f:#}"
    );
}

/// Copies of a library, each with its own build id (the note's last bytes
/// patched), each a new inode.
fn distinct_copies(lib: &std::path::Path, dir: &std::path::Path, n: usize) {
    let bytes = std::fs::read(lib).unwrap();
    // NT_GNU_BUILD_ID: namesz 4, descsz 20, type 3, "GNU\0", 20 bytes.
    let note: &[u8] = &[4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, b'G', b'N', b'U', 0];
    let at = bytes
        .windows(note.len())
        .position(|w| w == note)
        .expect("a build id note")
        + note.len();
    for i in 0..n {
        let mut b = bytes.clone();
        b[at + 16..at + 20].copy_from_slice(&(i as u32).to_le_bytes());
        let p = dir.join(format!("lib{i}.so"));
        std::fs::write(&p, &b).unwrap();
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status();
}

#[test]
fn a_thousand_distinct_libraries_leave_no_descriptors_behind() {
    if !require_root() {
        return;
    }
    const LIBS: usize = 1000;
    let dir = nobody_dir("hostile-many");
    let lib = spawner_lib(&scratch());
    distinct_copies(&lib, &dir, LIBS);
    let prog = compile_c("hostile_maps", &["-ldl"]);
    let t = Tracer::start(&[]);
    let fds_before = fd_count(t.pid());
    let out = as_nobody(&format!(
        "ulimit -u 1; exec {} many {} {LIBS}",
        prog.display(),
        dir.display()
    ));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let fds_after = fd_count(t.pid());
    let rec = t.stop();
    let f = rec.of_pid("thread_create_failed", pid)[0].clone();
    assert_eq!(f["library"], format!("lib{}", LIBS - 1), "{f:#}");
    assert_eq!(f["symbol"], "spawn_workers");
    eprintln!("tracer fds: {fds_before} before, {fds_after} after {LIBS} libraries");
    assert!(fds_after <= fds_before + 4, "{fds_before} → {fds_after}");
}

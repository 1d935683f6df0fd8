//! Limits changed by prlimit(1) on another process and by a program on
//! itself, through both syscalls.
use std::process::Command;

use threadtrace_e2e::*;

#[test]
fn prlimit_on_another_process() {
    if !require_root() {
        return;
    }
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let tpid = target.id();
    let t = Tracer::start(&[]);
    let out = bash(&format!(
        "echo pid=$$; exec prlimit --pid {tpid} --nproc=100:200"
    ));
    let rec = t.stop();
    target.kill().unwrap();
    target.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();

    let c: Vec<_> = rec
        .of_pid("rlimit_change", pid)
        .into_iter()
        .filter(|c| c["resource"] == "RLIMIT_NPROC")
        .collect();
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = c[0];
    assert_eq!(c["api"], "prlimit64");
    assert_eq!(c["comm"], "prlimit");
    assert_eq!(c["target_pid"], tpid);
    assert_eq!(c["target_comm"], "sleep");
    assert_eq!(c["new"]["soft"], 100);
    assert_eq!(c["new"]["hard"], 200);
    assert_eq!(c["result"], 0);
    assert_eq!(c["changed"], true);
}

#[test]
fn a_program_sets_its_own_limits() {
    if !require_root() {
        return;
    }
    let prog = compile_c("set_limits", &[]);
    let t = Tracer::start(&[]);
    let out = bash(&format!("ulimit -n 20000; exec {}", prog.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert_eq!(field(&out, "r1").as_deref(), Some("0"));
    assert_eq!(field(&out, "r2").as_deref(), Some("0"));
    let before_soft: u64 = field(&out, "before_soft").unwrap().parse().unwrap();

    let c: Vec<_> = rec
        .of_pid("rlimit_change", pid)
        .into_iter()
        // Only the program's own calls: bash's `ulimit -n` before exec
        // shares the pid.
        .filter(|c| c["resource"] == "RLIMIT_NOFILE" && c["comm"] == "set_limits")
        .collect();
    assert_eq!(c.len(), 2, "{c:#?}");
    // glibc's setrlimit() is the prlimit64 syscall on the caller itself.
    assert_eq!(c[0]["api"], "prlimit64");
    assert_eq!(c[0]["target_pid"], pid);
    assert_eq!(c[0]["new"]["soft"], 512);
    assert_eq!(c[0]["new"]["hard"], 4096);
    assert_eq!(c[0]["old"]["soft"], before_soft);
    // The setrlimit syscall proper, with the limit in force before it.
    assert_eq!(c[1]["api"], "setrlimit");
    assert_eq!(c[1]["new"]["soft"], 256);
    assert_eq!(c[1]["new"]["hard"], 2048);
    assert_eq!(c[1]["old"]["soft"], 512);
    assert_eq!(c[1]["old"]["hard"], 4096);
}

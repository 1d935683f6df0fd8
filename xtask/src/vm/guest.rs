//! One guest: a kernel booted by virtme-ng over the host's own root
//! filesystem (read-only; /tmp and /etc are throw-away overlays), running
//! one shell script as root and powering off.
//!
//! The script talks back on the console: lines starting with [`MARK`] are
//! for xtask (the guest's kernel, each test's result, the exit status);
//! everything else is passed through. Nothing is written to the host.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;
use crate::{bootstrap, root_dir, sh};

/// Prefix of the lines the guest's script writes for xtask.
pub const MARK: &str = "@@threadtrace-vm ";

/// The virtme-ng release these scripts were written against.
const VIRTME_NG: &str = "virtme-ng==1.42";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Cgroup {
    /// cgroup2 alone on /sys/fs/cgroup, the pids, memory and cpu
    /// controllers enabled below the root (systemd's default).
    V2,
    /// systemd's hybrid layout: one v1 hierarchy per controller, cgroup2
    /// on /sys/fs/cgroup/unified.
    V1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kvm {
    /// KVM when /dev/kvm is there and a guest boots with it (tried once
    /// per host boot), else emulation.
    Auto,
    On,
    Off,
}

pub struct Boot {
    pub kernel: Kernel,
    pub cgroup: Cgroup,
    pub memory: String,
    pub cpus: u32,
    pub kvm: bool,
    pub timeout: Duration,
    /// A host directory the guest may write (its files land on the host).
    pub out: Option<PathBuf>,
}

/// What the guest said back.
pub struct Outcome {
    /// The script's exit status; None when the guest died or timed out
    /// before saying it.
    pub exit: Option<i32>,
    /// `MARK` lines, without the prefix.
    pub said: Vec<String>,
    pub seconds: f64,
}

/// Packages the guests need on the host: qemu, and python's venv for
/// virtme-ng (from PyPI: Debian 12 does not package it).
pub fn prepare() -> Result<PathBuf> {
    bootstrap::apt_install(&["qemu-system-x86", "python3-venv", "busybox-static"], &[])?;
    let venv = root_dir().join("target/xtask/vm/venv");
    let vng = venv.join("bin/vng");
    let works = Command::new(&vng)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!("xtask: installing {VIRTME_NG} into {}", venv.display());
        sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        sh(Command::new(venv.join("bin/pip")).args(["install", "--quiet", VIRTME_NG]))?;
    }
    Ok(vng)
}

/// Whether guests here can use KVM. Nested virtualization is often
/// offered (/dev/kvm exists) and then hangs right after the boot loader,
/// so it is tried once with a short timeout and the verdict kept until
/// the host reboots.
pub fn kvm_works(vng: &PathBuf, kernel: &Kernel) -> Result<bool> {
    if std::fs::File::open("/dev/kvm").is_err() {
        return Ok(false);
    }
    let verdict = PathBuf::from("/run/threadtrace-xtask-vm/kvm");
    if let Ok(v) = std::fs::read_to_string(&verdict) {
        return Ok(v.trim() == "works");
    }
    eprintln!("xtask: trying KVM once (a guest that does not answer in 60 s means no)");
    let probe = Boot {
        kernel: kernel.clone(),
        cgroup: Cgroup::V2,
        memory: "1G".into(),
        cpus: 1,
        kvm: true,
        timeout: Duration::from_secs(60),
        out: None,
    };
    let works = run(vng, &probe, "true", &[], true).is_ok_and(|o| o.exit == Some(0));
    std::fs::create_dir_all(verdict.parent().unwrap())?;
    std::fs::write(&verdict, if works { "works\n" } else { "hangs\n" })?;
    eprintln!(
        "xtask: KVM {}",
        if works {
            "works"
        } else {
            "does not work here: guests are emulated (TCG)"
        }
    );
    Ok(works)
}

/// Boots the guest, runs `script` in it as root with `env`, and returns
/// what it said. `quiet` keeps its console to itself.
pub fn run(
    vng: &PathBuf,
    boot: &Boot,
    script: &str,
    env: &[(String, String)],
    quiet: bool,
) -> Result<Outcome> {
    let dir = root_dir().join("target/xtask/vm/run");
    std::fs::create_dir_all(&dir)?;
    let inner = dir.join(format!("guest-{}.sh", std::process::id()));
    std::fs::write(&inner, inner_script(boot.cgroup, script, env))?;
    set_mode(&inner, 0o755)?;
    let _lock = lock()?;
    let mut cmd = Command::new(vng);
    if !boot.kvm {
        cmd.arg("--disable-kvm");
    }
    if let Some(out) = &boot.out {
        cmd.arg(format!("--rwdir={}", out.display()));
    }
    cmd.arg("-r")
        .arg(&boot.kernel.image)
        .args(["--memory", &boot.memory, "--cpus", &boot.cpus.to_string()])
        .arg("--")
        .arg(&inner)
        .env(
            "PATH",
            format!(
                "{}:{}",
                vng.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so that qemu goes with it on a timeout or
        // Ctrl-C.
        .process_group(0);
    if !quiet {
        eprintln!(
            "xtask: booting {} ({}, cgroup {}) in a guest",
            boot.kernel.release,
            if boot.kvm { "KVM" } else { "emulated: TCG" },
            match boot.cgroup {
                Cgroup::V2 => "v2",
                Cgroup::V1 => "v1 hybrid",
            }
        );
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", vng.display()))?;
    let group = child.id() as i32;
    let stdout = child.stdout.take().unwrap();
    // qemu pads its console with NULs: what reaches the terminal is
    // filtered, line by line.
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut err = std::io::stderr();
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let line: Vec<u8> = line.into_iter().filter(|&b| b != 0).collect();
            if !quiet && !line.is_empty() {
                let _ = writeln!(err, "{}", String::from_utf8_lossy(&line).trim_end());
            }
        }
    });
    let reader = std::thread::spawn(move || {
        let mut said = Vec::new();
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line: Vec<u8> = line.into_iter().filter(|&b| b != 0).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            if let Some(m) = line.find(MARK) {
                let mark = &line[m + MARK.len()..];
                if let (false, Some(r)) = (quiet, mark.strip_prefix("result ")) {
                    eprintln!("xtask: in the guest: {r}");
                }
                said.push(mark.to_string());
            } else if !quiet {
                let _ = writeln!(out, "{line}");
            }
        }
        said
    });
    interrupt::install();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > boot.timeout || interrupt::requested() {
            kill_group(group);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = reader.join().unwrap_or_default();
    let _ = errors.join();
    let _ = std::fs::remove_file(&inner);
    if interrupt::requested() {
        bail!("interrupted: the guest was stopped");
    }
    let exit = said
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("exit ")?.trim().parse().ok());
    if status.is_none() && !quiet {
        eprintln!(
            "xtask: the guest was stopped after {} s (--timeout)",
            boot.timeout.as_secs()
        );
    }
    Ok(Outcome {
        exit,
        said,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn kill_group(group: i32) {
    // SAFETY: plain kill(2) of the group we made.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: same.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

fn set_mode(path: &PathBuf, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// One guest at a time on a host: two emulated guests on two cores make
/// both too slow for the tests' timeouts.
fn lock() -> Result<std::fs::File> {
    let path = "/run/lock/threadtrace-xtask-vm.lock";
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {path}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("xtask: another guest is running; waiting for it");
        // SAFETY: same.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {path}");
        }
    }
    Ok(f)
}

/// The script the guest runs: the cgroup layout, a scratch tmpfs as
/// TMPDIR (on a mount of its own, as /tmp is on most distributions), the
/// environment, then `script`; its status last, as a `MARK` line.
fn inner_script(cgroup: Cgroup, script: &str, env: &[(String, String)]) -> String {
    let mut s = String::from(GUEST_PRELUDE);
    s.push_str(match cgroup {
        Cgroup::V2 => CGROUP_V2,
        Cgroup::V1 => CGROUP_V1,
    });
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str(&format!(
        "cd {} || exit 1\n",
        shell_quote(&root_dir().to_string_lossy())
    ));
    s.push_str(&format!("bash -c {}\n", shell_quote(script)));
    s.push_str(&format!("echo \"{MARK}exit $?\"\n"));
    s
}

const GUEST_PRELUDE: &str = r#"#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
echo "@@threadtrace-vm kernel $(uname -r)"
ip link set lo up 2>/dev/null
mkdir -p /tmp/threadtrace-vm && mount -t tmpfs -o mode=1777 tmpfs /tmp/threadtrace-vm
export TMPDIR=/tmp/threadtrace-vm
"#;

const CGROUP_V2: &str = r#"for c in cpu memory pids; do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || echo "guest: cannot enable the $c controller"
done
echo "@@threadtrace-vm cgroup v2: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
"#;

// systemd.unified_cgroup_hierarchy=0 needs systemd as init, which the
// guest does not run: the hybrid layout is mounted by hand, before any
// controller is enabled on v2 (a controller binds to one hierarchy).
const CGROUP_V1: &str = r#"mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup /sys/fs/cgroup
v1=""
for c in $(awk 'NR>1 && $4==1 {print $1}' /proc/cgroups); do
  mkdir -p /sys/fs/cgroup/$c
  if mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c 2>/dev/null; then v1="$v1 $c"
  else rmdir /sys/fs/cgroup/$c; echo "guest: this kernel cannot mount $c as cgroup v1"; fi
done
mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified
echo "@@threadtrace-vm cgroup v1:$v1"
"#;

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Ctrl-C, SIGTERM and SIGHUP stop the guest instead of leaving qemu
/// behind in its own process group.
mod interrupt {
    use super::{AtomicBool, Ordering};

    static REQUESTED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        REQUESTED.store(true, Ordering::SeqCst);
    }

    pub fn install() {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
    }

    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_a_script_one_word() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let s = inner_script(
            Cgroup::V2,
            "echo 'a b'; exit 3",
            &[("K".into(), "v w".into())],
        );
        assert!(s.contains("export K='v w'\n"), "{s}");
        assert!(s.contains(r"bash -c 'echo '\''a b'\''; exit 3'"), "{s}");
        assert!(
            s.trim_end().ends_with(&format!("echo \"{MARK}exit $?\"")),
            "{s}"
        );
    }

    #[test]
    fn each_layout_has_its_mounts() {
        assert!(inner_script(Cgroup::V2, "true", &[]).contains("cgroup.subtree_control"));
        let v1 = inner_script(Cgroup::V1, "true", &[]);
        assert!(v1.contains("mount -t cgroup -o $c") && v1.contains("/sys/fs/cgroup/unified"));
    }
}

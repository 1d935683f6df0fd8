//! What `--growth-only` and `--headroom-only` share: a host of idle
//! processes, a tracer run on it, and what it costs: its on-CPU time from
//! schedstat (ns, all threads) and its VmRSS at the end of a run.
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Idle processes (`sleep 3600`), killed when dropped.
pub struct Idle {
    procs: Vec<Child>,
    /// Whose they are; None: ours.
    uid: Option<u32>,
}

impl Drop for Idle {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
        }
        for c in &mut self.procs {
            let _ = c.wait();
        }
    }
}

impl Idle {
    /// `n` idle processes of user `uid` (None: ours).
    pub fn start(n: usize, uid: Option<u32>) -> Result<Idle> {
        let mut v = Idle {
            procs: Vec::with_capacity(n),
            uid,
        };
        v.grow_to(n)?;
        Ok(v)
    }

    /// More of them, `n` in all.
    pub fn grow_to(&mut self, n: usize) -> Result<()> {
        while self.procs.len() < n {
            let mut cmd = Command::new("sleep");
            cmd.arg("3600").current_dir("/").stdin(Stdio::null());
            if let Some(uid) = self.uid {
                cmd.uid(uid).gid(uid);
            }
            self.procs.push(cmd.spawn().context("cannot start sleep")?);
        }
        Ok(())
    }
}

/// Processes on the host now.
pub fn host_processes() -> Result<usize> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count())
}

/// "Kernel 6.1.0, 2 CPUs."
pub fn machine_line() -> String {
    format!(
        "Kernel {}, {} CPUs.",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

/// A tracer, with its stderr collected line by line.
struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tracer {
    fn start(bin: &Path, args: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(bin)
            .args(["record", "--json", "--no-tui"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let (started_tx, started) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"kind\":\"started\"") {
                    let _ = started_tx.send(());
                }
            }
        });
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        if started.recv_timeout(Duration::from_secs(60)).is_err() {
            bail!("the tracer did not start within 60 s");
        }
        Ok(Tracer { child, stderr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then what it logged. Measurements are taken before: a
    /// tracer still draining a busy host's events a minute later is
    /// killed, said, and not an error.
    fn stop(mut self) -> Result<Vec<String>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "xtask: bench: tracer {} still running 60 s after SIGINT: killed",
                    self.pid()
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread has the last lines once the pipe is closed.
        std::thread::sleep(Duration::from_millis(100));
        Ok(self.stderr.try_iter().collect())
    }
}

/// On-CPU time of a process, all its threads, in seconds.
fn on_cpu_s(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(t?.path().join("schedstat")).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ns as f64 / 1e9)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// (CPU % of one core over `seconds` after `warm_up`, RSS MiB at the end)
/// of a tracer run with these arguments.
pub fn measure(bin: &Path, args: &[&str], warm_up: Duration, seconds: u64) -> Result<(f64, f64)> {
    let t = Tracer::start(bin, args)?;
    std::thread::sleep(warm_up);
    let (c0, w0) = (on_cpu_s(t.pid())?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = (on_cpu_s(t.pid())? - c0) / w0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib(t.pid())?;
    t.stop()?;
    Ok((cpu, rss))
}

/// What a tracer run with these arguments for `run` logged on stderr.
pub fn logged(bin: &Path, args: &[&str], run: Duration) -> Result<Vec<String>> {
    let t = Tracer::start(bin, args)?;
    std::thread::sleep(run);
    t.stop()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

pub fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_of_values() {
        assert_eq!(range(&[2.0, 0.5, 1.0]), (0.5, 2.0));
    }
}

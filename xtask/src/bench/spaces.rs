//! What the address-space history costs the collector: its memory with
//! N live processes that each map a few libraries, and the start-up when
//! they are all there to be read from /proc.
use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{threadtrace, work_dir, Running};

pub struct Spaces {
    processes: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// The tracer's own account at the end (`-v`): processes, mappings.
    logged: Option<String>,
    startup_ms: f64,
}

fn rss_kib(pid: u32) -> Result<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// The processes, killed when dropped.
struct Population(Vec<Child>);

impl Drop for Population {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub fn measure(bin: &Path, sleeper: &Path, n: usize) -> Result<Spaces> {
    let log = work_dir().join("spaces.log");
    let mut c = Command::new(bin);
    c.args(["record", "--json", "-v"])
        .stderr(std::fs::File::create(&log)?);
    let mut tracer = Running::start(c, |l| l.contains("\"kind\":\"started\""))?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_before_kib = rss_kib(tracer.pid())?;
    let mut pop = Population(Vec::with_capacity(n));
    for _ in 0..n {
        pop.0.push(
            Command::new(sleeper)
                .stdout(Stdio::null())
                .spawn()
                .context("spawning the population")?,
        );
    }
    // Every exec and mapping reaches the collector within its 100 ms drain.
    std::thread::sleep(Duration::from_secs(5));
    let rss_after_kib = rss_kib(tracer.pid())?;
    // A second tracer, started with the population there: reads them all.
    let mut second = threadtrace(bin, &[])?;
    let startup_ms = second.startup.as_secs_f64() * 1e3;
    second.stop()?;
    tracer.stop()?;
    drop(pop);
    let logged = std::fs::read_to_string(&log)?.lines().find_map(|l| {
        l.split_once("unreadable); ")
            .map(|(_, r)| r.trim_end_matches(')').to_string() + ")")
    });
    Ok(Spaces {
        processes: n,
        rss_before_kib,
        rss_after_kib,
        logged,
        startup_ms,
    })
}

pub fn section(md: &mut String, s: &Spaces) -> std::fmt::Result {
    writeln!(md, "## Address spaces\n")?;
    writeln!(
        md,
        "{} processes start while threadtrace records, each mapping its executable, the \
         dynamic loader, libc, libm and libz (bench/programs/sleeper.c). The collector \
         keeps every process's executable mappings, so that a failure is attributed after \
         its process has exited.\n",
        s.processes
    )?;
    writeln!(md, "| figure | value |\n| --- | --- |")?;
    writeln!(
        md,
        "| tracer RSS before / with the {} processes | {:.1} MiB / {:.1} MiB (+{:.1} MiB, {:.0} bytes per process, process table included) |",
        s.processes,
        s.rss_before_kib as f64 / 1024.0,
        s.rss_after_kib as f64 / 1024.0,
        s.rss_after_kib.saturating_sub(s.rss_before_kib) as f64 / 1024.0,
        s.rss_after_kib.saturating_sub(s.rss_before_kib) as f64 * 1024.0 / s.processes as f64
    )?;
    writeln!(
        md,
        "| the tracer's count at the end (`-v`) | {} |",
        s.logged.as_deref().unwrap_or("not logged")
    )?;
    writeln!(
        md,
        "| start-up with them all in /proc (their mappings read before `started`) | {:.0} ms |",
        s.startup_ms
    )?;
    writeln!(md)
}

//! Developer and CI tasks: `cargo xtask <bootstrap|build|run|test|fuzz>`.
//!
//! Everything a fresh machine needs is set up here, idempotently, so that
//! the README's two commands are the only ones anybody types.
mod bench;
mod bench_growth;
mod bootstrap;
mod fuzz;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

  bootstrap        install what building needs (nightly rust-src, bpf-linker)
  build [--debug]  build threadtrace (release unless --debug)
  run -- ARGS      build, then run threadtrace ARGS as root (sudo if needed)
  test             bootstrap, install test packages, check formatting and
                   clippy, run unit tests, fuzz the trace reader for 120 s,
                   and run the end-to-end scenarios (as root)
  fuzz [SECONDS]   fuzz the trace reader (default 120 s; cargo-fuzz, nightly)
  bench [--quick]  measure overhead against untraced and bpftrace, storm
                   exactness, CPU, RSS, start-up, symbolization and trace
                   size (as root); writes bench/results.md. --quick: 1 run
                   each, 10k threads, a 10 s storm, to try it out
  bench --storm-seconds N   the storm's length (default 60)
  bench --storm-only        only the storm: bench/storm-{N}s.md
  bench --growth-only       what sampling memory for OOM growers costs with
                            1,000 idle processes: bench/growth.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its command line when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its command line
/// and stderr when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn build(release: bool) -> Result<PathBuf> {
    bootstrap::toolchain()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root_dir())
        .args(["build", "--package", "threadtrace"]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    Ok(root_dir()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("threadtrace"))
}

fn run(args: &[String]) -> Result<ExitCode> {
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match cmd.as_str() {
        "bootstrap" => {
            bootstrap::toolchain()?;
            bootstrap::cargo_fuzz()?;
            bootstrap::test_packages()?;
        }
        "build" => {
            let bin = build(!args.iter().any(|a| a == "--debug"))?;
            println!("{}", bin.display());
        }
        "run" => {
            let bin = build(true)?;
            let rest: Vec<&String> = args.iter().skip(1).skip_while(|a| *a == "--").collect();
            let mut c = if is_root() {
                Command::new(&bin)
            } else {
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            };
            c.args(rest);
            let status = c
                .status()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
        }
        "test" => test()?,
        "bench" if args.iter().any(|a| a == "--growth-only") => {
            let mut o = bench_growth::Options::default();
            if args.iter().any(|a| a == "--quick") {
                o.reps = 1;
                o.seconds = 10;
            }
            let md = bench_growth::run(&build(true)?, &o)?;
            std::fs::write(root_dir().join("bench/growth.md"), &md)?;
            print!("{md}");
        }
        "bench" => {
            let mut o = bench::Options::default();
            let mut rest = args.iter().skip(1);
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--quick" => {
                        o.reps = 1;
                        o.threads = 10_000;
                        o.storm_seconds = 10;
                    }
                    "--storm-only" => o.storm_only = true,
                    "--storm-seconds" => {
                        let v = rest.next().context("--storm-seconds needs a number")?;
                        o.storm_seconds = v
                            .parse()
                            .with_context(|| format!("--storm-seconds {v:?}: not a number"))?;
                    }
                    other => bail!("bench: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            bench::run(&o)?;
        }
        "fuzz" => {
            let seconds = match args.get(1) {
                Some(s) => s
                    .parse()
                    .with_context(|| format!("fuzz: {s:?} is not a number of seconds"))?,
                None => fuzz::DEFAULT_SECONDS,
            };
            fuzz::run(seconds)?;
        }
        "-h" | "--help" | "help" => print!("{USAGE}"),
        other => {
            eprint!("xtask: unknown command {other:?}\n\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Formatting, clippy, unit tests of every crate, then the end-to-end
/// scenarios as root against real programs. In CI a missing root is a
/// failure, not a skip.
fn test() -> Result<()> {
    bootstrap::toolchain()?;
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let root = is_root();
    if root {
        bootstrap::test_packages()?;
    }
    let bin = build(true)?;
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.current_dir(root_dir()).args(args);
        c
    };
    sh(&mut cargo(&["fmt", "--all", "--", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;
    sh(&mut cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems")?;
    // Unit tests only: the end-to-end crate runs below, one scenario at a
    // time, since each one traces the whole host.
    sh(&mut cargo(&[
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "threadtrace-e2e",
        "--exclude",
        "threadtrace-ebpf",
    ]))
    .context("unit tests failed")?;
    fuzz::run(fuzz::DEFAULT_SECONDS)?;
    if !root {
        if ci {
            bail!("CI runs the end-to-end tests as root; this run is not root");
        }
        eprintln!("xtask: end-to-end tests skipped: they load eBPF programs and need root (run `sudo cargo xtask test`)");
        return Ok(());
    }
    sh(cargo(&[
        "test",
        "--release",
        "--package",
        "threadtrace-e2e",
        "--",
        "--test-threads=1",
    ])
    .env("THREADTRACE_BIN", &bin))
    .context("end-to-end tests failed")
}

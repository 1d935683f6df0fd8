//! Developer and CI tasks: `cargo xtask <command>`, one module per command
//! (`cargo xtask --help` lists them).
//!
//! Everything a fresh machine needs is set up here, idempotently, so that
//! the README's two commands are the only ones anybody types.
mod bench;
mod bootstrap;
mod build;
mod fuzz;
mod image;
mod layers;
mod rules;
mod run;
mod test;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Developer and CI tasks of threadtrace.
///
/// Each one sets up what it needs first (nightly's rust-src, bpf-linker,
/// test packages), once.
#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly's rust-src,
    /// bpf-linker, cargo-fuzz and the test packages.
    ///
    /// bpf-linker is built against the LLVM inside the nightly toolchain (a
    /// few minutes, once); the Debian packages the end-to-end tests use are
    /// installed with apt-get, which needs root.
    Bootstrap,
    /// Build threadtrace (release unless --debug) and print the binary's
    /// path.
    Build(build::Args),
    /// Build threadtrace, then run it with ARGS as root (sudo if needed),
    /// exiting with its exit code.
    ///
    /// Everything after `--` goes to threadtrace: `cargo xtask run --
    /// record -o trace.ttr`.
    Run(run::Args),
    /// Every test: formatting, layers, clippy, unit tests, alerting rules,
    /// fuzzing, and the end-to-end scenarios as root.
    ///
    /// Bootstraps, installs the test packages (as root), checks formatting,
    /// the layers of threadtrace's modules (`cargo xtask layers`) and
    /// clippy, runs the unit tests, tests the alerting rules with promtool,
    /// fuzzes the trace reader, report, export and attribution's parsers
    /// for 120 s in all, and runs the end-to-end scenarios one at a time,
    /// as root. Without root the end-to-end scenarios are skipped, except
    /// in CI (CI set), where that is a failure.
    Test,
    /// Check that threadtrace's top-level modules import each other in
    /// layers: no import cycle, and the layering rules hold.
    ///
    /// A module is a file src/x.rs or a directory src/x/; a file imports
    /// module x when its code names crate::x (in a use, a use group or a
    /// path in code, or through super:: up to the crate's root), tests
    /// (#[cfg(test)] items, tests.rs, tests/) aside. Prints each cycle with
    /// the files that make its imports, and fails; otherwise one line.
    Layers(layers::Args),
    /// Build the container image (deploy/container/) offline with buildah,
    /// as target/image/threadtrace-VERSION.oci.tar.
    Image,
    /// Fuzz the trace reader, report, export and attribution's parsers, the
    /// time shared among them (cargo-fuzz, nightly).
    ///
    /// New inputs go to fuzz/corpus/<target>/, a crash's input to
    /// fuzz/artifacts/<target>/.
    Fuzz(fuzz::Args),
    /// Measure what threadtrace costs and whether it counts right, as root:
    /// writes bench/results.md.
    ///
    /// Overhead against untraced and bpftrace (wall and CPU time,
    /// interleaved rounds, 95% intervals), each kernel program's cost, a
    /// failure storm's rate and exactness, the tracer's CPU and RSS,
    /// start-up, address-space memory. Installs bpftrace and bpftool.
    Bench(bench::Args),
    /// Run threadtrace's tests or a command in a qemu guest booting another
    /// kernel (Debian 12's 6.1 by default, 6.12, any .deb or bzImage) over
    /// this host's filesystem, with cgroup v2 unless --cgroup v1.
    ///
    /// Installs qemu, virtme-ng (in target/xtask/vm/venv) and the Debian
    /// kernel packages it boots. Uses KVM when a guest boots with it, else
    /// emulation (TCG): then times are only comparable within one guest.
    /// One guest at a time.
    Vm(vm::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(task: Task) -> Result<ExitCode> {
    match task {
        Task::Bootstrap => bootstrap::run()?,
        Task::Build(args) => build::run(&args)?,
        Task::Run(args) => return run::run(&args),
        Task::Test => test::run()?,
        Task::Layers(args) => layers::run(&args)?,
        Task::Image => image::run()?,
        Task::Fuzz(args) => {
            fuzz::run(args.seconds)?;
        }
        Task::Bench(args) => bench::run(&args)?,
        Task::Vm(args) => return vm::run(&args),
    }
    Ok(ExitCode::SUCCESS)
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

/// The task a command line asks for, as `cargo xtask ARGS` would parse it.
#[cfg(test)]
fn parse(args: &[&str]) -> Result<Task, clap::Error> {
    Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).map(|c| c.command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{parse, Cli, Task};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_or_missing_commands_are_usage_errors() {
        for args in [&["frobnicate"][..], &[]] {
            let e = parse(args).err().expect("an error");
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn fuzz_takes_its_seconds_or_the_default() {
        let seconds = |args: &[&str]| match parse(args).unwrap() {
            Task::Fuzz(a) => a.seconds,
            _ => panic!("not fuzz"),
        };
        assert_eq!(seconds(&["fuzz"]), crate::fuzz::DEFAULT_SECONDS);
        assert_eq!(seconds(&["fuzz", "30"]), 30);
        assert!(parse(&["fuzz", "soon"]).is_err());
    }
}

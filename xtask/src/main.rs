//! Developer and CI tasks: `cargo xtask <bootstrap|build|run|test|fuzz>`.
//!
//! Everything a fresh machine needs is set up here, idempotently, so that
//! the README's two commands are the only ones anybody types.
mod bench;
mod bootstrap;
mod build;
mod fuzz;
mod image;
mod rules;
mod run;
mod test;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

  bootstrap        install what building needs (nightly rust-src, bpf-linker)
  build [--debug] [-v]
                   build threadtrace (release unless --debug; -v shows
                   the eBPF sub-build's progress)
  run -- ARGS      build, then run threadtrace ARGS as root (sudo if needed)
  test             bootstrap, install test packages, check formatting and
                   clippy, run unit tests, test the alerting rules with
                   promtool, fuzz the trace reader, report, export and
                   attribution's parsers for 120 s in all, and run the
                   end-to-end scenarios (as root)
  image            build the container image (deploy/container/) offline with
                   buildah, as target/image/threadtrace-VERSION.oci.tar
  fuzz [SECONDS]   fuzz the trace reader, report, export and attribution's
                   parsers, the time shared among them (default 120 s;
                   cargo-fuzz, nightly)
  bench [--quick]  measure overhead against untraced and bpftrace (wall and
                   CPU time, interleaved rounds, intervals), each kernel
                   program's cost, storm rate and exactness, CPU, RSS,
                   start-up, address-space memory (as root); installs
                   bpftrace and bpftool; writes bench/results.md. --quick:
                   3 rounds, 10k threads, a 10 s storm, to try it out
  bench --storm-seconds N   the storm's length (default 60)
  bench --storm-only        only the storm: bench/storm-{N}s.md
  bench --bin PATH          measure that threadtrace binary (another build)
  bench --out FILE          write the results there, not bench/results.md
  bench --processes N       processes for the address-space figure (5000)
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
            if args.iter().any(|a| a == "-v" || a == "--verbose") {
                // threadtrace's build script then shows the eBPF
                // sub-build's progress, hidden otherwise.
                std::env::set_var("THREADTRACE_BUILD_VERBOSE", "1");
            }
            let bin = build::build(!args.iter().any(|a| a == "--debug"))?;
            println!("{}", bin.display());
        }
        "run" => {
            let rest: Vec<&String> = args.iter().skip(1).skip_while(|a| *a == "--").collect();
            return run::run(&rest);
        }
        "test" => test::run()?,
        "image" => image::run()?,
        "bench" if args.iter().any(|a| a == "--growth-only") => {
            let mut o = bench::growth::Options::default();
            if args.iter().any(|a| a == "--quick") {
                o.reps = 1;
                o.seconds = 10;
            }
            let md = bench::growth::run(&build::build(true)?, &o)?;
            std::fs::write(root_dir().join("bench/growth.md"), &md)?;
            print!("{md}");
        }
        "bench" => {
            let mut o = bench::Options::default();
            let mut rest = args.iter().skip(1);
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--quick" => {
                        o.reps = 3;
                        o.threads = 10_000;
                        o.storm_seconds = 10;
                        o.processes = 500;
                    }
                    "--bin" => {
                        o.bin = Some(rest.next().context("--bin needs a path")?.into());
                    }
                    "--out" => {
                        o.out = Some(rest.next().context("--out needs a path")?.into());
                    }
                    "--processes" => {
                        let v = rest.next().context("--processes needs a number")?;
                        o.processes = v
                            .parse()
                            .with_context(|| format!("--processes {v:?}: not a number"))?;
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

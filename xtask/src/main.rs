//! Developer and CI tasks: `cargo xtask <bootstrap|build|run|test|fuzz>`.
//!
//! Everything a fresh machine needs is set up here, idempotently, so that
//! the README's two commands are the only ones anybody types.
mod bench;
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
            if args.iter().any(|a| a == "-v" || a == "--verbose") {
                // threadtrace's build script then shows the eBPF
                // sub-build's progress, hidden otherwise.
                std::env::set_var("THREADTRACE_BUILD_VERBOSE", "1");
            }
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
        "image" => image()?,
        "bench" if args.iter().any(|a| a == "--growth-only") => {
            let mut o = bench::growth::Options::default();
            if args.iter().any(|a| a == "--quick") {
                o.reps = 1;
                o.seconds = 10;
            }
            let md = bench::growth::run(&build(true)?, &o)?;
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

/// The container image, FROM scratch: the release binary and the
/// libraries it links, as an OCI archive (`podman load -i`, `skopeo copy
/// oci-archive:...` to push it). Buildah's storage stays under target/.
fn image() -> Result<()> {
    let bin = build(true)?;
    let out = root_dir().join("target/image");
    let ctx = out.join("context");
    sh(Command::new(root_dir().join("deploy/container/context.sh"))
        .arg(&bin)
        .arg(&ctx))?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("localhost/threadtrace:{version}");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(out.join("storage"))
            .arg("--runroot")
            .arg(out.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let ctx_s = ctx.display().to_string();
    let file = format!("{ctx_s}/Containerfile");
    sh(&mut buildah(&[
        "build",
        "--layers=false",
        "-f",
        &file,
        "-t",
        &tag,
        &ctx_s,
    ]))?;
    let archive = out.join(format!("threadtrace-{version}.oci.tar"));
    let _ = std::fs::remove_file(&archive);
    let dest = format!("oci-archive:{}:{tag}", archive.display());
    sh(&mut buildah(&["push", &tag, &dest]))?;
    let size = std::fs::metadata(&archive)?.len();
    println!(
        "{} ({:.1} MiB)",
        archive.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// The alerting rules shipped in deploy/prometheus/, against their tests
/// on synthetic series, with Debian's promtool.
fn alert_rules(root: bool, ci: bool) -> Result<()> {
    let dir = root_dir().join("deploy/prometheus");
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() && !root && !ci {
        eprintln!("xtask: alerting rules not tested: promtool is missing (Debian's prometheus package; `sudo cargo xtask test` installs it)");
        return Ok(());
    }
    sh(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "threadtrace.rules.yml",
    ]))
    .context("the alerting rules do not load")?;
    sh(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "threadtrace.rules.test.yml",
    ]))
    .context("the alerting rules' tests failed")
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
    alert_rules(root, ci)?;
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

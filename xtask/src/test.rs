//! `cargo xtask test`: formatting, layers, clippy, unit tests of every
//! crate, the alerting rules, the fuzzers, then the end-to-end scenarios as
//! root against real programs. In CI a missing root is a failure, not a skip.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{bootstrap, build::build, fuzz, is_root, layers, root_dir, rules, sh, vm};

pub fn run() -> Result<()> {
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
    layers::check(&root_dir().join(layers::DEFAULT_SRC))?;
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
    rules::run(root, ci)?;
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
    .context("end-to-end tests failed")?;
    // Users run cgroup v2 and distribution kernels; this host may not.
    vm::scenarios_in_a_guest()
}

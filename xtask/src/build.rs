//! `cargo xtask build`: threadtrace, its eBPF programs built by its build
//! script (aya-build), after setting up the toolchain they need.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{bootstrap, root_dir, sh};

/// Builds threadtrace, release or debug, and returns the binary's path.
/// Every task that runs threadtrace builds it through here.
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

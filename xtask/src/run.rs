//! `cargo xtask run -- ARGS`: the release build of threadtrace with ARGS,
//! as root (through sudo when not root), exiting with its exit code.
use std::{
    ffi::OsStr,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};

use crate::{build::build, is_root};

pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Result<ExitCode> {
    let bin = build(true)?;
    let mut c = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    c.args(args);
    let status = c
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

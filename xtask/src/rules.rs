//! The alerting rules shipped in deploy/prometheus/, against their tests
//! on synthetic series, with Debian's promtool (part of `cargo xtask test`).
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root_dir, sh};

/// A missing promtool is a failure as root (the test task installs it)
/// and in CI, a warning otherwise.
pub fn run(root: bool, ci: bool) -> Result<()> {
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

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

#[derive(clap::Args)]
pub struct Args {
    /// A debug build, target/debug/threadtrace (release otherwise:
    /// target/release/threadtrace).
    #[arg(long)]
    debug: bool,
    /// Show the eBPF sub-build's progress, hidden otherwise (sets
    /// THREADTRACE_BUILD_VERBOSE=1 for threadtrace's build script).
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.verbose {
        std::env::set_var("THREADTRACE_BUILD_VERBOSE", "1");
    }
    println!("{}", build(!args.debug)?.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{parse, Task};

    fn flags(cmdline: &[&str]) -> (bool, bool) {
        match parse(cmdline).unwrap() {
            Task::Build(a) => (a.debug, a.verbose),
            _ => panic!("not build"),
        }
    }

    #[test]
    fn release_unless_debug_and_verbose_with_v() {
        assert_eq!(flags(&["build"]), (false, false));
        assert_eq!(flags(&["build", "--debug", "-v"]), (true, true));
        assert_eq!(flags(&["build", "--verbose"]), (false, true));
    }
}

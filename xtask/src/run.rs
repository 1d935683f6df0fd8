//! `cargo xtask run -- ARGS`: the release build of threadtrace with ARGS,
//! as root (through sudo when not root), exiting with its exit code.
use std::{
    ffi::OsString,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};

use crate::{build::build, is_root};

#[derive(clap::Args)]
pub struct Args {
    /// threadtrace's command line, after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let bin = build(true)?;
    let mut c = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    c.args(&args.args);
    let status = c
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

#[cfg(test)]
mod tests {
    use crate::{parse, Task};

    fn args(cmdline: &[&str]) -> Vec<String> {
        match parse(cmdline).unwrap() {
            Task::Run(a) => a.args.iter().map(|a| a.to_str().unwrap().into()).collect(),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn everything_after_the_double_dash_goes_to_threadtrace() {
        assert_eq!(
            args(&["run", "--", "record", "-o", "t.ttr", "--help"]),
            ["record", "-o", "t.ttr", "--help"]
        );
        assert_eq!(args(&["run", "record", "--json"]), ["record", "--json"]);
        assert!(args(&["run"]).is_empty());
    }
}

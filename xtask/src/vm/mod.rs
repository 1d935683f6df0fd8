//! `cargo xtask vm`: threadtrace on the kernels and cgroup layouts users
//! run. Boots a Debian kernel (or any .deb or bzImage) in a qemu guest over
//! this host's filesystem with virtme-ng, cgroup v2 by default, and runs a
//! command, some end-to-end tests, the incident scenarios or all of them
//! inside, as root.
mod guest;
mod kernel;
mod suite;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{bail, Context, Result};

pub use guest::{Cgroup, Kvm};
use suite::Result1;

use crate::{bootstrap, build::build, sh};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  cargo xtask vm --scenarios                    the incident scenarios on Debian 12's 6.1, cgroup v2
  cargo xtask vm --all --table vm.md            every end-to-end test on 6.1 and 6.12
  cargo xtask vm --kernel 6.12 --test oom_kill  one test file
  cargo xtask vm --kernel 6.1 --kernel 6.12 --bench   fexit against tracepoints: bench/attach-RELEASE.md
  cargo xtask vm --cgroup v1 -- '$THREADTRACE_BIN doctor'
  cargo xtask vm --kernel ./linux-image-6.9.7-amd64.deb -- uname -a")]
pub struct Args {
    /// The kernel: a Debian series (6.1, 6.12: the newest installed, else
    /// installed from the apt sources), a full release (6.1.0-57-amd64), a
    /// linux-image .deb, or a bzImage. Repeat it for several; default 6.1,
    /// and 6.1 and 6.12 with --all.
    #[arg(long = "kernel", value_name = "KERNEL")]
    kernels: Vec<String>,
    /// The guest's cgroup layout.
    #[arg(long, value_enum, default_value = "v2")]
    cgroup: Cgroup,
    /// An end-to-end test to run, as FILE::NAME or a whole FILE
    /// (oom_kill::oom_kill_in_a_memory_cgroup, oom_kill). Repeatable.
    #[arg(long = "test", value_name = "TEST")]
    tests: Vec<String>,
    /// The incident scenarios (what `cargo xtask test` runs in a guest).
    #[arg(long, conflicts_with_all = ["tests", "all"])]
    scenarios: bool,
    /// Every end-to-end test.
    #[arg(long, conflicts_with = "tests")]
    all: bool,
    /// The same incidents under threadtrace, BCC's and bpftrace's oomkill
    /// and threadsnoop (tests/anchors/run.sh), into --out or
    /// target/anchors/RELEASE/.
    #[arg(long, conflicts_with_all = ["tests", "all", "scenarios", "command"])]
    anchors: bool,
    /// What each attach method costs a thread loop (`cargo xtask bench
    /// --attach-only` in the guest, where fexit loads), into --out or
    /// bench/attach-RELEASE.md.
    #[arg(long, conflicts_with_all = ["tests", "all", "scenarios", "command", "anchors"])]
    bench: bool,
    /// Seconds each test may take (emulation is 3 to 10 times slower).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    per_test: u64,
    /// A host directory the guest can write to, as $OUT (outside /tmp:
    /// the guest's /tmp is its own).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the results as a markdown table, a column per kernel.
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// Guest memory.
    #[arg(long, default_value = "3G")]
    memory: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Hardware virtualization.
    #[arg(long, value_enum, default_value = "auto")]
    kvm: Kvm,
    /// A shell command to run in the guest instead of tests, after `--`;
    /// $THREADTRACE_BIN is the release build.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND",
        conflicts_with_all = ["tests", "scenarios", "all"]
    )]
    command: Vec<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if args.command.is_empty()
        && args.tests.is_empty()
        && !args.scenarios
        && !args.all
        && !args.anchors
        && !args.bench
    {
        bail!(
            "say what to run in the guest: --scenarios, --all, --test TEST, --anchors, --bench or -- COMMAND"
        );
    }
    if !crate::is_root() {
        bail!("guests run the tests as root and install packages: run as root");
    }
    let kernels = match (&args.kernels[..], args.all) {
        ([], true) => vec!["6.1".to_string(), "6.12".to_string()],
        ([], false) => vec!["6.1".to_string()],
        (k, _) => k.to_vec(),
    };
    let bin = build(true)?;
    let vng = guest::prepare()?;
    let mut env = vec![
        ("THREADTRACE_BIN".to_string(), bin.display().to_string()),
        ("RUST_BACKTRACE".to_string(), "0".to_string()),
    ];
    // The runtime scenarios build Rust programs with this cargo.
    if let Ok(path) = std::env::var("PATH") {
        env.push(("PATH".into(), path));
    }
    if let Ok(ci) = std::env::var("CI") {
        env.push(("CI".into(), ci));
    }
    let tests = if args.anchors || args.bench {
        if args.bench {
            bootstrap::bench_packages()?;
        }
        if args.anchors {
            bootstrap::apt_install(&["bpfcc-tools", "bpftrace", "gcc", "libgomp1"], &[])?;
        }
        None
    } else if args.command.is_empty() {
        bootstrap::test_packages()?;
        let all = suite::all_tests()?;
        let chosen = if args.all {
            all
        } else if args.scenarios {
            let names: Vec<String> = suite::SCENARIOS.iter().map(|s| s.to_string()).collect();
            suite::select(&all, &names)?
        } else {
            suite::select(&all, &args.tests)?
        };
        if chosen.iter().any(|t| t.name.contains("pypi")) {
            pypi_numpy()?;
        }
        Some(chosen)
    } else {
        None
    };
    let out_dir = match &args.out {
        None if args.anchors => Some(crate::root_dir().join("target/anchors")),
        None if args.bench => Some(crate::root_dir().join("bench")),
        dir => dir.clone(),
    };
    let out = match &out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            let dir = dir.canonicalize()?;
            if dir.starts_with("/tmp") {
                bail!(
                    "--out {}: the guest's /tmp is its own; give a directory elsewhere",
                    dir.display()
                );
            }
            env.push(("OUT".into(), dir.display().to_string()));
            Some(dir)
        }
        None => None,
    };
    let mut columns = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for spec in &kernels {
        let kernel = kernel::resolve(spec)?;
        if args.anchors {
            // BCC compiles its programs against the kernel's headers.
            bootstrap::apt_install(&[&format!("linux-headers-{}", kernel.release)], &[])?;
        }
        let kvm = match args.kvm {
            Kvm::On => true,
            Kvm::Off => false,
            Kvm::Auto => guest::kvm_works(&vng, &kernel)?,
        };
        let (script, timeout) = match &tests {
            Some(t) => (
                suite::script(t, args.per_test),
                300 + args.per_test.saturating_add(15) * t.len() as u64,
            ),
            None if args.anchors => (
                crate::root_dir()
                    .join("tests/anchors/run.sh")
                    .display()
                    .to_string(),
                3600,
            ),
            None if args.bench => (bench_script()?, 3600),
            None => (command_script(&args.command), 3600),
        };
        let boot = guest::Boot {
            kernel,
            cgroup: args.cgroup,
            memory: args.memory.clone(),
            cpus: args.cpus,
            kvm,
            timeout: Duration::from_secs(timeout),
            out: out.clone(),
        };
        let out = guest::run(&vng, &boot, &script, &env, false)?;
        let seen = out
            .said
            .iter()
            .find_map(|l| l.strip_prefix("kernel "))
            .unwrap_or("(it never said: the guest did not start the script)")
            .to_string();
        let Some(tests) = &tests else {
            eprintln!(
                "xtask: guest kernel {seen}: the command exited with {} after {:.0} s",
                out.exit
                    .map_or("no status (the guest stopped first)".into(), |c| c
                        .to_string()),
                out.seconds
            );
            code = ExitCode::from(out.exit.map_or(1, |c| c.clamp(0, 255) as u8));
            continue;
        };
        let results = suite::results(&out.said, tests);
        let bad: Vec<&Result1> = results.iter().filter(|r| r.verdict != "pass").collect();
        eprintln!(
            "xtask: guest kernel {seen}, cgroup {}, {}: {} of {} end-to-end tests passed in {:.0} s",
            match args.cgroup {
                Cgroup::V2 => "v2",
                Cgroup::V1 => "v1 hybrid",
            },
            if boot.kvm { "KVM" } else { "emulated" },
            results.len() - bad.len(),
            results.len(),
            out.seconds
        );
        for r in &bad {
            eprintln!("  {} {}: {}", r.verdict, r.id, r.reason);
        }
        if !bad.is_empty() {
            code = ExitCode::from(1);
        }
        columns.push((seen, results));
    }
    if let Some(path) = &args.table {
        std::fs::write(path, table(args.cgroup, &columns))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: results in {}", path.display());
    }
    Ok(code)
}

/// What `cargo xtask test` runs after the end-to-end tests on the host:
/// the incident scenarios in a cgroup v2 guest of Debian 12's kernel.
pub fn scenarios_in_a_guest() -> Result<()> {
    let args = Args {
        kernels: vec!["6.1".into()],
        cgroup: Cgroup::V2,
        tests: Vec::new(),
        scenarios: true,
        all: false,
        anchors: false,
        bench: false,
        per_test: 300,
        out: None,
        table: None,
        memory: "3G".into(),
        cpus: 2,
        kvm: Kvm::Auto,
        command: Vec::new(),
    };
    if run(&args)? != ExitCode::SUCCESS {
        bail!("end-to-end scenarios failed in the Debian 6.1 guest (cgroup v2)");
    }
    Ok(())
}

/// This xtask, run again in the guest: the attach benchmark.
fn bench_script() -> Result<String> {
    let xtask = std::env::current_exe().context("where is this xtask")?;
    Ok(format!(
        "'{}' bench --attach-only --bin \"$THREADTRACE_BIN\" --out \"$OUT/attach-$(uname -r).md\"",
        xtask.display()
    ))
}

fn command_script(argv: &[String]) -> String {
    if let [one] = argv {
        return one.clone();
    }
    argv.iter()
        .map(|a| guest::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// numpy's PyPI wheel where the test looks for it: the guest has no
/// network, so the host installs it (the harness's own command) first.
fn pypi_numpy() -> Result<()> {
    let dir = std::env::temp_dir().join("threadtrace-e2e-pypi-numpy");
    if dir.join("numpy").exists() {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    sh(Command::new("/usr/bin/python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&partial)
        .arg("numpy"))?;
    std::fs::rename(&partial, &dir)?;
    sh(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir))
}

fn table(cgroup: Cgroup, columns: &[(String, Vec<Result1>)]) -> String {
    let layout = match cgroup {
        Cgroup::V2 => "v2",
        Cgroup::V1 => "v1",
    };
    let mut s = String::from("| test |");
    for (kernel, _) in columns {
        s.push_str(&format!(" {kernel} ({layout}) |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(columns.len()));
    s.push('\n');
    let Some((_, first)) = columns.first() else {
        return s;
    };
    for (i, r) in first.iter().enumerate() {
        s.push_str(&format!("| {} |", r.id));
        for (_, results) in columns {
            let r = &results[i];
            match r.verdict.as_str() {
                "pass" => s.push_str(&format!(" pass ({} s) |", r.seconds)),
                "not run" => s.push_str(" not run |"),
                v => s.push_str(&format!(" **{v}** ({} s) |", r.seconds)),
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::{parse, Task};

    fn args(cmdline: &[&str]) -> super::Args {
        match parse(cmdline).unwrap() {
            Task::Vm(a) => a,
            _ => panic!("not vm"),
        }
    }

    #[test]
    fn defaults_are_v2_and_a_command_is_taken_whole() {
        let a = args(&["vm", "--", "uname", "-r"]);
        assert_eq!(a.cgroup, super::Cgroup::V2);
        assert_eq!(a.command, ["uname", "-r"]);
        assert_eq!(super::command_script(&a.command), "'uname' '-r'");
        assert_eq!(
            super::command_script(&["echo $THREADTRACE_BIN".into()]),
            "echo $THREADTRACE_BIN"
        );
    }

    #[test]
    fn tests_and_a_command_do_not_mix() {
        assert!(parse(&["vm", "--scenarios", "--", "true"]).is_err());
        assert!(parse(&["vm", "--all", "--test", "cli"]).is_err());
        let a = args(&[
            "vm", "--kernel", "6.12", "--cgroup", "v1", "--test", "oom_kill",
        ]);
        assert_eq!(a.kernels, ["6.12"]);
        assert_eq!(a.cgroup, super::Cgroup::V1);
    }
}

//! Installs what building and testing need, only when it is missing.
//!
//! The eBPF programs build with nightly's `-Z build-std=core` (rust-src) and
//! link with bpf-linker, which must be built against the LLVM that nightly
//! itself ships: a plain `cargo install bpf-linker` looks for a system LLVM
//! that these machines do not have.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{output, sh};

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

/// LLVM major version of the nightly toolchain, from `rustc -vV`.
fn nightly_llvm_major() -> Result<u32> {
    let v = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    v.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|s| s.split('.').next()?.parse().ok())
        .context("rustc +nightly -vV printed no LLVM version")
}

fn bpf_linker_works() -> bool {
    let in_path = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    in_path
        || Command::new(cargo_home().join("bin/bpf-linker"))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// `cargo xtask bootstrap`: everything, as the test task needs it.
pub fn run() -> Result<()> {
    toolchain()?;
    cargo_fuzz()?;
    test_packages()
}

pub fn toolchain() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed: install it from your distribution or rustup.rs")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: installing the nightly toolchain");
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to nightly (for -Z build-std=core)");
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !bpf_linker_works() {
        install_bpf_linker()?;
    }
    Ok(())
}

fn install_bpf_linker() -> Result<()> {
    let major = nightly_llvm_major()?;
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let llvm_dir = PathBuf::from(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&llvm_dir)
        .with_context(|| format!("cannot read {}", llvm_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", llvm_dir.display()))?;
    // llvm-sys finds LLVM through a prefix whose lib/ holds libLLVM.so.
    let prefix = crate::root_dir().join("target/xtask/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!("xtask: building bpf-linker against nightly's LLVM {major} (a few minutes, once)");
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", llvm_dir.display()),
        ))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run");
    }
    Ok(())
}

/// Debian packages the end-to-end tests use: real programs and libraries.
const TEST_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "libgomp1",
    "python3",
    "python3-numpy",
    // pip, for numpy's PyPI wheel (OpenBLAS vendored without a build id).
    "python3-pip",
    "libopenblas0-pthread",
    "util-linux",
    "iproute2",
    "procps",
    // A terminal for the dashboard's scenarios.
    "tmux",
    // The alerting rules' tests (promtool) and the end-to-end test with
    // the real servers.
    "prometheus",
    "prometheus-alertmanager",
    // The container image's test builds it offline.
    "buildah",
    // Other runtimes' threads (tests/tests/runtimes.rs): Go, musl, the
    // JVM, Node.
    "golang-go",
    "musl-tools",
    "openjdk-17-jdk-headless",
    "nodejs",
];

/// What `cargo xtask bench` compares against and measures with.
const BENCH_PACKAGES: &[&str] = &["bpftrace", "bpftool", "zlib1g-dev"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn test_packages() -> Result<()> {
    install(TEST_PACKAGES)
}

pub fn bench_packages() -> Result<()> {
    install(BENCH_PACKAGES)
}

fn install(packages: &[&str]) -> Result<()> {
    apt_install(packages, &[])
}

/// Installs the packages not installed yet, with `env` set for their
/// maintainer scripts (`INITRD=No` for a kernel the guest boots without
/// an initrd).
pub fn apt_install(packages: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "packages missing ({}): run as root so that they can be installed",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt_update()?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .envs(env.iter().copied()))
}

pub fn apt_update() -> Result<()> {
    sh(Command::new("apt-get").args(["update", "-qq"]))
}

/// cargo-fuzz, for the fuzz targets in fuzz/ (they build on nightly).
pub fn cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!("xtask: installing cargo-fuzz (about a minute, once)");
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

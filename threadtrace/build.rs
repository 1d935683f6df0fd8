//! Builds the kernel programs (threadtrace-ebpf) for bpfel-unknown-none with
//! nightly, and leaves the object in OUT_DIR for include_bytes.
//!
//! aya-build turns every line of the inner cargo's progress ("Compiling
//! core ...", about 40 of them) into a `cargo:warning`, which cargo prints
//! on every fresh build. Its output is captured instead: cargo's progress
//! lines are shown when the build fails, or with
//! THREADTRACE_BUILD_VERBOSE=1 (`cargo xtask build -v`); anything else it
//! says (a compiler warning in the kernel programs) is passed on.
//!
//! Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) drive `report` and
//! `export`, never the kernel: they get an empty object instead of a
//! nightly eBPF build under the fuzzer's flags.
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
};

const VERBOSE: &str = "THREADTRACE_BUILD_VERBOSE";

/// The inner cargo's status lines: "   Compiling core v0.0.0 (...)".
fn is_progress(line: &str) -> bool {
    const VERBS: [&str; 12] = [
        "Compiling",
        "Finished",
        "Fresh",
        "Running",
        "Building",
        "Updating",
        "Locking",
        "Adding",
        "Downloaded",
        "Downloading",
        "Blocking",
        "Checking",
    ];
    let body = line.strip_prefix("cargo:warning=").unwrap_or(line);
    VERBS.iter().any(|v| body.trim_start().starts_with(v))
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed={VERBOSE}");
    let out_dir = std::env::var("OUT_DIR")?;
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::write(format!("{out_dir}/threadtrace"), b"")?;
        return Ok(());
    }
    let verbose = std::env::var_os(VERBOSE).is_some_and(|v| v == "1");
    // aya-build prints from its own threads too: capture fd 1 itself.
    // Kept in OUT_DIR: the whole of what the eBPF build said, to look at.
    let mut capture = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(format!("{out_dir}/ebpf-build.log"))?;
    std::io::stdout().flush()?;
    // SAFETY: dup/dup2 on descriptors this process owns; stdout is put
    // back below before anything else is printed.
    let saved = unsafe { libc::dup(1) };
    anyhow::ensure!(saved >= 0, "dup(1) failed");
    // SAFETY: as above.
    anyhow::ensure!(
        unsafe { libc::dup2(capture.as_raw_fd(), 1) } >= 0,
        "dup2 failed"
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../threadtrace-ebpf");
    let result = aya_build::build_ebpf(
        [aya_build::Package {
            name: "threadtrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    std::io::stdout().flush()?;
    // SAFETY: as above.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    let mut said = String::new();
    capture.seek(SeekFrom::Start(0))?;
    capture.read_to_string(&mut said)?;
    for line in said.lines() {
        if verbose || !is_progress(line) {
            println!("{line}");
        } else if result.is_err() {
            // cargo shows a failed build script's stderr.
            eprintln!("{}", line.strip_prefix("cargo:warning=").unwrap_or(line));
        }
    }
    result
}

//! Builds the kernel programs (threadtrace-ebpf) for bpfel-unknown-none with
//! nightly, and leaves the object in OUT_DIR for include_bytes.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../threadtrace-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "threadtrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

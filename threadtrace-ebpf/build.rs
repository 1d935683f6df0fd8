use which::which;

/// Rebuild the programs when bpf-linker changes: it is part of the compiler
/// for this target, and a stale link would hide a linker upgrade.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found: run `cargo xtask bootstrap`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}

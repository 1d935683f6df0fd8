//! `cargo xtask image`: the container image, FROM scratch: the release
//! binary and the libraries it links, as an OCI archive (`podman load -i`,
//! `skopeo copy oci-archive:...` to push it). Buildah's storage stays under
//! target/.
use std::process::Command;

use anyhow::Result;

use crate::{build::build, root_dir, sh};

pub fn run() -> Result<()> {
    let bin = build(true)?;
    let out = root_dir().join("target/image");
    let ctx = out.join("context");
    sh(Command::new(root_dir().join("deploy/container/context.sh"))
        .arg(&bin)
        .arg(&ctx))?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("localhost/threadtrace:{version}");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(out.join("storage"))
            .arg("--runroot")
            .arg(out.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let ctx_s = ctx.display().to_string();
    let file = format!("{ctx_s}/Containerfile");
    sh(&mut buildah(&[
        "build",
        "--layers=false",
        "-f",
        &file,
        "-t",
        &tag,
        &ctx_s,
    ]))?;
    let archive = out.join(format!("threadtrace-{version}.oci.tar"));
    let _ = std::fs::remove_file(&archive);
    let dest = format!("oci-archive:{}:{tag}", archive.display());
    sh(&mut buildah(&["push", &tag, &dest]))?;
    let size = std::fs::metadata(&archive)?.len();
    println!(
        "{} ({:.1} MiB)",
        archive.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}

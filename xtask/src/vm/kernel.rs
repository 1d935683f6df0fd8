//! Which kernel a guest boots: a Debian kernel package by its version
//! (installed with apt when missing), a `.deb` file, or a bzImage.
use std::{
    cmp::Ordering,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{bootstrap, output};

/// A kernel image to boot and its release (`uname -r` in the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
}

/// `6.1`, `6.12`, a full release such as `6.1.0-57-amd64`, a Debian
/// `linux-image-*.deb`, or a bzImage file.
pub fn resolve(spec: &str) -> Result<Kernel> {
    let path = Path::new(spec);
    if spec.ends_with(".deb") {
        return install_deb(path);
    }
    if path.is_file() {
        let release = bzimage_release(path)
            .with_context(|| format!("{spec} is neither a .deb nor a bzImage"))?;
        return Ok(Kernel {
            image: path.to_path_buf(),
            release,
        });
    }
    if spec.contains('/') {
        bail!("{spec}: no such kernel file");
    }
    if let Some(k) = installed(spec)? {
        return Ok(k);
    }
    let package = newest_package(spec)?;
    eprintln!("xtask: installing {package} (Debian's kernel {spec}) for the guest");
    bootstrap::apt_install(&[&package], &[("INITRD", "No")])?;
    installed(spec)?.with_context(|| format!("{package} installed no /boot/vmlinuz-{spec}*"))
}

/// The newest /boot/vmlinuz-RELEASE whose release is `spec` or starts
/// with `spec.` or `spec-`, with its modules (the guest loads 9p and
/// virtio from /lib/modules).
fn installed(spec: &str) -> Result<Option<Kernel>> {
    let mut releases: Vec<String> = std::fs::read_dir("/boot")
        .context("cannot read /boot")?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .filter(|r| matches_series(r, spec))
        .filter(|r| Path::new("/lib/modules").join(r).is_dir())
        .collect();
    releases.sort_by(|a, b| version_cmp(a, b));
    Ok(releases.pop().map(|release| Kernel {
        image: PathBuf::from(format!("/boot/vmlinuz-{release}")),
        release,
    }))
}

fn matches_series(release: &str, spec: &str) -> bool {
    release == spec
        || release
            .strip_prefix(spec)
            .is_some_and(|rest| rest.starts_with(['.', '-']))
}

/// The newest amd64 image package of a series in the apt sources, signed
/// flavour only (no -dbg, -unsigned, -rt, -cloud).
fn newest_package(spec: &str) -> Result<String> {
    let pattern = format!("^linux-image-{}", spec.replace('.', "\\."));
    let list = || output(Command::new("apt-cache").args(["search", "--names-only", &pattern]));
    let mut found = list()?;
    if found.trim().is_empty() {
        bootstrap::apt_update()?;
        found = list()?;
    }
    let mut names: Vec<&str> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| is_image_package(n, spec))
        .collect();
    names.sort_by(|a, b| version_cmp(a, b));
    names.pop().map(String::from).with_context(|| {
        format!("no Debian kernel package linux-image-{spec}*-amd64 in the apt sources")
    })
}

fn is_image_package(name: &str, spec: &str) -> bool {
    let Some(release) = name.strip_prefix("linux-image-") else {
        return false;
    };
    matches_series(release, spec)
        && release.ends_with("-amd64")
        && !["-dbg", "-unsigned", "-rt-", "-cloud-"]
            .iter()
            .any(|x| release.contains(x))
}

/// Installs a kernel package file (without an initrd: the guest needs
/// none) and returns the kernel it put in /boot.
fn install_deb(deb: &Path) -> Result<Kernel> {
    let files = output(Command::new("dpkg-deb").arg("-c").arg(deb))
        .with_context(|| format!("{} is not a Debian package", deb.display()))?;
    let release = files
        .lines()
        .find_map(|l| l.split("./boot/vmlinuz-").nth(1))
        .map(|r| r.trim().to_string())
        .with_context(|| format!("{} holds no /boot/vmlinuz-*", deb.display()))?;
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if !image.exists() {
        eprintln!("xtask: installing {}", deb.display());
        crate::sh(
            Command::new("dpkg")
                .arg("-i")
                .arg(deb)
                .env("INITRD", "No")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(Kernel { image, release })
}

/// The release a bzImage announces in its setup header (the version
/// string at 0x200 + the 16-bit pointer at 0x20e).
fn bzimage_release(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    release_in_header(&data).context("no kernel version in its setup header")
}

fn release_in_header(data: &[u8]) -> Option<String> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize + 0x200;
    let text = data.get(ptr..(ptr + 256).min(data.len()))?;
    let word = text.split(|&b| b == b' ' || b == 0).next()?;
    let s = std::str::from_utf8(word).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// Orders versions like `sort -V` for what kernel names hold: runs of
/// digits compare as numbers, everything else as text.
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<Result<u64, &str>> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let n = if digits > 0 {
                digits
            } else {
                rest.bytes().take_while(|b| !b.is_ascii_digit()).count()
            };
            let (head, tail) = rest.split_at(n);
            out.push(head.parse::<u64>().map_err(|_| head));
            rest = tail;
        }
        out
    }
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_matches_its_releases_only() {
        assert!(matches_series("6.1.0-57-amd64", "6.1"));
        assert!(matches_series("6.12.118+deb12-amd64", "6.12"));
        assert!(!matches_series("6.12.118+deb12-amd64", "6.1"));
        assert!(matches_series("6.1.0-57-amd64", "6.1.0-57-amd64"));
    }

    #[test]
    fn the_newest_release_sorts_last() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-50-amd64"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["6.1.0-9-amd64", "6.1.0-50-amd64", "6.1.0-57-amd64"]);
    }

    #[test]
    fn only_plain_amd64_images_are_picked() {
        assert!(is_image_package("linux-image-6.1.0-57-amd64", "6.1"));
        assert!(is_image_package("linux-image-6.12.118+deb12-amd64", "6.12"));
        for n in [
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-57-rt-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.12.118+deb12-amd64",
        ] {
            assert!(!is_image_package(n, "6.1"), "{n}");
        }
    }

    #[test]
    fn a_bzimage_header_gives_its_release() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x320].copy_from_slice(b"6.1.0-57-amd64 (debian-kernel@li");
        assert_eq!(release_in_header(&img).as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(release_in_header(&[0u8; 0x400]), None);
        assert_eq!(release_in_header(b"short"), None);
    }
}

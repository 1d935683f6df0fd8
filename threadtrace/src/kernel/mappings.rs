//! The kernel's `Mapping` events (see the eBPF `mapping` probe) as the
//! records address spaces are built from. Each carries the file's device,
//! inode and generation, so that the file can be found again after the
//! process is gone, and its name as a chain of dentry names.
//!
//! The name is the path as the process sees it (a container's, a
//! chroot's, from inside), across mounts, like /proc/PID/maps; relative
//! (`reached_root` 0) when the walk stopped short of the process's root:
//! too deep, a mount lazily unmounted or outside that root. (Where BTF
//! lacks the mount offsets, a name stops at the root of the file's own
//! mount: /x/prog for /tmp/x/prog on a tmpfs /tmp.)
//! It names the library for people and for classification; files are
//! opened by identity first and every open is checked against the device
//! and inode, so a partial path never reads the wrong file.
use threadtrace_common::{Event, Mapping, MAPPING_NAMES};

/// What the collector learns from the kernel about an address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpaceChange {
    Mmap {
        pid: u32,
        time: u64,
        start: u64,
        len: u64,
        pgoff: u64,
        dev: u64,
        ino: u64,
        /// i_generation: tells a file from a later one that reuses its
        /// inode number (0 where the filesystem has none).
        generation: u64,
        path: String,
    },
    /// The process began a new program (before its first mapping).
    Exec { pid: u32, time: u64 },
}

/// vm_pgoff counts pages.
const PAGE: u64 = 4096;

/// The record of a `Mapping` event.
pub fn from_event(e: &Event<Mapping>) -> SpaceChange {
    let m = &e.payload;
    let depth = (m.depth as usize).min(MAPPING_NAMES);
    let mut path = String::new();
    if m.reached_root != 0 {
        path.push('/');
    }
    for (i, name) in m.names[..depth].iter().rev().enumerate() {
        if i > 0 {
            path.push('/');
        }
        let n = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        path.push_str(&String::from_utf8_lossy(&name[..n]));
    }
    SpaceChange::Mmap {
        pid: e.header.tgid,
        time: e.header.ktime_ns,
        start: m.start,
        len: m.end.saturating_sub(m.start),
        pgoff: m.pgoff.saturating_mul(PAGE),
        // The kernel's dev_t: major in the top 12 bits, minor in the rest.
        dev: libc::makedev(m.dev >> 20, m.dev & 0xf_ffff),
        ino: m.ino,
        generation: m.generation as u64,
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadtrace_common::{EventKind, Header, MAPPING_NAME_LEN};

    fn event(names: &[&str], reached_root: u32) -> Event<Mapping> {
        let mut n = [[0u8; MAPPING_NAME_LEN]; MAPPING_NAMES];
        for (slot, name) in n.iter_mut().zip(names) {
            slot[..name.len()].copy_from_slice(name.as_bytes());
        }
        // SAFETY: plain data; zero is a valid header.
        let mut header: Header = unsafe { std::mem::zeroed() };
        header.kind = EventKind::Mapping as u32;
        header.tgid = 42;
        header.ktime_ns = 99;
        Event {
            header,
            payload: Mapping {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0000_2000,
                pgoff: 1,
                ino: 456,
                dev: (0xfd << 20) | 1,
                generation: 7,
                depth: names.len() as u32,
                reached_root,
                names: n,
            },
        }
    }

    #[test]
    fn joins_the_dentry_names_from_the_root() {
        let r = from_event(&event(&["my lib.so", "lib", "opt"], 1));
        assert_eq!(
            r,
            SpaceChange::Mmap {
                pid: 42,
                time: 99,
                start: 0x7f00_0000_0000,
                len: 0x2000,
                pgoff: 0x1000,
                dev: libc::makedev(0xfd, 1),
                ino: 456,
                generation: 7,
                path: "/opt/lib/my lib.so".into()
            }
        );
    }

    #[test]
    fn a_walk_cut_short_is_a_relative_path() {
        let SpaceChange::Mmap { path, .. } = from_event(&event(&["x.so", "deep"], 0)) else {
            panic!()
        };
        assert_eq!(path, "deep/x.so");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut e = event(&["a"], 1);
        e.payload.depth = u32::MAX;
        e.payload.pgoff = u64::MAX;
        e.payload.end = 0;
        e.payload.names = [[0xff; MAPPING_NAME_LEN]; MAPPING_NAMES];
        let SpaceChange::Mmap { path, len, .. } = from_event(&e) else {
            panic!()
        };
        assert_eq!(len, 0);
        assert!(path.starts_with('/'));
    }
}

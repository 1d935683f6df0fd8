//! Opening the file a process maps, and nothing else.
//!
//! The tracer is root and the paths come from other users' processes: a
//! path may name a FIFO (opening it blocks), a device (opening it has
//! effects), a symlink out of a container, or a file replaced since it was
//! mapped. So, in order:
//! 1. `/proc/PID/map_files/START-END`: the mapped file itself, while the
//!    process lives;
//! 2. the inode itself, by file handle (`open_by_handle_at` with the
//!    device, inode and generation the kernel recorded at the mapping): no
//!    path at all, so it works for a container or chroot whose last
//!    process is gone, and finds nothing once the file is deleted;
//! 3. the path, resolved inside the process's own root (`openat2` with
//!    `RESOLVE_IN_ROOT`, no magic links).
//!
//! Each is opened `O_PATH` (no open side effects), checked with `fstat`
//! (a regular file, the device and inode of the mapping, unchanged since it
//! was mapped), and only then reopened for reading.
use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, SystemTime},
};

/// How a file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Through the process's own mapping (it was alive).
    MapFiles,
    /// By device, inode and generation (a file handle).
    Handle,
    /// By its path inside the process's root, checked by device and inode.
    Path,
}

/// The mapping whose file is wanted.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    /// As the process sees it (perf or /proc/PID/maps), " (deleted)" and all.
    pub path: &'a str,
    pub dev: u64,
    pub ino: u64,
    /// The inode's generation when the kernel recorded it (0: unknown).
    pub generation: u64,
    /// When it was mapped: a file changed after that is not the one mapped.
    pub mapped_at: SystemTime,
    /// The process's root directory, when it is not the tracer's.
    pub root: Option<&'a OwnedFd>,
}

#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub len: u64,
    pub how: How,
    /// Identity of the content read: device, inode, change time.
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not a regular file")]
    NotRegular,
    #[error("another file is at that path now (device/inode differ)")]
    Replaced,
    #[error("the file changed after it was mapped")]
    Changed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Mapped files may be changed this long after their mapping's timestamp
/// and still count as unchanged: clock conversion error, not a replacement.
const SLACK: Duration = Duration::from_millis(1);

pub fn open_mapped(w: &Wanted, mounts: &mut MountFds) -> Result<Opened, OpenError> {
    let via_map = format!("/proc/{}/map_files/{:x}-{:x}", w.pid, w.start, w.end);
    let mut first = match open_path(&via_map, libc::AT_FDCWD, 0) {
        Ok(fd) => match checked(fd, w) {
            Ok(checked) => return reopen(checked, How::MapFiles),
            Err(e) => Some(e),
        },
        Err(_) => None,
    };
    match mounts.open_inode(w.dev, w.ino, w.generation) {
        Ok(fd) => match checked(fd, w) {
            Ok(checked) => return reopen(checked, How::Handle),
            Err(e) => first = first.or(Some(e)),
        },
        Err(e) => log::trace!("{}: no file handle ({e})", w.path),
    }
    let path = w.path.strip_suffix(" (deleted)").unwrap_or(w.path);
    // A name the kernel could only give relative to a mount the process
    // cannot reach: since 6.8 a file mapped through overlayfs (a
    // container's image) is its layer's own file, on a private mount. The
    // layer mirrors the tree the process sees, so the same name from the
    // process's root is tried; the inode check below says whether it is
    // the file mapped.
    let rooted;
    let path = if path.starts_with('/') {
        path
    } else if path.is_empty() {
        return Err(first.unwrap_or(OpenError::NotRegular));
    } else {
        rooted = format!("/{path}");
        &rooted
    };
    let (dirfd, resolve) = match w.root {
        Some(root) => (root.as_raw_fd(), libc::RESOLVE_IN_ROOT),
        None => (libc::AT_FDCWD, 0),
    };
    let fd = open_path(path, dirfd, resolve | libc::RESOLVE_NO_MAGICLINKS)?;
    reopen(checked(fd, w)?, How::Path)
}

/// `openat2(dirfd, path, O_PATH)`: resolves without opening the file itself.
fn open_path(path: &str, dirfd: i32, resolve: u64) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: valid C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fstat(fd: i32) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Whether the file behind `fd` is the one `w` mapped.
fn checked(fd: OwnedFd, w: &Wanted) -> Result<(OwnedFd, libc::stat), OpenError> {
    let st = fstat(fd.as_raw_fd())?;
    is_the_mapped_file(&st, w)?;
    Ok((fd, st))
}

fn is_the_mapped_file(st: &libc::stat, w: &Wanted) -> Result<(), OpenError> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(OpenError::NotRegular);
    }
    // Filesystems that give each subvolume or overlay an anonymous device
    // (major 0: btrfs, overlayfs) show another device in stat than in the
    // mapping: the inode has to agree, the device when it is a real one.
    let same_dev = st.st_dev == w.dev || libc::major(st.st_dev) == 0;
    if st.st_ino != w.ino || !same_dev {
        return Err(OpenError::Replaced);
    }
    // A change time past what SystemTime holds is later than any mapping.
    let ctime = SystemTime::UNIX_EPOCH.checked_add(Duration::new(
        st.st_ctime.max(0) as u64,
        st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
    ));
    if ctime.is_none_or(|c| c > w.mapped_at + SLACK) {
        return Err(OpenError::Changed);
    }
    Ok(())
}

/// Opens an `O_PATH` descriptor for reading: the same inode, checked again.
fn reopen((fd, before): (OwnedFd, libc::stat), how: How) -> Result<Opened, OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let after = fstat(file.as_raw_fd())?;
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) {
        return Err(OpenError::Replaced);
    }
    Ok(Opened {
        file,
        len: before.st_size.max(0) as u64,
        how,
        dev: before.st_dev,
        ino: before.st_ino,
        ctime_ns: before
            .st_ctime
            .wrapping_mul(1_000_000_000)
            .wrapping_add(before.st_ctime_nsec),
    })
}

use std::os::unix::fs::OpenOptionsExt as _;

/// A directory on each filesystem, to open its inodes by file handle.
#[derive(Default)]
pub struct MountFds {
    by_dev: HashMap<u64, Option<OwnedFd>>,
}

/// ext4's and xfs's file handle for an inode: FILEID_INO32_GEN.
const FILEID_INO32_GEN: i32 = 1;

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 8],
}

impl MountFds {
    /// The inode `ino` of generation `generation` (0: any) on device `dev`,
    /// opened `O_PATH`: the file the kernel recorded, wherever it is named.
    pub fn open_inode(&mut self, dev: u64, ino: u64, generation: u64) -> io::Result<OwnedFd> {
        let ino = u32::try_from(ino).map_err(|_| io::Error::from(io::ErrorKind::Unsupported))?;
        let mount = self.mount_of(dev)?;
        let mut f_handle = [0u8; 8];
        f_handle[..4].copy_from_slice(&ino.to_le_bytes());
        f_handle[4..].copy_from_slice(&(generation as u32).to_le_bytes());
        let mut h = FileHandle {
            handle_bytes: 8,
            handle_type: FILEID_INO32_GEN,
            f_handle,
        };
        // SAFETY: a file_handle of the size it declares; CAP_DAC_READ_SEARCH
        // is checked by the kernel.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                &mut h as *mut FileHandle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn mount_of(&mut self, dev: u64) -> io::Result<&OwnedFd> {
        if !self.by_dev.contains_key(&dev) {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let fd = mount_point(&info, dev).and_then(|p| {
                let c = CString::new(p).ok()?;
                // SAFETY: a valid path. open_by_handle_at refuses an O_PATH
                // descriptor here; a directory opens without side effects.
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                // SAFETY: a new descriptor we own.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            });
            if self.by_dev.len() >= 256 {
                self.by_dev.clear();
            }
            self.by_dev.insert(dev, fd);
        }
        self.by_dev[&dev]
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// A mount point of device `dev`, from /proc/self/mountinfo (its paths
/// escape spaces and the like as octal).
fn mount_point(mountinfo: &str, dev: u64) -> Option<String> {
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(2) == Some(&want.as_str())).then(|| unescape(f.get(4)?))?
    })
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).ok()?, 8).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A process's root directory, held open so that its files can still be
/// found by path after the process exits (a container's last process).
pub fn open_root(pid: u32) -> io::Result<OwnedFd> {
    let c = CString::new(format!("/proc/{pid}/root")).expect("no NUL");
    // SAFETY: a valid path; O_PATH opens nothing but the directory entry.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount namespace a process lives in (the inode of /proc/PID/ns/mnt).
pub fn mount_ns(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The host's glibc, for tests that need a real distribution library.
    pub(crate) fn host_libc() -> &'static str {
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("glibc")
    }

    fn wanted<'a>(path: &'a str, meta: &std::fs::Metadata) -> Wanted<'a> {
        Wanted {
            pid: u32::MAX,
            start: 0,
            end: 0,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
            generation: 0,
            mapped_at: SystemTime::now(),
            root: None,
        }
    }

    fn open(w: &Wanted) -> Result<Opened, OpenError> {
        open_mapped(w, &mut MountFds::default())
    }

    /// A generation no file here has: the file handle finds nothing and the
    /// path is what is tried.
    const NOT_BY_HANDLE: u64 = 0x5eed_1234;

    #[test]
    fn opens_the_mapped_inode_by_handle_and_by_path() {
        let libc = host_libc();
        let canonical = std::fs::canonicalize(libc).unwrap();
        let meta = std::fs::metadata(&canonical).unwrap();
        let path = canonical.display().to_string();
        let mut w = wanted(&path, &meta);
        let o = open(&w).unwrap();
        assert_eq!(o.how, How::Handle);
        assert_eq!(o.len, meta.len());
        w.generation = NOT_BY_HANDLE;
        w.path = "/nonexistent";
        assert!(open(&w).is_err());
        w.path = &path;
        assert_eq!(open(&w).unwrap().how, How::Path);
    }

    #[test]
    fn opens_a_live_mapping_through_map_files() {
        // This test binary's own executable mapping.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let line = maps
            .lines()
            .find(|l| l.contains(" r-xp ") && l.ends_with(&*exe.display().to_string()))
            .unwrap();
        let (range, _) = line.split_once(' ').unwrap();
        let (s, e) = range.split_once('-').unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        let w = Wanted {
            pid: std::process::id(),
            start: u64::from_str_radix(s, 16).unwrap(),
            end: u64::from_str_radix(e, 16).unwrap(),
            path: "/nonexistent/elsewhere",
            ..wanted("", &meta)
        };
        assert_eq!(open(&w).unwrap().how, How::MapFiles);
    }

    /// A name the kernel's walk did not take up to the process's root (a
    /// mount lazily unmounted, a file outside the root) is relative: never
    /// resolved, here or anywhere, though a file is at that path.
    #[test]
    fn a_name_short_of_the_root_is_never_opened_by_path() {
        let meta = std::fs::metadata("Cargo.toml").unwrap();
        let w = Wanted {
            generation: NOT_BY_HANDLE,
            ..wanted("Cargo.toml", &meta)
        };
        assert!(open(&w).is_err());
        let absolute = std::fs::canonicalize("Cargo.toml").unwrap();
        let absolute = absolute.display().to_string();
        let w = Wanted {
            generation: NOT_BY_HANDLE,
            ..wanted(&absolute, &meta)
        };
        assert_eq!(open(&w).unwrap().how, How::Path);
    }

    #[test]
    fn a_replaced_or_rewritten_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libx.so");
        std::fs::write(&p, b"old").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let path = p.display().to_string();
        let mut w = wanted(&path, &meta);
        assert!(open(&w).is_ok());
        std::thread::sleep(SLACK * 20);
        // Replaced the way package managers do: a new file renamed over.
        // Whether the new file reuses the inode number or not, it is
        // refused: another inode, or a change after the mapping.
        let tmp = dir.path().join("libx.so.new");
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert!(matches!(
            open(&w),
            Err(OpenError::Replaced | OpenError::Changed)
        ));
        // Rewritten in place after it was mapped: same inode, newer ctime.
        let meta = std::fs::metadata(&p).unwrap();
        w.ino = meta.ino();
        assert!(matches!(open(&w), Err(OpenError::Changed)));
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for p in [fifo.display().to_string(), "/dev/null".to_string()] {
            let meta = std::fs::metadata(&p).unwrap();
            let t0 = std::time::Instant::now();
            for generation in [0, NOT_BY_HANDLE] {
                let w = Wanted {
                    generation,
                    ..wanted(&p, &meta)
                };
                assert!(matches!(open(&w), Err(OpenError::NotRegular)), "{p}");
            }
            assert!(t0.elapsed() < Duration::from_secs(1));
        }
    }

    #[test]
    fn paths_resolve_inside_the_process_root() {
        // A fake container root whose library is an absolute symlink to a
        // host file: inside the root it points at nothing.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("lib/libc.so.6")).unwrap();
        let fd = open_root_dir(root.path());
        let meta = std::fs::metadata("/etc/hostname").unwrap();
        let w = Wanted {
            root: Some(&fd),
            generation: NOT_BY_HANDLE,
            ..wanted("/lib/libc.so.6", &meta)
        };
        assert!(matches!(open(&w), Err(OpenError::Io(_))));
        // A real file inside the root is found.
        std::fs::write(root.path().join("lib/libgomp.so.1"), b"x").unwrap();
        let meta = std::fs::metadata(root.path().join("lib/libgomp.so.1")).unwrap();
        let w = Wanted {
            root: Some(&fd),
            generation: NOT_BY_HANDLE,
            ..wanted("/lib/libgomp.so.1", &meta)
        };
        assert_eq!(open(&w).unwrap().how, How::Path);
        // A layer's own name (overlayfs since 6.8) is tried from the root;
        // another inode there is not the file mapped.
        let w = Wanted {
            root: Some(&fd),
            generation: NOT_BY_HANDLE,
            ..wanted("lib/libgomp.so.1", &meta)
        };
        assert_eq!(open(&w).unwrap().how, How::Path);
        let other = std::fs::metadata("/etc/hostname").unwrap();
        let w = Wanted {
            root: Some(&fd),
            generation: NOT_BY_HANDLE,
            ..wanted("lib/libgomp.so.1", &other)
        };
        assert!(matches!(open(&w), Err(OpenError::Replaced)));
    }

    fn open_root_dir(p: &std::path::Path) -> OwnedFd {
        let c = CString::new(p.display().to_string()).unwrap();
        // SAFETY: a valid path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn mount_points_are_found_and_unescaped() {
        let info = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    30 22 0:5 / /my\\040dir rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_point(info, libc::makedev(254, 0)).as_deref(),
            Some("/")
        );
        assert_eq!(
            mount_point(info, libc::makedev(0, 5)).as_deref(),
            Some("/my dir")
        );
        assert_eq!(mount_point(info, libc::makedev(9, 9)), None);
    }
}

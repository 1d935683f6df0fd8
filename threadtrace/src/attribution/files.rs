//! Opening the file a process maps, and nothing else.
//!
//! The tracer is root and the paths come from other users' processes: a
//! path may name a FIFO (opening it blocks), a device (opening it has
//! effects), a symlink out of a container, or a file replaced since it was
//! mapped. So: first `/proc/PID/map_files/START-END`, the mapped file
//! itself, while the process lives; else the path, resolved inside the
//! process's own root (`openat2` with `RESOLVE_IN_ROOT`, no magic links).
//! Both are opened `O_PATH` (no open side effects), checked with `fstat`
//! (a regular file, the device and inode of the mapping, unchanged since it
//! was mapped), and only then reopened for reading.
use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, SystemTime},
};

/// How a file was found; said in each stack frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Through the process's own mapping (it was alive).
    MapFiles,
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

pub fn open_mapped(w: &Wanted) -> Result<Opened, OpenError> {
    let via_map = format!("/proc/{}/map_files/{:x}-{:x}", w.pid, w.start, w.end);
    let first = match open_path(&via_map, libc::AT_FDCWD, 0) {
        Ok(fd) => match checked(fd, w) {
            Ok(checked) => return reopen(checked, How::MapFiles),
            Err(e) => Some(e),
        },
        Err(_) => None,
    };
    let path = w.path.strip_suffix(" (deleted)").unwrap_or(w.path);
    if !path.starts_with('/') {
        return Err(first.unwrap_or(OpenError::NotRegular));
    }
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
    let ctime = SystemTime::UNIX_EPOCH
        + Duration::new(
            st.st_ctime.max(0) as u64,
            st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
        );
    if ctime > w.mapped_at + SLACK {
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
        ctime_ns: before.st_ctime * 1_000_000_000 + before.st_ctime_nsec,
    })
}

use std::os::unix::fs::OpenOptionsExt as _;

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
            mapped_at: SystemTime::now(),
            root: None,
        }
    }

    #[test]
    fn opens_the_file_by_path_when_it_is_the_one_mapped() {
        let libc = host_libc();
        let canonical = std::fs::canonicalize(libc).unwrap();
        let meta = std::fs::metadata(&canonical).unwrap();
        let path = canonical.display().to_string();
        let o = open_mapped(&wanted(&path, &meta)).unwrap();
        assert_eq!(o.how, How::Path);
        assert_eq!(o.len, meta.len());
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
        assert_eq!(open_mapped(&w).unwrap().how, How::MapFiles);
    }

    #[test]
    fn a_replaced_or_rewritten_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libx.so");
        std::fs::write(&p, b"old").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let path = p.display().to_string();
        let mut w = wanted(&path, &meta);
        assert!(open_mapped(&w).is_ok());
        // Replaced the way package managers do: a new inode renamed over.
        let tmp = dir.path().join("libx.so.new");
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert!(matches!(open_mapped(&w), Err(OpenError::Replaced)));
        // Rewritten in place after it was mapped: same inode, newer ctime.
        let meta = std::fs::metadata(&p).unwrap();
        w.ino = meta.ino();
        w.mapped_at = SystemTime::now() - Duration::from_secs(60);
        assert!(matches!(open_mapped(&w), Err(OpenError::Changed)));
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
            assert!(matches!(
                open_mapped(&wanted(&p, &meta)),
                Err(OpenError::NotRegular)
            ));
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
        let fd = {
            let c = CString::new(root.path().display().to_string()).unwrap();
            // SAFETY: a valid path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
            assert!(fd >= 0);
            // SAFETY: a new descriptor we own.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let meta = std::fs::metadata("/etc/hostname").unwrap();
        let mut w = wanted("/lib/libc.so.6", &meta);
        w.root = Some(&fd);
        assert!(matches!(open_mapped(&w), Err(OpenError::Io(_))));
        // A real file inside the root is found.
        std::fs::write(root.path().join("lib/libgomp.so.1"), b"x").unwrap();
        let meta = std::fs::metadata(root.path().join("lib/libgomp.so.1")).unwrap();
        let mut w = wanted("/lib/libgomp.so.1", &meta);
        w.root = Some(&fd);
        assert_eq!(open_mapped(&w).unwrap().how, How::Path);
    }
}

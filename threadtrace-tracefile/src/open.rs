//! Opening the files threadtrace writes and reads, as root, in directories
//! other users may write to (/tmp): never through a link it did not
//! choose, never a FIFO or a device, never someone else's file.
//!
//! Writing: the file is created (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600 at
//! creation, so no one can open it in between); an existing one is
//! overwritten only when asked (`--force`), and only if it is a regular
//! file of ours with one link: a hard link to /etc/shadow is not ours to
//! truncate. Reading: the path is opened `O_PATH` first, which opens no
//! device and waits for no FIFO writer, and read only if it is a regular
//! file.
use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::TraceError;

/// Why an existing file is not overwritten, even with --force.
fn unsafe_to_replace(meta: &std::fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    if !ft.is_file() {
        return Some(format!("it is {}, not a regular file", kind_of(meta)));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Some(format!("it belongs to uid {}, not to us", meta.uid()));
    }
    if meta.nlink() != 1 {
        return Some(format!("it has {} hard links", meta.nlink()));
    }
    None
}

/// "a FIFO", "a directory"...: for messages.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Creates `path` for writing, mode 0600. An existing file is an error
/// unless `force`, and even then only a regular file of ours with one link
/// is truncated; a symbolic link is never followed nor replaced.
pub fn create(path: &Path, force: bool) -> Result<File, TraceError> {
    let name = || path.display().to_string();
    let new = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match new {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(TraceError::Io(name(), e)),
    }
    // It exists: what is it? lstat, so that a link is seen as one.
    let meta = std::fs::symlink_metadata(path).map_err(|e| TraceError::Io(name(), e))?;
    if meta.file_type().is_symlink() {
        return Err(TraceError::Refused {
            path: name(),
            why: "it is a symbolic link".into(),
        });
    }
    if !force {
        return Err(TraceError::Exists(name()));
    }
    if !meta.file_type().is_file() {
        return Err(TraceError::Refused {
            path: name(),
            why: format!("it is {}, not a regular file", kind_of(&meta)),
        });
    }
    let f = open_ours(path, OpenOptions::new().write(true))?;
    f.set_len(0).map_err(|e| TraceError::Io(name(), e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| TraceError::Io(name(), e))?;
    Ok(f)
}

/// Opens `path` to append to it (stdout reopened on SIGHUP), creating it
/// with `mode` if it is missing; an existing file must be a regular file of
/// ours with one link.
pub fn append(path: &Path, mode: u32) -> Result<File, TraceError> {
    open_ours(
        path,
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(mode & 0o666),
    )
}

/// Opens `path` with `opts`, never through a link, never blocking (a FIFO
/// swapped in must not hang the open), and keeps it only if it is a regular
/// file of ours with one link.
fn open_ours(path: &Path, opts: &mut OpenOptions) -> Result<File, TraceError> {
    let name = || path.display().to_string();
    let f = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => TraceError::Refused {
                path: name(),
                why: "it is a symbolic link".into(),
            },
            _ => TraceError::Io(name(), e),
        })?;
    let meta = f.metadata().map_err(|e| TraceError::Io(name(), e))?;
    if let Some(why) = unsafe_to_replace(&meta) {
        return Err(TraceError::Refused { path: name(), why });
    }
    clear_nonblock(&f);
    Ok(f)
}

fn clear_nonblock(f: &File) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; a failure leaves O_NONBLOCK,
    // which regular files ignore.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Opens `path` for reading if it is a regular file (links are followed:
/// the reader chose the path). A FIFO, a socket or a device is refused
/// without being opened for reading: `O_PATH` first, then the inode itself
/// through /proc/self/fd.
pub fn read_regular(path: &Path) -> Result<File, TraceError> {
    let name = || path.display().to_string();
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| TraceError::Io(name(), e))?;
    let meta = handle.metadata().map_err(|e| TraceError::Io(name(), e))?;
    if !meta.file_type().is_file() {
        return Err(TraceError::NotRegular {
            path: name(),
            kind: kind_of(&meta),
        });
    }
    use std::os::fd::AsRawFd;
    let via_proc = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&via_proc)
    {
        Ok(f) => f,
        // No /proc (a bare chroot): the path again, never blocking, and
        // the same file or nothing.
        Err(_) => {
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| TraceError::Io(name(), e))?;
            let now = f.metadata().map_err(|e| TraceError::Io(name(), e))?;
            if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
                return Err(TraceError::Io(
                    name(),
                    io::Error::other("the file was replaced while being opened"),
                ));
            }
            clear_nonblock(&f);
            f
        }
    };
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn creates_private_files_and_refuses_to_overwrite_without_force() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.trace");
        create(&p, false).unwrap().write_all(b"one").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = create(&p, false).unwrap_err();
        assert!(matches!(e, TraceError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        // --force truncates, and tightens the mode of a file made looser.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        create(&p, true).unwrap().write_all(b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn never_follows_or_replaces_a_symlink_even_with_force() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = d.path().join("x.trace");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for force in [false, true] {
            let e = create(&link, force).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        // A dangling link: O_EXCL does not create its target either.
        let dangling = d.path().join("y.trace");
        let absent = d.path().join("absent");
        std::os::unix::fs::symlink(&absent, &dangling).unwrap();
        assert!(create(&dangling, true).is_err());
        assert!(!absent.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn force_refuses_hard_links_and_fifos() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let hard = d.path().join("h.trace");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = create(&hard, true).unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

        let fifo = d.path().join("f.trace");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = create(&fifo, true).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_regular(&fifo).unwrap_err();
        assert!(matches!(e, TraceError::NotRegular { .. }), "{e}");
        assert!(read_regular(d.path()).is_err(), "a directory");
    }

    #[test]
    fn reads_regular_files_through_links() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::write(&target, b"data").unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut s = String::new();
        read_regular(&link).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "data");
    }

    #[test]
    fn append_keeps_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.jsonl");
        append(&p, 0o640).unwrap().write_all(b"a\n").unwrap();
        append(&p, 0o640).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a\nb\n");
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(append(&link, 0o600).is_err());
    }
}

//! Where records go: stdout (JSON lines or readable lines), the trace
//! file, and the Prometheus metrics. Sinks are leaves: they know the model
//! and the words, nothing of the collector or the dashboard.
pub mod lines;
pub mod metrics;
pub mod trace;

use std::{
    io::{self, BufWriter, Stdout, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
};

use crate::{model::Record, sanitize};

/// stdout, as JSON lines or readable lines.
pub struct Console {
    json: bool,
    out: BufWriter<Stdout>,
    /// stdout's path and mode when it is a regular file (`> file`, systemd's
    /// `StandardOutput=append:`): reopened there on SIGHUP, for logrotate.
    file: Option<(PathBuf, u32)>,
}

/// stdout's path when it is a regular file that its path still names.
fn stdout_file() -> Option<(PathBuf, u32)> {
    let meta = std::fs::metadata("/proc/self/fd/1").ok()?;
    let path = std::fs::read_link("/proc/self/fd/1").ok()?;
    let named = std::fs::symlink_metadata(&path).ok()?;
    (meta.is_file() && path.is_absolute() && (named.dev(), named.ino()) == (meta.dev(), meta.ino()))
        .then(|| (path, meta.permissions().mode() & 0o777))
}

impl Console {
    pub fn new(json: bool) -> Self {
        Console {
            json,
            out: BufWriter::new(io::stdout()),
            file: stdout_file(),
        }
    }

    /// SIGHUP: if stdout is a file that was renamed (logrotate), what
    /// follows goes to a new file at its path, with its mode.
    pub fn reopen(&mut self) {
        use std::os::fd::AsRawFd;
        let Some((path, mode)) = &self.file else {
            return;
        };
        let _ = self.out.flush();
        let new = match crate::tracefile::open::append(path, *mode) {
            Ok(f) => f,
            Err(e) => {
                log::error!("SIGHUP: stdout not reopened: {e}; it goes on where it was");
                return;
            }
        };
        let (Ok(now), Ok(old)) = (new.metadata(), std::fs::metadata("/proc/self/fd/1")) else {
            return;
        };
        if (now.dev(), now.ino()) == (old.dev(), old.ino()) {
            return;
        }
        // SAFETY: both descriptors are open; stdout's buffer was flushed.
        if unsafe { libc::dup2(new.as_raw_fd(), 1) } < 0 {
            log::error!(
                "SIGHUP: stdout not reopened: {}",
                io::Error::last_os_error()
            );
            return;
        }
        log::info!("SIGHUP: stdout reopened at {}", path.display());
    }

    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        if self.json {
            let line = sanitize::to_json(r)?;
            writeln!(self.out, "{line}")
        } else {
            writeln!(self.out, "{}", lines::render(r))
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

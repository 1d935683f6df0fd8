//! The trace-file sink, on the output stage's thread: one file (`-o FILE`)
//! or a rotating set (`-o DIR`, `-o 'PATTERN-*.trace'`) for months-long
//! runs, each file readable alone.
//!
//! - Size: a single file is capped (`--max-size`, 1 GiB by default: past
//!   15/16 of it event detail stops, counters thin out, the summary is
//!   always written); a set starts a new file at `--file-size` and removes
//!   its oldest files past `--max-size` in total.
//! - A new file (rotation, or SIGHUP) needs the process table, which the
//!   collector owns: this sink raises `wants_rotation`, and the collector
//!   answers within a second with `Msg::Reopen` and a snapshot.
//! - SIGHUP: a single file is reopened at its path (logrotate renamed it:
//!   a new file starts there; nothing was renamed: writing goes on); a set
//!   starts its next file.
//! - Write errors (a full disk) end nothing: the writer keeps records in
//!   memory up to a bound and writes them once the file takes them again;
//!   what could not be kept is counted, and the summary says so.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::SystemTime,
};

use serde_json::{json, Value};

use crate::{
    clock,
    model::TraceFileStatus,
    proctable::{self, ProcTable},
    tracefile::{kind, set::Pattern, writer::TraceWriter, TraceError},
};

/// `Msg::Reopen`'s reason when it comes from SIGHUP (stdout is reopened
/// too), rather than from rotation.
pub const SIGHUP: &str = "SIGHUP";
pub const ROTATION: &str = "rotation";

/// A single trace file is capped at this by default (README: Trace files).
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// A set's files are this large at most, by default (and at most an
/// eighth of the set's total).
pub const DEFAULT_FILE_SIZE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TraceSinkError {
    #[error("cannot write the trace file")]
    Create(#[from] TraceError),
    #[error("cannot write the trace files in {0}")]
    Dir(String, #[source] std::io::Error),
    #[error("--file-size {file} is more than half of --max-size {total}: the set could not keep two files")]
    FileSize { file: u64, total: u64 },
    #[error(
        "--file-size applies to a rotating set: give -o a directory or a pattern with one '*'"
    )]
    NotASet,
}

/// What `-o` and its options asked for.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub output: PathBuf,
    pub force: bool,
    pub max_size: Option<u64>,
    pub file_size: Option<u64>,
}

/// Counts one more file's writer in.
fn add(status: &mut TraceFileStatus, w: &TraceWriter) {
    status.files += 1;
    status.bytes += w.bytes_written;
    status.records_lost += w.records_lost;
    status.bytes_unwritten += w.pending() as u64;
    status.records_shortened += w.records_shortened;
    status.records_too_large += w.records_too_large;
}

enum Target {
    File {
        path: PathBuf,
        max_size: u64,
    },
    Set {
        pattern: Pattern,
        next_seq: u64,
        file_size: u64,
        max_total: u64,
    },
}

/// The snapshot that starts each file: who was running, so that pids in
/// the file can be described on another machine.
pub fn process_table(procs: &ProcTable) -> Vec<Value> {
    procs
        .alive_procs()
        .map(|p| {
            json!({
                "pid": p.pid, "ppid": p.ppid, "comm": p.comm, "exe": p.exe, "cmdline": p.cmdline.as_deref(), "uid": p.uid,
                "started": p.start_ticks.and_then(proctable::started_at).map(clock::rfc3339),
                "cgroups": p.cgroups.iter().map(|(c, path)| format!("{c}:{path}")).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub struct TraceSink {
    target: Target,
    force: bool,
    /// The recording's header, repeated in each file with the file's own
    /// start and sequence number.
    header: Value,
    writer: TraceWriter,
    /// The last counter snapshot, repeated at the start of a new file.
    last_counters: Option<Value>,
    /// Set when the current file of a set is full.
    pub wants_rotation: Arc<AtomicBool>,
    /// Totals of the files already closed.
    closed: TraceFileStatus,
    /// Events the closed files' caps left out.
    closed_events_dropped: u64,
    /// The current failure was logged.
    logged_failure: bool,
}

impl TraceSink {
    /// Creates the first file, with the header and the process table.
    pub fn open(
        cfg: &TraceConfig,
        header: Value,
        processes: &[Value],
        time: &str,
    ) -> Result<TraceSink, TraceSinkError> {
        let max_size = cfg.max_size.unwrap_or(DEFAULT_MAX_SIZE);
        let target = match Pattern::parse(&cfg.output) {
            Some(pattern) => {
                let file_size = cfg
                    .file_size
                    .unwrap_or_else(|| DEFAULT_FILE_SIZE.min(max_size / 8).max(4096));
                if file_size > max_size / 2 {
                    return Err(TraceSinkError::FileSize {
                        file: file_size,
                        total: max_size,
                    });
                }
                create_dir(&pattern.dir)?;
                Target::Set {
                    next_seq: pattern.next_seq(),
                    pattern,
                    file_size,
                    max_total: max_size,
                }
            }
            None if cfg.file_size.is_some() => return Err(TraceSinkError::NotASet),
            None => Target::File {
                path: cfg.output.clone(),
                max_size,
            },
        };
        let mut target = target;
        let writer = new_file(&mut target, cfg.force, &header, None, None, processes, time)?;
        let mut sink = TraceSink {
            target,
            force: cfg.force,
            header,
            writer,
            last_counters: None,
            wants_rotation: Arc::new(AtomicBool::new(false)),
            closed: TraceFileStatus::default(),
            closed_events_dropped: 0,
            logged_failure: false,
        };
        sink.prune();
        Ok(sink)
    }

    pub fn write(&mut self, kind: u8, v: &Value) {
        self.writer.write_value(kind, v);
        self.check_size();
    }

    /// The end is near: what waits goes to the file, or is counted as
    /// lost if the disk is full, so that `status` is what the file holds.
    pub fn settle(&mut self) {
        self.writer.settle();
    }

    /// The final summary, after `settle`: written whatever the caps, into
    /// the space kept for it if the disk is full.
    pub fn write_last(&mut self, kind: u8, v: &Value) {
        self.writer.write_last(kind, v);
    }

    pub fn counters(&mut self, v: Value) {
        self.writer.write_value(kind::COUNTERS, &v);
        self.last_counters = Some(v);
        self.check_size();
    }

    /// A full file of a set asks for the next one; not while the file
    /// system takes nothing (a full disk has no room for it either).
    fn check_size(&self) {
        if let Target::Set { file_size, .. } = self.target {
            if self.writer.bytes_written >= file_size && self.writer.stopped().is_none() {
                self.wants_rotation.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Events left out by the files' size caps (--max-size for a single
    /// file; twice --file-size for a set's, should rotation lag).
    pub fn events_dropped(&self) -> u64 {
        self.closed_events_dropped + self.writer.events_dropped
    }

    /// Once a second: records to the kernel (and to the disk when `sync`).
    /// A file that fails is said once when it starts failing, and once
    /// when it takes records again.
    pub fn checkpoint(&mut self, sync: bool) {
        let r = if sync {
            self.writer.sync()
        } else {
            self.writer.flush()
        };
        match (r, self.logged_failure) {
            (Err(e), false) => {
                self.logged_failure = true;
                log::error!(
                    "trace file {e}: recording goes on; records wait in memory (up to {} MiB) \
                     until the file takes them again, the rest is counted as lost",
                    crate::tracefile::writer::PENDING_MAX >> 20
                );
            }
            (Ok(()), true) => {
                self.logged_failure = false;
                log::warn!(
                    "trace file {}: written again; {} records were lost meanwhile",
                    self.writer.path().display(),
                    self.writer.records_lost + self.closed.records_lost
                );
            }
            _ => {}
        }
    }

    /// Starts the next file (rotation, SIGHUP) with this process table. A
    /// single file whose path still names it goes on as it is.
    pub fn reopen(&mut self, processes: &[Value], time: &str, why: &str) {
        self.wants_rotation.store(false, Ordering::Relaxed);
        if let Target::File { path, .. } = &self.target {
            if same_file(path, self.writer.file()) {
                log::info!(
                    "{why}: {} is still in place: writing goes on",
                    path.display()
                );
                return;
            }
        }
        // Its name now: logrotate renamed it.
        let previous =
            current_name(self.writer.file()).unwrap_or_else(|| self.writer.path().into());
        let next = match new_file(
            &mut self.target,
            self.force,
            &self.header,
            Some(&previous),
            self.last_counters.as_ref(),
            processes,
            time,
        ) {
            Ok(w) => w,
            Err(e) => {
                log::error!(
                    "{why}: {e}; writing goes on in {}",
                    self.writer.path().display()
                );
                return;
            }
        };
        let mut old = std::mem::replace(&mut self.writer, next);
        // The old file says where its recording goes on, and is complete.
        old.write_always(
            kind::CONTINUED,
            &json!({"time": time, "next": self.writer.path().display().to_string()}),
        );
        if let Err(e) = old.sync() {
            log::error!("{why}: closing the previous trace file: {e}");
        }
        add(&mut self.closed, &old);
        self.closed_events_dropped += old.events_dropped;
        log::info!("{why}: trace now goes to {}", self.writer.path().display());
        self.prune();
    }

    /// The set within its total: oldest files first.
    fn prune(&mut self) {
        let Target::Set {
            pattern, max_total, ..
        } = &self.target
        else {
            return;
        };
        match pattern.prune(*max_total, self.writer.path()) {
            Ok(removed) => {
                for m in &removed {
                    log::info!(
                        "removed {} ({} bytes): the set keeps within --max-size",
                        m.path.display(),
                        m.size
                    );
                }
                self.closed.files_removed += removed.len() as u64;
            }
            Err(e) => log::warn!(
                "cannot remove old trace files in {}: {e}",
                pattern.dir.display()
            ),
        }
    }

    /// The end: on disk if it can be, and how it went.
    pub fn finish(&mut self) -> TraceFileStatus {
        let r = self.writer.sync();
        let mut s = self.status();
        s.error = r.err().map(|e| e.to_string());
        s
    }

    /// How it goes so far.
    pub fn status(&self) -> TraceFileStatus {
        let mut s = self.closed.clone();
        let w = &self.writer;
        add(&mut s, w);
        s.path = w.path().display().to_string();
        s.error = w.failing().map(|e| e.to_string());
        s.stopped_by = w.stopped().map(|stop| stop.reason().to_string());
        s
    }
}

/// The next file: the set's next name, or the single file's path (created
/// anew, as `-o` would), with the header, the process table and the last
/// counters, so that it can be read alone.
fn new_file(
    target: &mut Target,
    force: bool,
    header: &Value,
    previous: Option<&Path>,
    last_counters: Option<&Value>,
    processes: &[Value],
    time: &str,
) -> Result<TraceWriter, TraceSinkError> {
    let mut header = header.clone();
    let (path, force, cap) = match target {
        Target::File { path, max_size } => (path.clone(), force, *max_size),
        Target::Set {
            pattern,
            next_seq,
            file_size,
            ..
        } => {
            let seq = *next_seq;
            *next_seq += 1;
            header["segment"] = seq.into();
            // A name of the set is never ours to overwrite. Rotation
            // waits for the collector's process table (a second at
            // most): twice the size is a bound in case it does not come.
            (
                pattern.name(seq, SystemTime::now()),
                false,
                file_size.saturating_mul(2),
            )
        }
    };
    header["file_started"] = time.into();
    if let Some(p) = previous {
        header["continues"] = p.display().to_string().into();
    }
    let mut w = TraceWriter::create(&path, force, &header)?;
    w.set_max_bytes(Some(cap));
    w.write_processes(time, processes);
    if let Some(c) = last_counters {
        w.write_value(kind::COUNTERS, c);
    }
    Ok(w)
}

/// The directory of a set, made private if it has to be made.
fn create_dir(dir: &Path) -> Result<(), TraceSinkError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(TraceSinkError::Dir(dir.display().to_string(), e)),
    }
}

/// The path an open file has now, if it still has one.
fn current_name(f: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    (p.is_absolute() && p.exists()).then_some(p)
}

/// Whether `path` still names the open file `f`.
fn same_file(path: &Path, f: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefile::{reader::TraceReader, set::Pattern};

    fn config(output: PathBuf, max: u64, file: Option<u64>) -> TraceConfig {
        TraceConfig {
            output,
            force: false,
            max_size: Some(max),
            file_size: file,
        }
    }

    #[test]
    fn a_set_rotates_when_asked_and_stays_within_its_total() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("set/");
        let procs = vec![json!({"pid": 1, "comm": "init"})];
        let cfg = config(dir.clone(), 64 << 10, Some(8 << 10));
        let mut sink = TraceSink::open(&cfg, json!({"started": "t0"}), &procs, "t0").unwrap();
        for i in 0..2000 {
            sink.write(
                kind::EVENT,
                &json!({"kind": "e", "i": i, "pad": "x".repeat(40)}),
            );
            if i % 100 == 0 {
                sink.counters(json!({"failures_total": i}));
            }
            // What the collector does at its next second.
            if sink.wants_rotation.swap(false, Ordering::Relaxed) {
                sink.reopen(&procs, "t1", ROTATION);
            }
        }
        let status = sink.finish();
        let pattern = Pattern::parse(&dir).unwrap();
        let members = pattern.members().unwrap();
        let total: u64 = members.iter().map(|m| m.size).sum();
        assert!(status.files > 8 && status.files_removed > 0, "{status:?}");
        assert!(total <= (64 + 16) << 10, "{total}");
        // Each file alone: header with its segment, the process table,
        // and (after the first) the counters it starts with.
        for m in &members {
            let items: Vec<_> = TraceReader::open(&m.path).unwrap().collect();
            let crate::tracefile::reader::Item::Header(h) = &items[0] else {
                panic!("{items:?}")
            };
            assert_eq!(h["segment"], m.seq);
            assert!(matches!(
                items[1],
                crate::tracefile::reader::Item::Processes(_)
            ));
            assert!(matches!(
                items[2],
                crate::tracefile::reader::Item::Counters(_)
            ));
        }
    }

    #[test]
    fn a_single_file_reopens_only_once_renamed() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("one.trace");
        let cfg = config(path.clone(), 1 << 20, None);
        let mut sink = TraceSink::open(&cfg, json!({}), &[], "t0").unwrap();
        sink.reopen(&[], "t1", SIGHUP);
        assert_eq!(sink.status().files, 1, "still in place: goes on");
        std::fs::rename(&path, d.path().join("one.trace.1")).unwrap();
        sink.reopen(&[], "t2", SIGHUP);
        sink.write(kind::EVENT, &json!({"kind": "after"}));
        let status = sink.finish();
        assert_eq!(status.files, 2);
        let old = TraceReader::open(&d.path().join("one.trace.1")).unwrap();
        let mut old = old;
        let _ = old.by_ref().count();
        assert_eq!(old.continued.unwrap()["next"], path.to_str().unwrap());
        assert!(TraceSink::open(&config(path, 1 << 20, Some(4096)), json!({}), &[], "t").is_err());
    }
}

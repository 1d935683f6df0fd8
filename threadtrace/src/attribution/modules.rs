//! The files behind mappings, read once each: opened through `files` (the
//! mapped file and nothing else), read through `elf` (bounded reads), and
//! kept under a byte budget. The collector (who holds the threads) and the
//! output stage (attribution) share one cache.
use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use super::{
    address_spaces::{MappedFile, Mapping},
    elf::{self, ElfInfo},
    files::{self, OpenError, Wanted},
};
use crate::clock::Clock;

/// A mapped file, read.
#[derive(Debug)]
pub struct Module {
    pub info: Arc<ElfInfo>,
}

#[derive(Debug, Clone)]
pub enum Resolution {
    Found(Arc<Module>),
    /// Why the file could not be read: said in the unattributed frame.
    Missing(Arc<str>),
}

/// What the cache may keep, in bytes of file data (symbols, unwind
/// tables): far more than the libraries of any incident, and bounded
/// whatever the host maps.
const BUDGET: usize = 128 << 20;
/// A file that could not be read is tried again after this long (another
/// process may map it by then).
const RETRY: Duration = Duration::from_secs(10);
/// Other processes tried for a file whose own process has exited.
const OTHER_USERS: usize = 4;

struct Entry {
    res: Resolution,
    at: Instant,
    /// For a file found changed after it was mapped: the mapping's time
    /// (kernel ns). A later mapping may be of the file as it is now (a hard
    /// link, a chmod or perf's build-id cache bump the change time of a
    /// library every process maps): it is not refused on that verdict.
    changed_for: Option<u64>,
    used: u64,
    bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ModuleStats {
    pub files_read: u64,
    pub unreadable: u64,
    pub evicted: u64,
    pub bytes: usize,
}

#[derive(Default)]
pub struct Modules {
    by_file: HashMap<Arc<MappedFile>, Entry>,
    /// The same content seen through several mappings: read once.
    by_content: HashMap<(u64, u64, i64, u64), Weak<ElfInfo>>,
    bytes: usize,
    tick: u64,
    mounts: files::MountFds,
    pub stats: ModuleStats,
}

impl Modules {
    /// The file of mapping `m` of process `pid`. `others` lists live
    /// processes that map the same file, tried when `pid` is gone.
    pub fn resolve(
        &mut self,
        pid: u32,
        m: &Mapping,
        root: Option<&OwnedFd>,
        clock: &Clock,
        others: impl FnOnce() -> Vec<(u32, u64, u64)>,
    ) -> Resolution {
        self.tick += 1;
        if let Some(e) = self.by_file.get_mut(&m.file) {
            let newer_mapping = e.changed_for.is_some_and(|since| m.since > since);
            let fresh =
                matches!(e.res, Resolution::Found(_)) || (e.at.elapsed() < RETRY && !newer_mapping);
            if fresh {
                e.used = self.tick;
                return e.res.clone();
            }
        }
        let mut w = Wanted {
            pid,
            start: m.start,
            end: m.end,
            path: &m.file.path,
            dev: m.file.dev,
            ino: m.file.ino,
            generation: m.file.generation,
            mapped_at: clock.wall(m.since),
            root,
        };
        let mut opened = files::open_mapped(&w, &mut self.mounts);
        if matches!(opened, Err(OpenError::Io(_)) | Err(OpenError::Replaced)) {
            for (other, start, end) in others().into_iter().take(OTHER_USERS) {
                w.pid = other;
                w.start = start;
                w.end = end;
                if let Ok(o) = files::open_mapped(&w, &mut self.mounts) {
                    opened = Ok(o);
                    break;
                }
            }
        }
        let changed_for = matches!(opened, Err(OpenError::Changed)).then_some(m.since);
        let (res, bytes) = match opened {
            Err(e) => {
                self.stats.unreadable += 1;
                (
                    Resolution::Missing(format!("{}: {e}", m.file.path).into()),
                    0,
                )
            }
            Ok(o) => match self.read(&o) {
                Ok((info, bytes)) => {
                    log::debug!("read {} ({:?})", m.file.path, o.how);
                    (Resolution::Found(Arc::new(Module { info })), bytes)
                }
                Err(e) => {
                    self.stats.unreadable += 1;
                    (
                        Resolution::Missing(format!("{}: {e}", m.file.path).into()),
                        0,
                    )
                }
            },
        };
        self.bytes += bytes;
        if let Some(old) = self.by_file.insert(
            m.file.clone(),
            Entry {
                res: res.clone(),
                at: Instant::now(),
                changed_for,
                used: self.tick,
                bytes,
            },
        ) {
            self.bytes -= old.bytes.min(self.bytes);
        }
        self.evict();
        self.stats.bytes = self.bytes;
        res
    }

    /// Reads a file's ELF data, or shares what another mapping of the same
    /// content already read. Returns the bytes newly kept.
    fn read(&mut self, o: &files::Opened) -> Result<(Arc<ElfInfo>, usize), elf::ElfError> {
        let key = (o.dev, o.ino, o.ctime_ns, o.len);
        if let Some(info) = self.by_content.get(&key).and_then(Weak::upgrade) {
            return Ok((info, 0));
        }
        let info = Arc::new(elf::read(&o.file, o.len)?);
        self.stats.files_read += 1;
        let bytes = info.bytes();
        self.by_content.retain(|_, w| w.strong_count() > 0);
        self.by_content.insert(key, Arc::downgrade(&info));
        Ok((info, bytes))
    }

    /// Least recently used first, until within the budget.
    fn evict(&mut self) {
        while self.bytes > BUDGET {
            let Some(victim) = self
                .by_file
                .iter()
                .filter(|(_, e)| e.bytes > 0)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.by_file.remove(&victim) {
                self.bytes -= e.bytes.min(self.bytes);
                self.stats.evicted += 1;
            }
        }
        // Negative entries are small, but a host can map many files.
        if self.by_file.len() > 65_536 {
            self.by_file
                .retain(|_, e| matches!(e.res, Resolution::Found(_)));
        }
    }
}

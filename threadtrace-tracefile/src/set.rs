//! A recording kept as a rotating set of files, for months-long runs: each
//! file self-contained (preamble, header, process table, counters at its
//! start), named `PREFIX<seq>-<UTC time>SUFFIX` with a sequence number that
//! goes on across restarts, the oldest removed first when the set passes its
//! total size. And the other side: reading one file or many, a set or a
//! directory, in time order, as one stream of records.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde_json::Value;

use crate::{
    reader::{Damage, Item, TraceReader},
    TraceError,
};

/// Files of a set written into a directory given as `-o DIR`.
pub const DEFAULT_PATTERN: &str = "threadtrace-*.trace";

/// Where a rotating set's files go: `dir/prefix<seq>-<time>suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub dir: PathBuf,
    pub prefix: String,
    pub suffix: String,
}

/// A file of a set, as found in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub path: PathBuf,
    pub seq: u64,
    pub size: u64,
}

impl Pattern {
    /// `-o` as given: a directory (one that exists, or a path ending in
    /// `/`) holds a set named `threadtrace-*.trace`; a path whose file
    /// name has one `*` is a set named so; anything else is one file.
    pub fn parse(path: &Path) -> Option<Pattern> {
        let text = path.to_str()?;
        if text.ends_with('/') || path.is_dir() {
            return Pattern::in_dir(path, DEFAULT_PATTERN);
        }
        let name = path.file_name()?.to_str()?;
        if name.matches('*').count() != 1 {
            return None;
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Pattern::in_dir(dir, name)
    }

    fn in_dir(dir: &Path, name: &str) -> Option<Pattern> {
        let (prefix, suffix) = name.split_once('*')?;
        Some(Pattern {
            dir: dir.to_path_buf(),
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The file for sequence number `seq`, started at `time`.
    pub fn name(&self, seq: u64, time: SystemTime) -> PathBuf {
        // "2026-11-22T04:43:14Z" → "20261122T044314Z": no colons in file
        // names (they trip scp and Windows).
        let stamp: String = humantime::format_rfc3339_seconds(time)
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        self.dir
            .join(format!("{}{seq:06}-{stamp}{}", self.prefix, self.suffix))
    }

    fn seq_of(&self, name: &str) -> Option<u64> {
        let middle = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        let (seq, _) = middle.split_once('-')?;
        seq.parse().ok()
    }

    /// The set's files: regular files of ours whose names fit, oldest
    /// first. Anything else in the directory is left alone.
    pub fn members(&self) -> std::io::Result<Vec<Member>> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(seq) = entry.file_name().to_str().and_then(|n| self.seq_of(n)) else {
                continue;
            };
            // lstat: a link is not a member, whatever it points to.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_file() && meta.uid() == euid {
                out.push(Member {
                    path: entry.path(),
                    seq,
                    size: meta.len(),
                });
            }
        }
        out.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.path.cmp(&b.path)));
        Ok(out)
    }

    /// The sequence number after the set's last file.
    pub fn next_seq(&self) -> u64 {
        self.members()
            .ok()
            .and_then(|m| m.last().map(|m| m.seq + 1))
            .unwrap_or(1)
    }

    /// Removes the oldest files until the set is within `max_total` bytes;
    /// `current` (the file being written) is never removed. Returns what
    /// was removed.
    pub fn prune(&self, max_total: u64, current: &Path) -> std::io::Result<Vec<Member>> {
        let members = self.members()?;
        let mut total: u64 = members.iter().map(|m| m.size).sum();
        let mut removed = Vec::new();
        for m in members {
            if total <= max_total {
                break;
            }
            if m.path == current {
                continue;
            }
            match std::fs::remove_file(&m.path) {
                Ok(()) => {
                    total -= m.size;
                    removed.push(m);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= m.size,
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// Whether the file at `p` starts like a trace (read through
/// `open::read_regular`: no FIFO, no device).
fn looks_like_a_trace(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    crate::open::read_regular(p)
        .and_then(|mut f| {
            f.read_exact(&mut head)
                .map_err(|e| TraceError::Io(String::new(), e))
        })
        .is_ok_and(|()| &head == crate::MAGIC)
}

/// The files `paths` name, each a trace file or a directory of them (every
/// regular file in it that starts like a trace, whatever its name:
/// logrotate's `x.trace.1` too), without duplicates.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TraceError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| TraceError::Io(p.display().to_string(), e))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| TraceError::Io(p.display().to_string(), e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.symlink_metadata().is_ok_and(|m| m.is_file()))
                .filter(|f| looks_like_a_trace(f))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// When a file's recording started, from its header: the file's own start
/// for a file of a set, else the recording's.
fn started(header: &Value) -> Option<SystemTime> {
    let t = header
        .get("file_started")
        .or_else(|| header.get("started"))?
        .as_str()?;
    humantime::parse_rfc3339_weak(t).ok()
}

/// A file that could not be read, and why.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub error: TraceError,
}

/// Several trace files read as one, in time order: each file's records in
/// turn (each file has its own keys: its reader starts afresh).
pub struct SetReader {
    /// Files still to read, with the first record already taken from each
    /// (to order them), in order.
    files: std::collections::VecDeque<(TraceReader, Option<Item>)>,
    current: Option<TraceReader>,
    damage: Damage,
    /// Files read or being read, in order.
    pub paths: Vec<PathBuf>,
    /// Format version of the first file.
    pub version: u16,
    /// Files that could not be opened as traces.
    pub skipped: Vec<Skipped>,
    /// The last file ends with a CONTINUED record: its recording goes on
    /// in a file that was not given.
    pub continued: Option<Value>,
    /// The CUT records of the files read (a full disk), in order.
    pub cuts: Vec<Value>,
}

impl SetReader {
    /// Opens every file (reading only its preamble and first record) and
    /// orders them by the start in their headers. Files that cannot be
    /// read are listed in `skipped`; if none can be, the first error.
    pub fn open(paths: &[PathBuf]) -> Result<SetReader, TraceError> {
        let mut opened = Vec::new();
        let mut skipped = Vec::new();
        for p in paths {
            match TraceReader::open(p) {
                Ok(mut r) => {
                    let first = r.next();
                    let key = match &first {
                        Some(Item::Header(h)) => started(h),
                        _ => None,
                    };
                    opened.push((key.is_none(), key, p.clone(), r, first));
                }
                Err(error) => skipped.push(Skipped {
                    path: p.clone(),
                    error,
                }),
            }
        }
        if opened.is_empty() {
            // Nothing readable: the most telling error. A file that is
            // not a trace says more than one that is empty.
            let pick = skipped
                .iter()
                .position(|s| !s.error.nothing_read())
                .unwrap_or(0);
            if skipped.is_empty() {
                return Err(TraceError::Empty("the files given".into()));
            }
            return Err(skipped.swap_remove(pick).error);
        }
        opened.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        let version = opened[0].3.version;
        let paths = opened.iter().map(|o| o.2.clone()).collect();
        Ok(SetReader {
            files: opened.into_iter().map(|o| (o.3, o.4)).collect(),
            current: None,
            damage: Damage::default(),
            paths,
            version,
            skipped,
            continued: None,
            cuts: Vec::new(),
        })
    }

    /// One reader already open (bytes in memory, for fuzzing).
    pub fn from_reader(r: TraceReader) -> SetReader {
        SetReader {
            version: r.version,
            paths: vec![PathBuf::from(r.name())],
            files: [(r, None)].into(),
            current: None,
            damage: Damage::default(),
            skipped: Vec::new(),
            continued: None,
            cuts: Vec::new(),
        }
    }

    /// Damage in every file read so far.
    pub fn damage(&self) -> Damage {
        let mut d = self.damage.clone();
        if let Some(r) = &self.current {
            d.add(&r.damage);
        }
        d
    }
}

impl Iterator for SetReader {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(r) = self.current.as_mut() {
                if let Some(item) = r.next() {
                    return Some(item);
                }
                let done = self.current.take().expect("checked");
                self.damage.add(&done.damage);
                self.continued = done.continued;
                self.cuts.extend(done.cuts);
            }
            let (r, first) = self.files.pop_front()?;
            self.current = Some(r);
            if first.is_some() {
                return first;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kind, writer::TraceWriter};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn patterns() {
        let d = tempfile::tempdir().unwrap();
        let p = Pattern::parse(d.path()).unwrap();
        assert_eq!(
            (p.prefix.as_str(), p.suffix.as_str()),
            ("threadtrace-", ".trace")
        );
        let p = Pattern::parse(Path::new("/var/log/tt/host-*.trace")).unwrap();
        assert_eq!(p.dir, Path::new("/var/log/tt"));
        assert_eq!((p.prefix.as_str(), p.suffix.as_str()), ("host-", ".trace"));
        assert!(Pattern::parse(Path::new("/nonexistent/new-dir/")).is_some());
        assert!(Pattern::parse(Path::new("/tmp/plain.trace")).is_none());
        assert!(Pattern::parse(Path::new("a-**.trace")).is_none());
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            p.name(42, t),
            Path::new("/var/log/tt/host-000042-20261118T110640Z.trace")
        );
        assert_eq!(p.seq_of("host-000042-20261118T110640Z.trace"), Some(42));
        assert_eq!(p.seq_of("host-x-1.trace"), None);
    }

    #[test]
    fn members_prune_oldest_first_and_leave_strangers_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = Pattern::parse(d.path()).unwrap();
        let t = SystemTime::now();
        for seq in 1..=5 {
            std::fs::write(p.name(seq, t), vec![0u8; 1000]).unwrap();
        }
        std::fs::write(d.path().join("notes.txt"), b"mine").unwrap();
        let stranger = d.path().join("threadtrace-000000-x.trace");
        std::os::unix::fs::symlink("/etc/passwd", &stranger).unwrap();
        assert_eq!(p.members().unwrap().len(), 5);
        assert_eq!(p.next_seq(), 6);
        let current = p.name(5, t);
        let removed = p.prune(2500, &current).unwrap();
        assert_eq!(
            removed.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(p.members().unwrap().len(), 2);
        assert!(d.path().join("notes.txt").exists());
        assert!(stranger.symlink_metadata().is_ok());
        // The current file stays even when it alone is over the cap.
        p.prune(10, &current).unwrap();
        assert_eq!(p.members().unwrap()[0].path, current);
    }

    fn file(dir: &Path, name: &str, started: &str, events: &[i64]) -> PathBuf {
        let path = dir.join(name);
        let mut w = TraceWriter::create(
            &path,
            false,
            &json!({"started": "x", "file_started": started}),
        )
        .unwrap();
        for e in events {
            w.write_value(kind::EVENT, &json!({"kind": "e", "n": e}));
        }
        w.sync().unwrap();
        path
    }

    #[test]
    fn reads_files_in_time_order_whatever_their_order_given() {
        let d = tempfile::tempdir().unwrap();
        let b = file(d.path(), "b.trace", "2026-01-01T00:00:10Z", &[3, 4]);
        let a = file(d.path(), "a.trace", "2026-01-01T00:00:00Z", &[1, 2]);
        let c = file(d.path(), "c.trace", "2026-01-01T00:01:00Z", &[5]);
        std::fs::write(d.path().join("cut.trace"), b"THRT").unwrap();
        let mut r = SetReader::open(&[c.clone(), a.clone(), b.clone()]).unwrap();
        let ns: Vec<i64> = r
            .by_ref()
            .filter_map(|i| match i {
                Item::Event(v) => v["n"].as_i64(),
                _ => None,
            })
            .collect();
        assert_eq!(ns, vec![1, 2, 3, 4, 5]);
        assert_eq!(r.paths, vec![a.clone(), b, c]);
        std::fs::write(d.path().join("notes.txt"), b"not a trace").unwrap();
        std::fs::copy(&a, d.path().join("a.trace.1")).unwrap();
        let all = expand(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(all.len(), 4, "a, a.1, b, c: {all:?}");
        let r = SetReader::open(&[all, vec![d.path().join("cut.trace")]].concat()).unwrap();
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].error.nothing_read());
        let e = SetReader::open(&[d.path().join("cut.trace")])
            .err()
            .unwrap();
        assert!(e.nothing_read(), "{e}");
    }
}

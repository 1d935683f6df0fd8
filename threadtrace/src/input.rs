//! What `report` and `export` read: one trace file, several, or directories
//! of them (a rotating set), in time order, narrowed to a time window
//! (`--since`, `--until`) to look at the minutes around an incident in a
//! months-long recording.
//!
//! Counters in a file are running totals since the recording started, so
//! the exact counts within a window are the last snapshot in it minus the
//! last one before it: `baseline` is that earlier snapshot.
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde_json::Value;

use crate::{
    model::Summary,
    tracefile::{
        reader::{Damage, Item, TraceReader},
        set::{self, SetReader, Skipped},
        TraceError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("--since {since} is after --until {until}: the window is empty")]
    EmptyWindow { since: String, until: String },
    #[error("no time in the trace to count --since/--until back from")]
    NoEnd,
}

impl InputError {
    /// Exit code: 2 when the input held nothing readable, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InputError::Trace(e) if e.nothing_read() => 2,
            _ => 1,
        }
    }
}

/// The minutes around an incident in a long trace.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WindowArgs {
    /// Only from TIME on: a duration back from the end of the trace (10m,
    /// 1h30m) or an RFC 3339 time (2026-11-22T04:40:00Z, or with an offset).
    /// Counts are then those within the window.
    #[arg(long, value_name = "TIME", value_parser = parse_bound)]
    pub since: Option<Bound>,
    /// Only up to TIME: a duration back from the end of the trace, or an
    /// RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_bound)]
    pub until: Option<Bound>,
}

/// A bound of the window: a duration back from the end of the trace, or a
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    BeforeEnd(Duration),
    At(SystemTime),
}

/// `10m`, `1h30m`, `90s` (back from the end), or an RFC 3339 time, in UTC
/// (`2026-11-22T04:40:00Z`) or with an offset (`2026-11-22T05:40:00+01:00`).
pub fn parse_bound(s: &str) -> Result<Bound, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Bound::BeforeEnd(d));
    }
    parse_time(s).map(Bound::At).ok_or_else(|| {
        format!(
            "{s:?} is neither a duration (10m, 1h30m) nor an RFC 3339 time (2026-11-22T04:40:00Z)"
        )
    })
}

/// An RFC 3339 time with `Z` or a `±HH:MM` offset.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s.trim_end_matches(['Z', 'z'])) {
        return Some(t);
    }
    // humantime reads UTC only: apply the offset ourselves.
    let (local, offset) = s.split_at(s.len().checked_sub(6)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(h * 3600 + m * 60);
    // 05:40+01:00 is 04:40Z.
    if sign > 0 {
        t.checked_sub(shift)
    } else {
        t.checked_add(shift)
    }
}

/// When a record happened, if it says.
fn time_of(v: &Value) -> Option<SystemTime> {
    parse_time(v.get("time")?.as_str()?)
}

/// The window, resolved to times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl Window {
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    fn contains(&self, t: SystemTime) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// The trace files, read as one, narrowed to the window.
pub struct Input {
    reader: SetReader,
    pub window: Window,
    /// The last counter snapshot before the window.
    pub baseline: Option<Value>,
    /// Events and snapshots outside the window.
    pub outside: u64,
}

impl Input {
    /// One reader (a file in memory, for the fuzz targets), all of it.
    pub fn from_reader(reader: TraceReader) -> Input {
        Input {
            reader: SetReader::from_reader(reader),
            window: Window::default(),
            baseline: None,
            outside: 0,
        }
    }

    /// Opens `paths` (files or directories); `since`/`until` counted back
    /// from the last time in the trace when they are durations.
    pub fn open(
        paths: &[PathBuf],
        since: Option<Bound>,
        until: Option<Bound>,
    ) -> Result<Input, InputError> {
        let files = set::expand(paths)?;
        let reader = SetReader::open(&files)?;
        let needs_end = matches!(since, Some(Bound::BeforeEnd(_)))
            || matches!(until, Some(Bound::BeforeEnd(_)));
        let end = if needs_end {
            Some(end_of(&reader.paths).ok_or(InputError::NoEnd)?)
        } else {
            None
        };
        let resolve = |b: Option<Bound>| -> Option<SystemTime> {
            match b? {
                Bound::At(t) => Some(t),
                Bound::BeforeEnd(d) => end?.checked_sub(d),
            }
        };
        // A duration further back than the epoch: the epoch.
        let resolve_or_epoch =
            |b: Option<Bound>| b.map(|_| resolve(b).unwrap_or(SystemTime::UNIX_EPOCH));
        let window = Window {
            since: resolve_or_epoch(since),
            until: resolve_or_epoch(until),
        };
        if let (Some(s), Some(u)) = (window.since, window.until) {
            if s > u {
                return Err(InputError::EmptyWindow {
                    since: crate::clock::rfc3339(s),
                    until: crate::clock::rfc3339(u),
                });
            }
        }
        Ok(Input {
            reader,
            window,
            baseline: None,
            outside: 0,
        })
    }

    pub fn damage(&self) -> Damage {
        self.reader.damage()
    }

    pub fn version(&self) -> u16 {
        self.reader.version
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.reader.paths
    }

    /// Files that could not be read (the others were).
    pub fn skipped(&self) -> &[Skipped] {
        &self.reader.skipped
    }

    /// The last file read ends by saying where its recording goes on.
    pub fn continued(&self) -> Option<&Value> {
        self.reader.continued.as_ref()
    }

    /// Where the files read stopped taking records (a full disk), and
    /// took them again.
    pub fn cuts(&self) -> &[Value] {
        &self.reader.cuts
    }

    /// The files for messages: "a.trace" or "a.trace and 3 more files".
    pub fn name(&self) -> String {
        let first = self
            .reader
            .paths
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match self.reader.paths.len() {
            0 | 1 => first,
            n => format!("{first} and {} more files", n - 1),
        }
    }
}

impl Iterator for Input {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let item = self.reader.next()?;
            if self.window.is_all() {
                return Some(item);
            }
            match &item {
                Item::Event(v) => {
                    if time_of(v).is_some_and(|t| self.window.contains(t)) {
                        return Some(item);
                    }
                    self.outside += 1;
                }
                Item::Counters(v) => match time_of(v) {
                    Some(t) if self.window.since.is_some_and(|s| t < s) => {
                        self.outside += 1;
                        if let Item::Counters(v) = item {
                            self.baseline = Some(v);
                        }
                    }
                    Some(t) if self.window.contains(t) => return Some(item),
                    _ => self.outside += 1,
                },
                Item::Header(_) | Item::Processes(_) => return Some(item),
            }
        }
    }
}

/// The counts between two snapshots of the same recording: `later` minus
/// `earlier`. Per-process rows are subtracted where the earlier snapshot
/// has the row (snapshots keep the top 100 processes: a process outside
/// the earlier top keeps its whole count).
pub fn since(later: &Summary, earlier: &Summary) -> Summary {
    let mut s = later.clone();
    s.duration_s = (later.duration_s - earlier.duration_s).max(0.0);
    s.failures_total = later.failures_total.saturating_sub(earlier.failures_total);
    for (api, errors) in s.by_api.iter_mut() {
        for (error, n) in errors.iter_mut() {
            let before = earlier
                .by_api
                .get(api)
                .and_then(|e| e.get(error))
                .copied()
                .unwrap_or(0);
            *n = n.saturating_sub(before);
        }
        errors.retain(|_, n| *n > 0);
    }
    s.by_api.retain(|_, e| !e.is_empty());
    for p in s.by_process.iter_mut() {
        if let Some(b) = earlier
            .by_process
            .iter()
            .find(|b| b.pid == p.pid && b.api == p.api && b.errno == p.errno)
        {
            p.count = p.count.saturating_sub(b.count);
        }
    }
    s.by_process.retain(|p| p.count > 0);
    s.by_process
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    s.events_lost = later.events_lost.saturating_sub(earlier.events_lost);
    s.events_sampled_out = later
        .events_sampled_out
        .saturating_sub(earlier.events_sampled_out);
    s.failures_without_process = later
        .failures_without_process
        .saturating_sub(earlier.failures_without_process);
    s.mmap_records_lost = later
        .mmap_records_lost
        .saturating_sub(earlier.mmap_records_lost);
    s.events_delivered = later
        .events_delivered
        .saturating_sub(earlier.events_delivered);
    s.decode_errors = later.decode_errors.saturating_sub(earlier.decode_errors);
    s.trace_events_dropped = later
        .trace_events_dropped
        .saturating_sub(earlier.trace_events_dropped);
    s
}

/// One line on stderr: paths in it are the user's, escaped.
pub fn say(message: &str) {
    eprintln!("threadtrace: {}", crate::sanitize::line(message, 2048));
}

/// What `report` and `export` start with: the input, with the files that
/// could not be read named on stderr; or, when nothing can be read, the
/// error said and the exit code (2 nothing read, 1 otherwise).
pub fn open_or_say(
    paths: &[PathBuf],
    window: &WindowArgs,
) -> Result<Input, std::process::ExitCode> {
    match Input::open(paths, window.since, window.until) {
        Ok(input) => {
            for s in input.skipped() {
                say(&format!("skipped: {}", s.error));
            }
            Ok(input)
        }
        Err(e) => {
            say(&e.to_string());
            Err(std::process::ExitCode::from(e.exit_code()))
        }
    }
}

/// Damage in one line for stderr, or None when everything was intact.
/// `unreadable`: intact records the caller could not make sense of.
pub fn damage_line(d: &Damage, unreadable: u64) -> Option<String> {
    if !d.any() && unreadable == 0 {
        return None;
    }
    let mut s = format!("skipped {} damaged bytes", d.bytes_skipped);
    if d.truncated_tail {
        s.push_str(" (the file ends mid-record: the recorder was killed while writing)");
    }
    if d.records_undecodable + unreadable > 0 {
        s.push_str(&format!(
            ", {} unreadable records",
            d.records_undecodable + unreadable
        ));
    }
    if d.candidates_unchecked > 0 {
        s.push_str(&format!(
            ", {} places that might have held a record not checked (the file is damaged \
             beyond what is worth searching)",
            d.candidates_unchecked
        ));
    }
    if let Some(e) = &d.read_error {
        s.push_str(&format!(", stopped by a read error: {e}"));
    }
    Some(s)
}

/// `export -o` must not destroy what it reads (with --force it would
/// truncate it).
pub fn refuse_overwriting_an_input(
    out: &std::path::Path,
    inputs: &[PathBuf],
) -> Result<(), TraceError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    for i in inputs {
        if let Ok(m) = std::fs::metadata(i) {
            if (m.dev(), m.ino()) == (o.dev(), o.ino()) {
                return Err(TraceError::Refused {
                    path: out.display().to_string(),
                    why: "it is one of the traces being read".into(),
                });
            }
        }
    }
    Ok(())
}

/// The last time in the trace: the latest record of the last file that
/// has one (files are in time order).
fn end_of(paths: &[PathBuf]) -> Option<SystemTime> {
    paths.iter().rev().find_map(|p| {
        let r = TraceReader::open(p).ok()?;
        r.filter_map(|item| match item {
            Item::Event(v) | Item::Counters(v) => time_of(&v),
            _ => None,
        })
        .max()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefile::{kind, writer::TraceWriter};
    use serde_json::json;

    #[test]
    fn counts_between_snapshots() {
        let mut a = Summary {
            failures_total: 10,
            by_process: vec![crate::model::fixtures::eagain(1, 10)],
            events_lost: 2,
            ..Default::default()
        };
        a.by_api
            .entry("pthread_create".into())
            .or_default()
            .insert("EAGAIN".into(), 10);
        let mut b = a.clone();
        b.failures_total = 25;
        b.by_process = vec![
            crate::model::fixtures::eagain(1, 12),
            crate::model::fixtures::eagain(2, 13),
        ];
        b.by_api
            .get_mut("pthread_create")
            .unwrap()
            .insert("EAGAIN".into(), 25);
        b.events_lost = 2;
        let d = since(&b, &a);
        assert_eq!(d.failures_total, 15);
        assert_eq!(d.by_api["pthread_create"]["EAGAIN"], 15);
        assert_eq!(
            d.by_process
                .iter()
                .map(|p| (p.pid, p.count))
                .collect::<Vec<_>>(),
            vec![(2, 13), (1, 2)]
        );
        assert_eq!(d.events_lost, 0);
    }

    #[test]
    fn bounds() {
        assert_eq!(
            parse_bound("10m").unwrap(),
            Bound::BeforeEnd(Duration::from_secs(600))
        );
        let z = parse_time("2026-11-22T04:40:00Z").unwrap();
        assert_eq!(parse_bound("2026-11-22T04:40:00Z").unwrap(), Bound::At(z));
        assert_eq!(parse_time("2026-11-22T05:40:00+01:00"), Some(z));
        assert_eq!(parse_time("2026-11-22T02:10:00-02:30"), Some(z));
        assert_eq!(
            parse_time("2026-11-22T04:40:00.250000Z"),
            z.checked_add(Duration::from_millis(250))
        );
        assert!(parse_bound("yesterday").is_err());
        assert!(parse_time("2026-11-22T04:40:00+25:00").is_none());
    }

    fn at(s: u64) -> String {
        crate::clock::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s))
    }

    /// Events each second for 100 s, and a counter snapshot each 10 s
    /// with the running total (one failure a second).
    fn trace(dir: &std::path::Path) -> PathBuf {
        let p = dir.join("w.trace");
        let mut w = TraceWriter::create(&p, false, &json!({"started": at(0)})).unwrap();
        for s in 0..100 {
            w.write_value(kind::EVENT, &json!({"kind":"e","time":at(s),"n":s}));
            if s % 10 == 9 {
                w.write_value(
                    kind::COUNTERS,
                    &json!({"time":at(s),"failures_total":s + 1}),
                );
            }
        }
        w.sync().unwrap();
        p
    }

    fn events(i: &mut Input) -> Vec<u64> {
        i.filter_map(|it| match it {
            Item::Event(v) => v["n"].as_u64(),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn since_and_until_back_from_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = trace(d.path());
        let mut i = Input::open(
            std::slice::from_ref(&p),
            Some(Bound::BeforeEnd(Duration::from_secs(30))),
            Some(Bound::BeforeEnd(Duration::from_secs(10))),
        )
        .unwrap();
        assert_eq!(events(&mut i), (69..=89).collect::<Vec<_>>());
        // The last snapshot before 69 s is the one at 59 s.
        assert_eq!(i.baseline.as_ref().unwrap()["failures_total"], 60);
        let mut all = Input::open(std::slice::from_ref(&p), None, None).unwrap();
        assert_eq!(events(&mut all).len(), 100);
        assert!(all.baseline.is_none());
    }

    #[test]
    fn absolute_times_and_empty_windows() {
        let d = tempfile::tempdir().unwrap();
        let p = trace(d.path());
        let t = |s| Some(Bound::At(parse_time(&at(s)).unwrap()));
        let mut i = Input::open(std::slice::from_ref(&p), t(5), t(7)).unwrap();
        assert_eq!(events(&mut i), vec![5, 6, 7]);
        let e = Input::open(std::slice::from_ref(&p), t(7), t(5))
            .err()
            .unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = Input::open(
            std::slice::from_ref(&p),
            None,
            Some(Bound::BeforeEnd(Duration::from_secs(86_400 * 365 * 100))),
        );
        assert_eq!(events(&mut e.unwrap()), Vec::<u64>::new());
        // Further back than the trace: all of it.
        let mut i = Input::open(
            std::slice::from_ref(&p),
            Some(Bound::BeforeEnd(Duration::from_secs(86_400 * 365 * 100))),
            None,
        )
        .unwrap();
        assert_eq!(events(&mut i).len(), 100);
    }
}

//! Writes a trace file as events arrive. Records are framed and
//! checksummed; `flush` is called at least once a second by the collector.
//!
//! A full disk (or any write error) does not end the recording: records
//! wait in memory, up to `PENDING_MAX`, and go to the file when it takes
//! them again (retried at each flush); past that, records are counted as
//! lost instead of kept. Whole records only: the file ends on a record
//! boundary wherever writing stops (a write cut short is taken back).
//!
//! A full disk is told as such: `RESERVE` bytes past the end of the file
//! are kept allocated (fallocate, the file's size unchanged), so that when
//! the disk fills up a CUT record saying so, and at the end the summary,
//! still fit. Where the file system cannot reserve space, writing works as
//! well, without the marker.
use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::SystemTime,
};

use bytes::{BufMut, BytesMut};
use serde_json::Value;

use crate::{codec, kind, TraceError, MAGIC, MAX_RECORD, MIN_READER_VERSION, VERSION};

/// Bytes kept in memory while the file does not take them (disk full).
pub const PENDING_MAX: usize = 4 << 20;
/// Bytes queued before they are handed to the kernel.
const WRITE_AT: usize = 64 << 10;
/// A record over MAX_RECORD has its strings cut to this many bytes.
const CUT_STRINGS_TO: usize = 4096;
/// Past the event cap, one counter snapshot in this many is written.
const COUNTERS_PAST_CAP: u64 = 60;
/// Process-table records are cut into parts of about this size.
const PROCESSES_PART: usize = MAX_RECORD / 2;
/// Space kept allocated past the end of the file: a CUT record and the
/// final summary (its per-process rows capped) fit in it when the disk is
/// full.
pub const RESERVE: u64 = 64 << 10;

/// Why the file stopped taking records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// No space left on the file system (ENOSPC, EDQUOT).
    DiskFull,
    /// The file system turned read-only (EROFS).
    ReadOnly,
    /// Any other write error.
    Error,
}

impl Stop {
    fn of(e: &io::Error) -> Stop {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Stop::DiskFull,
            Some(libc::EROFS) => Stop::ReadOnly,
            _ => Stop::Error,
        }
    }

    /// As the CUT record and the summary say it.
    pub fn reason(&self) -> &'static str {
        match self {
            Stop::DiskFull => "disk full",
            Stop::ReadOnly => "read-only file system",
            Stop::Error => "write error",
        }
    }
}

pub struct TraceWriter {
    path: PathBuf,
    file: File,
    /// Framed records not yet taken by the file.
    pending: Vec<u8>,
    keys: codec::Keys,
    scratch: BytesMut,
    /// Bytes of records accepted: the size the file has, or will have once
    /// the pending bytes are written.
    pub bytes_written: u64,
    pub records_written: u64,
    /// --max-size: see `set_max_bytes`.
    max_bytes: Option<u64>,
    /// Events not written because of max_bytes.
    pub events_dropped: u64,
    counters_past_cap: u64,
    /// Records not written because the file did not take them for so long
    /// that PENDING_MAX filled up.
    pub records_lost: u64,
    /// Records whose long strings were cut so that they fit MAX_RECORD.
    pub records_shortened: u64,
    /// Records too large even so: not written.
    pub records_too_large: u64,
    /// The last write error, while the file does not take what it is given.
    error: Option<io::Error>,
    /// The last write failed: wait for the next flush to try again rather
    /// than try at every record.
    blocked: bool,
    /// Bytes the file holds: whole records only.
    on_file: u64,
    /// Where each unit queued and not yet on the file ends (in the
    /// `bytes_written` count), and how many records it holds.
    ends: VecDeque<(u64, u64)>,
    /// The file's blocks are allocated up to here (RESERVE past what is
    /// written or waiting); None where the file system cannot reserve.
    reserved_to: Option<u64>,
    /// Records are held back: the disk is full (a CUT record says so in
    /// the file), and why.
    cut: Option<Stop>,
    /// Tests: the file system has no room to reserve.
    #[cfg(test)]
    no_room: bool,
}

fn frame(out: &mut BytesMut, kind: u8, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.put_u32_le(payload.len() as u32);
    out.put_u8(kind);
    out.put_u32_le(crc.finalize());
    out.put_slice(payload);
}

/// The value with every string longer than `max` bytes cut, saying so.
fn cut_strings(v: &Value, max: usize) -> Value {
    match v {
        Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}…[{} bytes cut]", &s[..end], s.len() - end))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| cut_strings(x, max)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), cut_strings(x, max)))
                .collect(),
        ),
        v => v.clone(),
    }
}

impl TraceWriter {
    /// Creates the file (see `open::create`: mode 0600, no link followed,
    /// an existing file only with `force`) and writes its preamble and
    /// header.
    pub fn create(path: &Path, force: bool, header: &Value) -> Result<Self, TraceError> {
        let file = crate::open::create(path, force)?;
        Self::new(file, path, header)
    }

    /// Starts a trace in `file`, opened for writing and empty.
    pub fn new(file: File, path: &Path, header: &Value) -> Result<Self, TraceError> {
        let mut w = TraceWriter {
            path: path.to_owned(),
            file,
            pending: Vec::with_capacity(WRITE_AT),
            keys: codec::Keys::default(),
            scratch: BytesMut::with_capacity(4096),
            bytes_written: 0,
            records_written: 0,
            max_bytes: None,
            events_dropped: 0,
            counters_past_cap: 0,
            records_lost: 0,
            records_shortened: 0,
            records_too_large: 0,
            error: None,
            blocked: false,
            on_file: 0,
            ends: VecDeque::new(),
            reserved_to: Some(0),
            cut: None,
            #[cfg(test)]
            no_room: false,
        };
        let mut pre = BytesMut::with_capacity(crate::PREAMBLE_LEN);
        pre.put_slice(MAGIC);
        pre.put_u16_le(VERSION);
        pre.put_u16_le(MIN_READER_VERSION);
        pre.put_u32_le(0);
        w.queue(&pre, 0);
        w.write_always(kind::HEADER, header);
        // The preamble and header first, without a reserve: a file without
        // them is no trace. A full disk from the start is not fatal
        // either: they wait with the rest.
        let _ = w.write_units();
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The error the file last gave, while it gives one.
    pub fn failing(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// Bytes waiting for the file to take them.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Why the file takes no records now, if it does not.
    pub fn stopped(&self) -> Option<Stop> {
        match (&self.cut, &self.error) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(e)) => Some(Stop::of(e)),
            (None, None) => None,
        }
    }

    /// Bytes the file holds.
    pub fn on_file(&self) -> u64 {
        self.on_file
    }

    /// Caps the file at `bytes`: past 15/16 of it, event detail stops and
    /// one counter snapshot a minute is written (they are taken each
    /// second); at the cap, nothing more until the final summary
    /// (`write_always`).
    pub fn set_max_bytes(&mut self, bytes: Option<u64>) {
        self.max_bytes = bytes;
    }

    /// Writes a record, unless the size cap says otherwise (see
    /// `set_max_bytes`).
    pub fn write_value(&mut self, kind: u8, v: &Value) {
        if let Some(max) = self.max_bytes {
            let event_cap = max - max / 16;
            if self.bytes_written >= event_cap {
                match kind {
                    kind::EVENT => {
                        self.events_dropped += 1;
                        return;
                    }
                    kind::COUNTERS => {
                        self.counters_past_cap += 1;
                        if self.bytes_written >= max
                            || !(self.counters_past_cap - 1).is_multiple_of(COUNTERS_PAST_CAP)
                        {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.pending.len() >= PENDING_MAX {
            // Before encoding: keys interned for a record that is not
            // written would be missing from the file.
            self.records_lost += 1;
            return;
        }
        self.write_always(kind, v);
    }

    /// Writes past the size cap and the pending bound too: the header, the
    /// process table, the last summary.
    pub fn write_always(&mut self, kind: u8, v: &Value) {
        self.keys.reset_if_full();
        let mut payload = std::mem::take(&mut self.scratch);
        payload.clear();
        let mut new_keys = Vec::new();
        self.keys.encode(v, &mut payload, &mut new_keys);
        if payload.len() > MAX_RECORD {
            // Readers drop larger records as damage: cut the long strings
            // (command lines, paths) and say so in them.
            payload.clear();
            self.keys
                .encode(&cut_strings(v, CUT_STRINGS_TO), &mut payload, &mut new_keys);
            if payload.len() > MAX_RECORD {
                self.records_too_large += 1;
                payload.clear();
            } else {
                self.records_shortened += 1;
            }
        }
        let mut framed = BytesMut::with_capacity(payload.len() + 64);
        // The keys go in even when the record does not: the encoder now
        // counts them as defined.
        for (id, name) in new_keys {
            let mut k = BytesMut::new();
            codec::put_varint(&mut k, id);
            k.put_slice(name.as_bytes());
            frame(&mut framed, kind::KEY, &k);
        }
        let records = u64::from(!payload.is_empty());
        if records > 0 {
            frame(&mut framed, kind, &payload);
            self.records_written += 1;
        }
        self.scratch = payload;
        self.queue(&framed, records);
    }

    /// A process table, in as many PROCESSES records as it takes to keep
    /// each well below MAX_RECORD: `{"time", "processes": [...], "part",
    /// "parts"}`.
    pub fn write_processes(&mut self, time: &str, processes: &[Value]) {
        let mut parts: Vec<&[Value]> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, p) in processes.iter().enumerate() {
            // The JSON size is an upper bound of the encoded size.
            let n = serde_json::to_vec(p).map(|v| v.len()).unwrap_or(0);
            if size + n > PROCESSES_PART && i > start {
                parts.push(&processes[start..i]);
                (start, size) = (i, 0);
            }
            size += n;
        }
        parts.push(&processes[start..]);
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let v = serde_json::json!({"time": time, "processes": part, "part": i, "parts": count});
            self.write_always(kind::PROCESSES, &v);
        }
    }

    /// Queues a unit (a record and the keys it defines) to be written
    /// whole.
    fn queue(&mut self, b: &[u8], records: u64) {
        self.pending.extend_from_slice(b);
        self.bytes_written += b.len() as u64;
        self.ends.push_back((self.bytes_written, records));
        if self.pending.len() >= WRITE_AT && !self.blocked && self.cut.is_none() {
            let _ = self.write_pending();
        }
    }

    /// Keeps RESERVE bytes allocated past what is written and waiting.
    /// Err when the file system has no room for them.
    fn keep_reserve(&mut self) -> io::Result<()> {
        let want = self.on_file + self.pending.len() as u64 + RESERVE;
        self.reserve_to(want)
    }

    /// Allocates the file's blocks up to `want`.
    fn reserve_to(&mut self, want: u64) -> io::Result<()> {
        let Some(to) = self.reserved_to else {
            return Ok(());
        };
        if want <= to {
            return Ok(());
        }
        #[cfg(test)]
        if self.no_room {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        // SAFETY: a valid descriptor; KEEP_SIZE allocates blocks without
        // changing the file's size.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                to as libc::off_t,
                (want - to) as libc::off_t,
            )
        };
        if r == 0 {
            self.reserved_to = Some(want);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // This file system cannot reserve: write without a reserve.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                self.reserved_to = None;
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Hands pending records to the kernel, whole, while the reserve can
    /// be kept; a full disk stops the file with a CUT record.
    fn write_pending(&mut self) -> io::Result<()> {
        if let Err(e) = self.keep_reserve() {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.stop(&e);
            self.fail(e);
            return Err(copy);
        }
        self.write_units()
    }

    /// Writes what waits; a write cut short (ENOSPC halfway through a
    /// record) is taken back, so that the file ends on a record boundary,
    /// and the rest waits.
    fn write_units(&mut self) -> io::Result<()> {
        let mut done = 0usize;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.file.write(&self.pending[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let whole = match &result {
            Ok(()) => done,
            Err(_) => self.whole_units_in(done),
        };
        if whole < done {
            let at = self.on_file + whole as u64;
            // The rest of a record the file could not finish, taken back.
            let _ = self.file.set_len(at);
            let _ = self.file.seek(io::SeekFrom::Start(at));
        }
        self.pending.drain(..whole);
        self.on_file += whole as u64;
        while self
            .ends
            .front()
            .is_some_and(|&(end, _)| end <= self.on_file)
        {
            self.ends.pop_front();
        }
        match result {
            Ok(()) => {
                self.blocked = false;
                self.error = None;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Of the first `done` pending bytes, those that end a unit.
    fn whole_units_in(&self, done: usize) -> usize {
        let reach = self.on_file + done as u64;
        self.ends
            .iter()
            .take_while(|&&(end, _)| end <= reach)
            .last()
            .map_or(0, |&(end, _)| (end - self.on_file) as usize)
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.blocked = true;
        let copy = io::Error::new(e.kind(), e.to_string());
        self.error = Some(e);
        copy
    }

    /// What waits is given up and counted as lost; the keys start again, so
    /// that what comes next defines its own.
    fn give_up_pending(&mut self) {
        self.records_lost += self.ends.iter().map(|&(_, n)| n).sum::<u64>();
        self.bytes_written = self.on_file;
        self.pending.clear();
        self.ends.clear();
        self.keys.reset();
    }

    /// The disk is full: a CUT record, written into the reserve, says so
    /// where the file stops (what waited is counted as lost); records
    /// wait in memory from then on.
    fn stop(&mut self, e: &io::Error) {
        let stop = Stop::of(e);
        // Not before the header is on the file: without it, no trace.
        if self.cut.is_some()
            || stop != Stop::DiskFull
            || self.reserved_to.is_none()
            || self.on_file == 0
        {
            return;
        }
        self.cut = Some(stop.clone());
        self.give_up_pending();
        let v = serde_json::json!({
            "time": now(), "reason": stop.reason(), "error": e.to_string(),
            "records_lost": self.records_lost,
        });
        self.write_now(kind::CUT, &v);
    }

    /// Writes one record at once, nothing waiting before it, into the
    /// reserve.
    fn write_now(&mut self, kind: u8, v: &Value) {
        let (error, blocked) = (self.error.take(), self.blocked);
        self.write_always(kind, v);
        let _ = self.write_units();
        // Written into the reserve: the file still takes nothing else.
        if self.error.is_none() {
            (self.error, self.blocked) = (error, blocked);
        }
    }

    /// Hands buffered records to the kernel, so that they survive the
    /// recorder being killed. After a write error, and while the disk is
    /// full, this is where writing is tried again.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        if self.cut.is_some() {
            // Room again is room for a whole new reserve past what the
            // file holds, waits, and has kept for the summary.
            let now_reserved = self.reserved_to.unwrap_or(0);
            let want = (self.on_file + self.pending.len() as u64).max(now_reserved) + RESERVE;
            if self.reserve_to(want).is_err() {
                return Err(TraceError::Io(
                    self.path.display().to_string(),
                    io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
            // Room again: what waited follows, then a CUT record says so.
            self.cut = None;
            let v = serde_json::json!({
                "time": now(), "resumed": true, "records_lost": self.records_lost,
            });
            self.write_always(kind::CUT, &v);
        }
        self.write_pending()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))
    }

    /// The end is near: what waits goes to the file if it takes it, else
    /// it is counted as lost, so that the summary says what the file holds
    /// and still fits in the reserve.
    pub fn settle(&mut self) {
        if self.flush().is_err() && self.cut.is_some() {
            self.give_up_pending();
        }
    }

    /// The final summary, after `settle`: into the reserve when the disk is
    /// full.
    pub fn write_last(&mut self, kind: u8, v: &Value) {
        if self.cut.is_some() {
            self.write_now(kind, v);
        } else {
            self.write_always(kind, v);
        }
    }

    /// Flush and fdatasync: used at the end and periodically, so a host
    /// crash loses at most the last interval.
    pub fn sync(&mut self) -> Result<(), TraceError> {
        let flushed = self.flush();
        // What is on the file goes to the disk even while the rest waits.
        let synced = self
            .file
            .sync_data()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e));
        flushed.and(synced)
    }
}

/// Now, as the records say times.
fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{Item, TraceReader};
    use serde_json::json;

    #[test]
    fn records_over_max_record_are_shortened_not_dropped_by_readers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.trace");
        let mut w = TraceWriter::create(&p, false, &json!({"h": 1})).unwrap();
        let huge = "x".repeat(MAX_RECORD + 10);
        w.write_value(kind::EVENT, &json!({"kind": "a", "cmdline": huge}));
        // Too large even cut: a million short strings.
        let many: Vec<String> = (0..300_000).map(|i| format!("s{i}")).collect();
        w.write_value(kind::EVENT, &json!({"kind": "b", "many": many}));
        w.write_value(kind::EVENT, &json!({"kind": "c"}));
        w.sync().unwrap();
        assert_eq!((w.records_shortened, w.records_too_large), (1, 1));
        let mut r = TraceReader::open(&p).unwrap();
        let items: Vec<Item> = r.by_ref().collect();
        assert!(!r.damage.any(), "{:?}", r.damage);
        assert_eq!(items.len(), 3, "header, a and c");
        let Item::Event(a) = &items[1] else { panic!() };
        let cmdline = a["cmdline"].as_str().unwrap();
        assert!(cmdline.len() < 5000 && cmdline.ends_with("bytes cut]"));
        assert_eq!(items[2], Item::Event(json!({"kind": "c"})));
    }

    #[test]
    fn a_large_process_table_is_written_in_parts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("procs.trace");
        let mut w = TraceWriter::create(&p, false, &json!({})).unwrap();
        let procs: Vec<Value> = (0..20_000)
            .map(|pid| json!({"pid": pid, "cmdline": "y".repeat(200)}))
            .collect();
        w.write_processes("t", &procs);
        w.sync().unwrap();
        let parts: Vec<Value> = TraceReader::open(&p)
            .unwrap()
            .filter_map(|i| match i {
                Item::Processes(v) => Some(v),
                _ => None,
            })
            .collect();
        assert!(parts.len() >= 8, "{} parts", parts.len());
        let total: usize = parts
            .iter()
            .map(|v| v["processes"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 20_000);
        assert_eq!(parts[0]["parts"], parts.len());
    }

    #[test]
    fn the_cap_stops_events_then_thins_counters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cap.trace");
        let mut w = TraceWriter::create(&p, false, &json!({})).unwrap();
        w.set_max_bytes(Some(64 << 10));
        for i in 0..10_000 {
            w.write_value(
                kind::EVENT,
                &json!({"kind": "e", "i": i, "pad": "p".repeat(50)}),
            );
            w.write_value(kind::COUNTERS, &json!({"failures_total": i}));
        }
        w.write_always(kind::EVENT, &json!({"kind": "summary"}));
        w.sync().unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= (64 << 10) + 1024, "{size}");
        assert!(w.events_dropped > 9000);
        let items: Vec<Item> = TraceReader::open(&p).unwrap().collect();
        assert_eq!(
            items.last().unwrap(),
            &Item::Event(json!({"kind": "summary"}))
        );
    }

    /// A full disk: a CUT record where the file stopped, what waited
    /// counted as lost, what came meanwhile written once there is room,
    /// with a second CUT record; the summary last; every record readable.
    #[test]
    fn a_full_disk_is_marked_in_the_file_and_writing_resumes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cut.trace");
        let mut w = TraceWriter::create(&p, false, &json!({"h": 1})).unwrap();
        w.write_value(kind::EVENT, &json!({"kind": "before"}));
        w.flush().unwrap();
        w.write_value(kind::EVENT, &json!({"kind": "waiting"}));
        w.stop(&io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(w.stopped(), Some(Stop::DiskFull));
        assert_eq!(w.records_lost, 1, "what waited when the disk filled");
        w.write_value(kind::EVENT, &json!({"kind": "meanwhile"}));
        // Room again (this file system has it): the flush resumes.
        w.flush().unwrap();
        assert_eq!(w.stopped(), None);
        w.settle();
        w.write_last(kind::EVENT, &json!({"kind": "summary"}));
        w.sync().unwrap();
        let mut r = TraceReader::open(&p).unwrap();
        let items: Vec<Item> = r.by_ref().collect();
        assert!(!r.damage.any(), "{:?}", r.damage);
        let kinds: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                Item::Event(v) => v["kind"].as_str(),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["before", "meanwhile", "summary"]);
        assert_eq!(r.cuts.len(), 2, "{:?}", r.cuts);
        assert_eq!(r.cuts[0]["reason"], "disk full");
        assert_eq!(r.cuts[1]["resumed"], true);
    }

    /// Still full at the end: the summary goes into the reserve, after the
    /// CUT record, and what waited is counted as lost.
    #[test]
    fn a_disk_still_full_at_the_end_keeps_the_summary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("full.trace");
        let mut w = TraceWriter::create(&p, false, &json!({"h": 1})).unwrap();
        w.write_value(kind::EVENT, &json!({"kind": "before"}));
        w.flush().unwrap();
        w.stop(&io::Error::from_raw_os_error(libc::ENOSPC));
        w.write_value(kind::EVENT, &json!({"kind": "held"}));
        // The disk stays full: no reservation is possible.
        w.no_room = true;
        w.settle();
        assert_eq!(
            w.records_lost, 1,
            "the held record, given up for the summary"
        );
        w.write_last(kind::EVENT, &json!({"kind": "summary"}));
        let mut r = TraceReader::open(&p).unwrap();
        let kinds: Vec<String> = r
            .by_ref()
            .filter_map(|i| match i {
                Item::Event(v) => v["kind"].as_str().map(String::from),
                _ => None,
            })
            .collect();
        assert!(!r.damage.any(), "{:?}", r.damage);
        assert_eq!(kinds, ["before", "summary"]);
        assert_eq!(r.cuts.len(), 1);
    }

    #[test]
    fn keys_restart_when_the_table_is_full() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys.trace");
        let mut w = TraceWriter::create(&p, false, &json!({})).unwrap();
        let n = codec::MAX_KEYS + 100;
        for i in 0..n {
            w.write_value(kind::EVENT, &json!({ format!("k{i}"): i, "kind": "x" }));
        }
        w.sync().unwrap();
        let mut r = TraceReader::open(&p).unwrap();
        let events: Vec<Item> = r.by_ref().skip(1).collect();
        assert!(!r.damage.any(), "{:?}", r.damage);
        assert_eq!(events.len(), n);
        assert_eq!(
            events[n - 1],
            Item::Event(json!({ format!("k{}", n - 1): n - 1, "kind": "x" }))
        );
    }
}

//! Writes a trace file as events arrive. Records are framed and
//! checksummed; `flush` is called at least once a second by the collector.
//!
//! A full disk (or any write error) does not end the recording: records
//! wait in memory, up to `PENDING_MAX`, and go to the file when it takes
//! them again (retried at each flush); past that, records are counted as
//! lost instead of kept. Whole records only: a record is either queued
//! whole or not at all, so the file stays readable wherever it stops.
use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
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
        };
        let mut pre = BytesMut::with_capacity(crate::PREAMBLE_LEN);
        pre.put_slice(MAGIC);
        pre.put_u16_le(VERSION);
        pre.put_u16_le(MIN_READER_VERSION);
        pre.put_u32_le(0);
        w.queue(&pre);
        w.write_always(kind::HEADER, header);
        // A full disk from the start is not fatal either: the header waits
        // with the rest.
        let _ = w.flush();
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
        if !payload.is_empty() {
            frame(&mut framed, kind, &payload);
            self.records_written += 1;
        }
        self.scratch = payload;
        self.queue(&framed);
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

    fn queue(&mut self, b: &[u8]) {
        self.pending.extend_from_slice(b);
        self.bytes_written += b.len() as u64;
        if self.pending.len() >= WRITE_AT && !self.blocked {
            let _ = self.write_pending();
        }
    }

    /// Hands pending bytes to the kernel, as many as it takes.
    fn write_pending(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.file.write(&self.pending) {
                Ok(0) => return Err(self.fail(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.blocked = false;
        self.error = None;
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.blocked = true;
        let copy = io::Error::new(e.kind(), e.to_string());
        self.error = Some(e);
        copy
    }

    /// Hands buffered records to the kernel, so that they survive the
    /// recorder being killed. After a write error this is where writing is
    /// tried again.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.write_pending()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))
    }

    /// Flush and fdatasync: used at the end and periodically, so a host
    /// crash loses at most the last interval.
    pub fn sync(&mut self) -> Result<(), TraceError> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))
    }
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

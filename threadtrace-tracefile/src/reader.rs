//! Reads a trace file back: every intact record, skipping damaged ones and
//! saying how much was skipped. Never panics on any input, and on any input
//! does bounded work in bounded memory:
//! - the file is streamed, never read whole: memory is one record (at most
//!   MAX_RECORD) plus a read buffer, whatever the file's size;
//! - only regular files are opened (a FIFO would hang it, a device could be
//!   armed by the open);
//! - after damage, finding the next intact record checks a CRC at each
//!   candidate offset, up to MAX_RECORD bytes each: a crafted file can make
//!   every offset a candidate. That work comes from a budget (a token
//!   bucket refilled by the bytes read, `CRC_PER_BYTE` per byte): a
//!   candidate it cannot pay for is skipped and counted, so a file costs at
//!   most `CRC_BURST` + `CRC_PER_BYTE` × its size in checksums. Intact
//!   files never run short: each record refills more than it costs.
//! - a record decodes into at most `codec::MAX_DECODED` bytes.
use std::{io::Read, path::Path};

use serde_json::Value;

use crate::{
    codec::KeyTable, kind, TraceError, MAGIC, MAX_RECORD, PREAMBLE_LEN, RECORD_HEADER_LEN, VERSION,
};

/// Checksum work allowed per byte read, and at most in reserve.
const CRC_PER_BYTE: u64 = 4;
const CRC_BURST: u64 = 16 << 20;
/// Bytes asked of the file at a time.
const CHUNK: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Header(Value),
    Event(Value),
    Counters(Value),
    Processes(Value),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Bytes passed over while looking for the next intact record.
    pub bytes_skipped: u64,
    /// Intact frames whose content could not be decoded.
    pub records_undecodable: u64,
    /// A record cut short at the end of the file (the recorder was killed).
    pub truncated_tail: bool,
    /// Places that looked like a record but were not checked, the
    /// checksum budget being spent (a crafted or badly damaged file).
    pub candidates_unchecked: u64,
    /// The file could not be read to its end (an I/O error).
    pub read_error: Option<String>,
}

impl Damage {
    pub fn any(&self) -> bool {
        self.bytes_skipped > 0
            || self.records_undecodable > 0
            || self.candidates_unchecked > 0
            || self.read_error.is_some()
    }

    pub fn add(&mut self, other: &Damage) {
        self.bytes_skipped += other.bytes_skipped;
        self.records_undecodable += other.records_undecodable;
        self.truncated_tail |= other.truncated_tail;
        self.candidates_unchecked += other.candidates_unchecked;
        if self.read_error.is_none() {
            self.read_error.clone_from(&other.read_error);
        }
    }
}

enum Frame {
    Valid {
        kind: u8,
        len: usize,
    },
    /// Not a record here.
    Invalid,
    /// Could be one; the budget could not pay for its checksum.
    Unchecked,
}

pub struct TraceReader {
    src: Box<dyn Read + Send>,
    name: String,
    buf: Vec<u8>,
    /// Index in `buf` of the next byte to read.
    pos: usize,
    eof: bool,
    /// Inside damage, looking for the next record.
    skipping: bool,
    keys: KeyTable,
    budget: u64,
    /// Format version the file was written with.
    pub version: u16,
    pub damage: Damage,
    /// The file ends with a CONTINUED record: its recording goes on in
    /// another file (rotation, or a reopen on SIGHUP).
    pub continued: Option<Value>,
    /// CUT records: where the file stopped taking records (a full disk),
    /// and took them again; the first ones, at most CUTS_KEPT.
    pub cuts: Vec<Value>,
}

/// CUT records kept by a reader.
const CUTS_KEPT: usize = 64;

impl TraceReader {
    /// Opens a regular file (see `open::read_regular`) and reads its
    /// preamble.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let f = crate::open::read_regular(path)?;
        Self::new(Box::new(f), &path.display().to_string())
    }

    pub fn from_bytes(data: Vec<u8>, name: &str) -> Result<Self, TraceError> {
        Self::new(Box::new(std::io::Cursor::new(data)), name)
    }

    pub fn new(src: Box<dyn Read + Send>, name: &str) -> Result<Self, TraceError> {
        let mut r = TraceReader {
            src,
            name: name.to_string(),
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            eof: false,
            skipping: false,
            keys: KeyTable::default(),
            budget: CRC_BURST,
            version: 0,
            damage: Damage::default(),
            continued: None,
            cuts: Vec::new(),
        };
        let have = r.fill(PREAMBLE_LEN);
        if let Some(e) = r.damage.read_error.take() {
            return Err(TraceError::Io(name.into(), std::io::Error::other(e)));
        }
        let head = &r.buf[..have.min(PREAMBLE_LEN)];
        if have < PREAMBLE_LEN {
            // The writer puts the whole preamble down in one write: a
            // prefix of it is a recorder stopped as it started.
            let magic = &head[..head.len().min(MAGIC.len())];
            return Err(if have == 0 {
                TraceError::Empty(name.into())
            } else if MAGIC.starts_with(magic) {
                TraceError::CutPreamble(name.into())
            } else {
                TraceError::NotATrace(name.into())
            });
        }
        if &head[..8] != MAGIC {
            return Err(TraceError::NotATrace(name.into()));
        }
        let version = u16::from_le_bytes([head[8], head[9]]);
        let min_reader = u16::from_le_bytes([head[10], head[11]]);
        if min_reader > VERSION {
            return Err(TraceError::TooNew {
                path: name.into(),
                version,
            });
        }
        r.version = version;
        r.pos = PREAMBLE_LEN;
        Ok(r)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `n` bytes available from `pos`, unless the file ends first;
    /// returns how many are.
    fn fill(&mut self, n: usize) -> usize {
        while self.buf.len() - self.pos < n && !self.eof {
            if self.pos >= CHUNK && self.pos * 2 >= self.buf.len() {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let old = self.buf.len();
            let want = (n - (old - self.pos)).max(CHUNK);
            self.buf.resize(old + want, 0);
            match self.src.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    self.eof = true;
                }
                Ok(k) => self.buf.truncate(old + k),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    self.eof = true;
                    self.damage.read_error = Some(e.to_string());
                }
            }
        }
        self.buf.len() - self.pos
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.budget = (self.budget + CRC_PER_BYTE * n as u64).min(CRC_BURST);
    }

    /// Whether a whole record with a matching checksum starts at `pos`.
    fn frame(&mut self) -> Frame {
        if self.fill(RECORD_HEADER_LEN) < RECORD_HEADER_LEN {
            return Frame::Invalid;
        }
        let h = &self.buf[self.pos..self.pos + RECORD_HEADER_LEN];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = h[4];
        let crc = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
        if len > MAX_RECORD || self.fill(RECORD_HEADER_LEN + len) < RECORD_HEADER_LEN + len {
            return Frame::Invalid;
        }
        let cost = len as u64 + 1;
        if cost > self.budget {
            return Frame::Unchecked;
        }
        self.budget -= cost;
        let start = self.pos + RECORD_HEADER_LEN;
        let mut c = crc32fast::Hasher::new();
        c.update(&[kind]);
        c.update(&self.buf[start..start + len]);
        if c.finalize() == crc {
            Frame::Valid { kind, len }
        } else {
            Frame::Invalid
        }
    }

    /// Is the damage at `pos` a record cut short by the end of the file?
    fn cut_at_end(&mut self) -> bool {
        let have = self.fill(RECORD_HEADER_LEN);
        if have < 4 {
            return have > 0;
        }
        let b = &self.buf[self.pos..self.pos + 4];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        len <= MAX_RECORD && self.fill(RECORD_HEADER_LEN + len) < RECORD_HEADER_LEN + len
    }
}

impl Iterator for TraceReader {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if self.fill(1) == 0 {
                return None;
            }
            let (kind, len) = match self.frame() {
                Frame::Valid { kind, len } => (kind, len),
                damaged => {
                    if !self.skipping {
                        self.skipping = true;
                        self.damage.truncated_tail = self.cut_at_end();
                    }
                    if matches!(damaged, Frame::Unchecked) {
                        self.damage.candidates_unchecked += 1;
                    }
                    // Resynchronize: one byte on, and look again.
                    self.damage.bytes_skipped += 1;
                    self.advance(1);
                    continue;
                }
            };
            // An intact record after damage: the damage was not the end.
            self.skipping = false;
            self.damage.truncated_tail = false;
            let start = self.pos + RECORD_HEADER_LEN;
            let payload = &self.buf[start..start + len];
            let decoded = match kind {
                kind::KEY => {
                    if self.keys.define(payload).is_none() {
                        self.damage.records_undecodable += 1;
                    }
                    None
                }
                kind::HEADER
                | kind::EVENT
                | kind::COUNTERS
                | kind::PROCESSES
                | kind::CONTINUED
                | kind::CUT => {
                    let mut b = payload;
                    let v = self.keys.decode(&mut b);
                    if v.is_none() {
                        self.damage.records_undecodable += 1;
                    }
                    v
                }
                // A record type from a newer version: not for us.
                _ => None,
            };
            self.advance(RECORD_HEADER_LEN + len);
            let Some(value) = decoded else { continue };
            return Some(match kind {
                kind::HEADER => Item::Header(value),
                kind::EVENT => Item::Event(value),
                kind::PROCESSES => Item::Processes(value),
                kind::CONTINUED => {
                    self.continued = Some(value);
                    continue;
                }
                kind::CUT => {
                    if self.cuts.len() < CUTS_KEPT {
                        self.cuts.push(value);
                    }
                    continue;
                }
                _ => Item::Counters(value),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::TraceWriter;
    use serde_json::json;

    fn sample() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace");
        let mut w =
            TraceWriter::create(&path, false, &json!({"host":"h","kernel":"6.18"})).unwrap();
        for i in 0..5 {
            w.write_value(
                kind::EVENT,
                &json!({"kind":"thread_create_failed","pid":i,"errno":11}),
            );
        }
        w.write_value(kind::COUNTERS, &json!({"failures_total":5}));
        w.flush().unwrap();
        (dir, path)
    }

    #[test]
    fn reads_back_what_was_written_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, path) = sample();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let items: Vec<Item> = TraceReader::open(&path).unwrap().collect();
        assert_eq!(items.len(), 7);
        assert_eq!(items[0], Item::Header(json!({"host":"h","kernel":"6.18"})));
        assert_eq!(
            items[3],
            Item::Event(json!({"kind":"thread_create_failed","pid":2,"errno":11}))
        );
    }

    #[test]
    fn truncation_at_every_offset_never_panics_and_keeps_the_prefix() {
        let (_d, path) = sample();
        let full = std::fs::read(&path).unwrap();
        let mut last = 0;
        for cut in 0..full.len() {
            match TraceReader::from_bytes(full[..cut].to_vec(), "cut") {
                Err(e) if e.nothing_read() => assert!(cut < PREAMBLE_LEN),
                Err(e) => panic!("{e}"),
                Ok(r) => {
                    let n = r.count();
                    assert!(n >= last, "more data never yields fewer records");
                    last = n;
                }
            }
        }
        assert_eq!(last, 6);
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_reported() {
        let (_d, path) = sample();
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 30] ^= 0xff; // inside one of the last records
        let mut r = TraceReader::from_bytes(data, "x").unwrap();
        let items: Vec<Item> = r.by_ref().collect();
        assert_eq!(items.len(), 6);
        assert!(r.damage.bytes_skipped > 0);
    }

    #[test]
    fn refuses_a_future_version_clearly() {
        let (_d, path) = sample();
        let mut data = std::fs::read(&path).unwrap();
        data[8..10].copy_from_slice(&9u16.to_le_bytes());
        data[10..12].copy_from_slice(&9u16.to_le_bytes());
        let err = TraceReader::from_bytes(data, "f.trace")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("v9") && err.contains("newer"), "{err}");
        assert!(TraceReader::from_bytes(b"hello world, not a trace".to_vec(), "x").is_err());
    }

    #[test]
    fn a_cut_preamble_is_nothing_read_not_a_foreign_file() {
        for n in 1..PREAMBLE_LEN {
            let mut pre = MAGIC.to_vec();
            pre.extend_from_slice(&[1, 0, 1, 0, 0, 0, 0, 0]);
            let e = TraceReader::from_bytes(pre[..n].to_vec(), "c")
                .err()
                .unwrap();
            assert!(matches!(e, TraceError::CutPreamble(_)), "{n}: {e}");
        }
        let e = TraceReader::from_bytes(Vec::new(), "e").err().unwrap();
        assert!(matches!(e, TraceError::Empty(_)), "{e}");
        let e = TraceReader::from_bytes(b"THRX".to_vec(), "x")
            .err()
            .unwrap();
        assert!(matches!(e, TraceError::NotATrace(_)), "{e}");
    }

    /// The file of issue 14: a preamble, then 2 MiB where every offset
    /// looks like the start of a record of up to 1 MiB. Checking each one
    /// took 12 s; the checksum budget bounds it.
    pub fn crafted_slow_file() -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[1, 0, 1, 0, 0, 0, 0, 0]);
        while data.len() < 2 << 20 {
            data.extend_from_slice(&[0x00, 0x00, 0x08, 0x00]);
        }
        data
    }

    #[test]
    fn resynchronization_work_is_bounded() {
        let data = crafted_slow_file();
        let n = data.len() as u64;
        let t0 = std::time::Instant::now();
        let mut r = TraceReader::from_bytes(data, "slow").unwrap();
        assert_eq!(r.by_ref().count(), 0);
        let took = t0.elapsed();
        assert_eq!(r.damage.bytes_skipped, n - PREAMBLE_LEN as u64);
        assert!(r.damage.candidates_unchecked > 0, "{:?}", r.damage);
        // The bound is on work, not time: what the budget allows.
        assert!(CRC_BURST + CRC_PER_BYTE * n < 32 << 20);
        eprintln!("crafted 2 MiB file read in {took:?}");
    }

    #[test]
    fn records_after_crafted_damage_are_still_found() {
        let (_d, path) = sample();
        let good = std::fs::read(&path).unwrap();
        let mut data = crafted_slow_file();
        data.truncate(256 << 10);
        data.extend_from_slice(&good[PREAMBLE_LEN..]);
        let mut r = TraceReader::from_bytes(data, "mixed").unwrap();
        let items: Vec<Item> = r.by_ref().collect();
        assert_eq!(items.len(), 7, "{:?}", r.damage);
    }

    #[test]
    fn streams_a_file_larger_than_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.trace");
        let mut w = TraceWriter::create(&path, false, &json!({})).unwrap();
        for i in 0..50_000 {
            w.write_value(
                kind::EVENT,
                &json!({"kind":"e","i":i,"pad":"z".repeat(100)}),
            );
        }
        w.sync().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 4 * CHUNK as u64);
        let mut r = TraceReader::open(&path).unwrap();
        assert_eq!(r.by_ref().count(), 50_001);
        assert!(!r.damage.any());
        assert!(r.buf.capacity() <= 4 * CHUNK, "{}", r.buf.capacity());
    }
}

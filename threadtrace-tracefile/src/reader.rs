//! Reads a trace file back: every intact record, skipping damaged ones and
//! saying how much was skipped. Never panics on any input.
use std::path::Path;

use serde_json::Value;

use crate::{
    codec::KeyTable, kind, TraceError, MAGIC, MAX_RECORD, PREAMBLE_LEN, RECORD_HEADER_LEN, VERSION,
};

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
}

pub struct TraceReader {
    data: Vec<u8>,
    pos: usize,
    keys: KeyTable,
    /// Format version the file was written with.
    pub version: u16,
    pub damage: Damage,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let data =
            std::fs::read(path).map_err(|e| TraceError::Io(path.display().to_string(), e))?;
        Self::from_bytes(data, &path.display().to_string())
    }

    pub fn from_bytes(data: Vec<u8>, name: &str) -> Result<Self, TraceError> {
        if data.len() < PREAMBLE_LEN || &data[..8] != MAGIC {
            return Err(TraceError::NotATrace(name.into()));
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        let min_reader = u16::from_le_bytes([data[10], data[11]]);
        if min_reader > VERSION {
            return Err(TraceError::TooNew {
                path: name.into(),
                version,
            });
        }
        Ok(TraceReader {
            data,
            pos: PREAMBLE_LEN,
            keys: KeyTable::default(),
            version,
            damage: Damage::default(),
        })
    }

    /// The frame at `at` if it is whole and its checksum matches.
    fn frame_at(&self, at: usize) -> Option<(u8, usize, usize)> {
        let h = self.data.get(at..at + RECORD_HEADER_LEN)?;
        let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
        let kind = h[4];
        let crc = u32::from_le_bytes(h[5..9].try_into().ok()?);
        if len > MAX_RECORD {
            return None;
        }
        let start = at + RECORD_HEADER_LEN;
        let payload = self.data.get(start..start + len)?;
        let mut c = crc32fast::Hasher::new();
        c.update(&[kind]);
        c.update(payload);
        (c.finalize() == crc).then_some((kind, start, len))
    }
}

impl Iterator for TraceReader {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if self.pos >= self.data.len() {
                return None;
            }
            let Some((kind, start, len)) = self.frame_at(self.pos) else {
                // Damage: is it a record cut short at the end of the file?
                if let Some(h) = self.data.get(self.pos..self.pos + 4) {
                    let len = u32::from_le_bytes(h.try_into().expect("4 bytes")) as usize;
                    if len <= MAX_RECORD && self.pos + RECORD_HEADER_LEN + len > self.data.len() {
                        self.damage.truncated_tail = true;
                    }
                }
                // Resynchronize on the next position where a whole record
                // with a matching checksum starts.
                let from = self.pos;
                let mut at = self.pos + 1;
                while at < self.data.len() && self.frame_at(at).is_none() {
                    at += 1;
                }
                if at < self.data.len() {
                    self.damage.truncated_tail = false;
                }
                self.damage.bytes_skipped += (at - from) as u64;
                self.pos = at;
                continue;
            };
            self.pos = start + len;
            let payload = &self.data[start..start + len];
            let value = match kind {
                kind::KEY => {
                    if self.keys.define(payload).is_none() {
                        self.damage.records_undecodable += 1;
                    }
                    continue;
                }
                kind::HEADER | kind::EVENT | kind::COUNTERS | kind::PROCESSES => {
                    let mut b = payload;
                    match self.keys.decode(&mut b) {
                        Some(v) => v,
                        None => {
                            self.damage.records_undecodable += 1;
                            continue;
                        }
                    }
                }
                // A record type from a newer version: not for us.
                _ => continue,
            };
            return Some(match kind {
                kind::HEADER => Item::Header(value),
                kind::EVENT => Item::Event(value),
                kind::PROCESSES => Item::Processes(value),
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
        let mut w = TraceWriter::create(&path, &json!({"host":"h","kernel":"6.18"})).unwrap();
        for i in 0..5 {
            w.write_value(
                kind::EVENT,
                &json!({"kind":"thread_create_failed","pid":i,"errno":11}),
            )
            .unwrap();
        }
        w.write_value(kind::COUNTERS, &json!({"failures_total":5}))
            .unwrap();
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
                Err(TraceError::NotATrace(_)) => assert!(cut < PREAMBLE_LEN),
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
}

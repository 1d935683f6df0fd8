//! Writes a trace file as events arrive. Records are framed and
//! checksummed; `flush` is called at least once a second by the collector.
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use bytes::{BufMut, BytesMut};
use serde_json::Value;

use crate::{codec, kind, TraceError, MAGIC, MIN_READER_VERSION, VERSION};

pub struct TraceWriter {
    path: PathBuf,
    out: BufWriter<File>,
    keys: codec::Keys,
    scratch: BytesMut,
    pub bytes_written: u64,
    pub records_written: u64,
    /// --max-size: past it, events are no longer written (counters are).
    max_bytes: Option<u64>,
    /// Events not written because of max_bytes.
    pub events_dropped: u64,
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

impl TraceWriter {
    /// Creates (or truncates) the file with mode 0600: it holds command lines.
    pub fn create(path: &Path, header: &Value) -> Result<Self, TraceError> {
        let io = |e| TraceError::Io(path.display().to_string(), e);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // An existing file keeps its mode on open: tighten it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        let mut w = TraceWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 << 10, file),
            keys: codec::Keys::default(),
            scratch: BytesMut::with_capacity(4096),
            bytes_written: 0,
            records_written: 0,
            max_bytes: None,
            events_dropped: 0,
        };
        let mut pre = BytesMut::with_capacity(crate::PREAMBLE_LEN);
        pre.put_slice(MAGIC);
        pre.put_u16_le(VERSION);
        pre.put_u16_le(MIN_READER_VERSION);
        pre.put_u32_le(0);
        w.write_raw(&pre)?;
        w.write_value(kind::HEADER, header)?;
        w.flush()?;
        Ok(w)
    }

    fn write_raw(&mut self, b: &[u8]) -> Result<(), TraceError> {
        self.out
            .write_all(b)
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))?;
        self.bytes_written += b.len() as u64;
        Ok(())
    }

    /// Caps the file: once `bytes` are written, event detail stops and only
    /// the exact counter snapshots go on (a few kB a second).
    pub fn set_max_bytes(&mut self, bytes: Option<u64>) {
        self.max_bytes = bytes;
    }

    pub fn write_value(&mut self, kind: u8, v: &Value) -> Result<(), TraceError> {
        if kind == kind::EVENT && self.max_bytes.is_some_and(|m| self.bytes_written >= m) {
            self.events_dropped += 1;
            return Ok(());
        }
        self.write_always(kind, v)
    }

    /// Writes past --max-size too: the last summary must be in the file.
    pub fn write_always(&mut self, kind: u8, v: &Value) -> Result<(), TraceError> {
        let mut payload = std::mem::take(&mut self.scratch);
        payload.clear();
        let mut new_keys = Vec::new();
        self.keys.encode(v, &mut payload, &mut new_keys);
        let mut framed = BytesMut::with_capacity(payload.len() + 64);
        for (id, name) in new_keys {
            let mut k = BytesMut::new();
            codec::put_varint(&mut k, id);
            k.put_slice(name.as_bytes());
            frame(&mut framed, kind::KEY, &k);
        }
        frame(&mut framed, kind, &payload);
        self.scratch = payload;
        self.records_written += 1;
        self.write_raw(&framed)
    }

    /// Hands buffered records to the kernel, so that they survive the
    /// recorder being killed.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out
            .flush()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))
    }

    /// Flush and fdatasync: used at the end and periodically, so a host
    /// crash loses at most the last interval.
    pub fn sync(&mut self) -> Result<(), TraceError> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| TraceError::Io(self.path.display().to_string(), e))
    }
}

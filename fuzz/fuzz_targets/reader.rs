//! Any bytes given to the trace reader: it reads what is intact, accounts
//! for the rest as damage, and never panics, overflows the stack, or reads
//! out of bounds. A file that fails to open must say why.
//!
//! Mutated bytes almost never keep a record's CRC right, so half of the
//! inputs are first framed into checksummed records: that way the value
//! decoder and the key table are fuzzed too, not only resynchronization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use threadtrace_tracefile::{reader::TraceReader, MAGIC, PREAMBLE_LEN, VERSION};

/// `[kind, len, payload...]*` → a file of valid frames around `payload`.
fn framed(mut data: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(PREAMBLE_LEN + data.len() * 2);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.resize(PREAMBLE_LEN, 0);
    while let [kind, len, rest @ ..] = data {
        let n = (*len as usize).min(rest.len());
        let payload = &rest[..n];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[*kind]);
        crc.update(payload);
        file.extend_from_slice(&(n as u32).to_le_bytes());
        file.push(*kind);
        file.extend_from_slice(&crc.finalize().to_le_bytes());
        file.extend_from_slice(payload);
        data = &rest[n..];
    }
    file
}

fuzz_target!(|data: &[u8]| {
    let file = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => framed(rest),
        _ => data.to_vec(),
    };
    let len = file.len() as u64;
    match TraceReader::from_bytes(file, "fuzz") {
        Ok(mut reader) => {
            let items = reader.by_ref().count() as u64;
            // Every byte is read once or skipped once.
            assert!(reader.damage.bytes_skipped <= len);
            assert!(items <= len);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});

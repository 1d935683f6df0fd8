//! Turning fuzzer bytes into trace files worth reading. Mutated bytes
//! almost never keep a record's CRC right, so the first byte picks how the
//! rest becomes a file:
//! - 0: all of them, that byte included, as a file ("THRTRACE" starts
//!   with 'T', 84: a real trace file is its own input);
//! - 1: `[kind, len, payload...]*`, each framed into a checksummed record
//!   (the value decoder and the key table);
//! - 2: lines of JSON, each encoded into a record as the recorder would
//!   (`H`, `P`, `C` first on a line: header, process table, counters;
//!   otherwise an event): what `report` and `export` make of records that
//!   decode, from real recordings mutated.
use threadtrace_tracefile::{codec, kind, MAGIC, PREAMBLE_LEN, VERSION};

fn preamble() -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.resize(PREAMBLE_LEN, 0);
    file
}

fn frame(file: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    file.push(kind);
    file.extend_from_slice(&crc.finalize().to_le_bytes());
    file.extend_from_slice(payload);
}

fn framed(mut data: &[u8]) -> Vec<u8> {
    let mut file = preamble();
    while let [kind, len, rest @ ..] = data {
        let n = (*len as usize).min(rest.len());
        frame(&mut file, *kind, &rest[..n]);
        data = &rest[n..];
    }
    file
}

fn from_json_lines(data: &[u8]) -> Vec<u8> {
    let mut file = preamble();
    let mut keys = codec::Keys::default();
    for line in data.split(|b| *b == b'\n') {
        let (kind, json) = match line.first() {
            Some(b'H') => (kind::HEADER, &line[1..]),
            Some(b'P') => (kind::PROCESSES, &line[1..]),
            Some(b'C') => (kind::COUNTERS, &line[1..]),
            _ => (kind::EVENT, line),
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
            continue;
        };
        let mut payload = bytes::BytesMut::new();
        let mut new_keys = Vec::new();
        keys.encode(&v, &mut payload, &mut new_keys);
        for (id, name) in new_keys {
            let mut k = bytes::BytesMut::new();
            codec::put_varint(&mut k, id);
            k.extend_from_slice(name.as_bytes());
            frame(&mut file, kind::KEY, &k);
        }
        frame(&mut file, kind, &payload);
    }
    file
}

/// The file the fuzzer's bytes stand for.
pub fn trace_file(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((mode, rest)) => match mode % 3 {
            1 => framed(rest),
            2 => from_json_lines(rest),
            _ => data.to_vec(),
        },
        None => Vec::new(),
    }
}

//! Compact binary encoding of JSON values, with interned object keys.
use std::collections::HashMap;

use bytes::{Buf, BufMut, BytesMut};
use serde_json::{Map, Number, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UINT: u8 = 3;
const NEGINT: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Nesting deeper than this is damage, not data: stops a hostile file from
/// exhausting the stack.
const MAX_DEPTH: usize = 32;

/// Bytes one record may decode into at most (values, strings, key copies),
/// counted as it is decoded. A null is one byte in the file and a 32-byte
/// value in memory; an object key is a varint in the file and a copy of
/// its name in memory: without this, a 1 MiB record of keys named with
/// 1 MiB each would decode into terabytes. Real records decode to a few
/// times their size; the largest (process tables) stay below MAX_RECORD.
pub const MAX_DECODED: usize = 16 << 20;
/// Interned key names are field names: short. Longer is damage.
pub const MAX_KEY_LEN: usize = 1024;
/// Keys a table holds at most. A writer that reaches it starts its ids
/// again (a redefinition replaces the name), so that the table stays
/// bounded in a file of any length.
pub const MAX_KEYS: usize = 1 << 16;

pub fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encoder side of the key table. New keys are returned so the writer can
/// emit their KEY records before the record that uses them.
#[derive(Default)]
pub struct Keys {
    ids: HashMap<String, u64>,
}

impl Keys {
    /// Forgets every key: the records that follow define their own again
    /// (after records that were given up with the keys they defined).
    pub fn reset(&mut self) {
        self.ids.clear();
    }

    /// Called between records: once the table is full, ids start again
    /// from 0, each key redefined before the record that uses it.
    pub fn reset_if_full(&mut self) {
        if self.ids.len() >= MAX_KEYS {
            self.ids.clear();
        }
    }

    pub fn encode(&mut self, v: &Value, out: &mut BytesMut, new_keys: &mut Vec<(u64, String)>) {
        match v {
            Value::Null => out.put_u8(NULL),
            Value::Bool(false) => out.put_u8(FALSE),
            Value::Bool(true) => out.put_u8(TRUE),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    out.put_u8(UINT);
                    put_varint(out, u);
                } else if let Some(i) = n.as_i64() {
                    out.put_u8(NEGINT);
                    put_varint(out, !(i as u64));
                } else {
                    out.put_u8(FLOAT);
                    out.put_f64_le(n.as_f64().unwrap_or(0.0));
                }
            }
            Value::String(s) => {
                out.put_u8(STRING);
                put_varint(out, s.len() as u64);
                out.put_slice(s.as_bytes());
            }
            Value::Array(a) => {
                out.put_u8(ARRAY);
                put_varint(out, a.len() as u64);
                for x in a {
                    self.encode(x, out, new_keys);
                }
            }
            Value::Object(o) => {
                out.put_u8(OBJECT);
                put_varint(out, o.len() as u64);
                for (k, x) in o {
                    let next = self.ids.len() as u64;
                    let id = *self.ids.entry(k.clone()).or_insert_with(|| {
                        new_keys.push((next, k.clone()));
                        next
                    });
                    put_varint(out, id);
                    self.encode(x, out, new_keys);
                }
            }
        }
    }
}

/// Decoder side of the key table.
#[derive(Default)]
pub struct KeyTable {
    names: HashMap<u64, String>,
}

impl KeyTable {
    pub fn define(&mut self, mut payload: &[u8]) -> Option<()> {
        let id = get_varint(&mut payload)?;
        if payload.len() > MAX_KEY_LEN || id >= MAX_KEYS as u64 {
            return None;
        }
        let name = std::str::from_utf8(payload).ok()?;
        self.names.insert(id, name.to_string());
        Some(())
    }

    /// One value, or None when the bytes are damaged or would decode into
    /// more than MAX_DECODED bytes.
    pub fn decode(&self, buf: &mut &[u8]) -> Option<Value> {
        let mut budget = MAX_DECODED;
        self.decode_at(buf, 0, &mut budget)
    }

    fn decode_at(&self, buf: &mut &[u8], depth: usize, budget: &mut usize) -> Option<Value> {
        if depth > MAX_DEPTH || !buf.has_remaining() {
            return None;
        }
        *budget = budget.checked_sub(std::mem::size_of::<Value>())?;
        Some(match buf.get_u8() {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            UINT => Value::Number(get_varint(buf)?.into()),
            NEGINT => Value::Number((!get_varint(buf)? as i64).into()),
            FLOAT => {
                if buf.remaining() < 8 {
                    return None;
                }
                Value::Number(Number::from_f64(buf.get_f64_le())?)
            }
            STRING => {
                let n = get_varint(buf)? as usize;
                if buf.remaining() < n {
                    return None;
                }
                *budget = budget.checked_sub(n)?;
                let s = std::str::from_utf8(&buf[..n]).ok()?.to_string();
                buf.advance(n);
                Value::String(s)
            }
            ARRAY => {
                let n = get_varint(buf)? as usize;
                // Each item takes at least one byte: a bigger count is damage.
                if n > buf.remaining() {
                    return None;
                }
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.decode_at(buf, depth + 1, budget)?);
                }
                Value::Array(a)
            }
            OBJECT => {
                let n = get_varint(buf)? as usize;
                if n > buf.remaining() {
                    return None;
                }
                let mut o = Map::new();
                for _ in 0..n {
                    let name = self.names.get(&get_varint(buf)?)?;
                    // The key's copy and the map's node.
                    *budget = budget.checked_sub(name.len() + 64)?;
                    o.insert(name.clone(), self.decode_at(buf, depth + 1, budget)?);
                }
                Value::Object(o)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(v: &Value) -> Value {
        let mut keys = Keys::default();
        let mut out = BytesMut::new();
        let mut new = Vec::new();
        keys.encode(v, &mut out, &mut new);
        let mut table = KeyTable::default();
        for (id, name) in new {
            let mut p = BytesMut::new();
            put_varint(&mut p, id);
            p.put_slice(name.as_bytes());
            table.define(&p).unwrap();
        }
        let mut b = &out[..];
        let got = table.decode(&mut b).unwrap();
        assert!(b.is_empty());
        got
    }

    #[test]
    fn values_roundtrip() {
        let v = json!({"kind":"thread_create_failed","pid":123,"neg":-5,"min":i64::MIN,"max":u64::MAX,
            "f":1.5,"s":"héllo","n":null,"b":[true,false,[]],"o":{"pid":1}});
        assert_eq!(roundtrip(&v), v);
    }

    #[test]
    fn garbage_never_panics() {
        let table = KeyTable::default();
        let inputs: [&[u8]; 6] = [
            &[],
            &[99],
            &[UINT, 0xff],
            &[STRING, 10, b'a'],
            &[ARRAY, 0xff, 0xff, 0x7f],
            &[OBJECT, 1, 0, NULL],
        ];
        for i in inputs {
            let mut b = i;
            assert!(table.decode(&mut b).is_none());
        }
        let mut deep = [ARRAY, 1].repeat(100);
        deep.push(NULL);
        assert!(table.decode(&mut &deep[..]).is_none());
    }

    fn key(table: &mut KeyTable, id: u64, name: &str) -> Option<()> {
        let mut p = BytesMut::new();
        put_varint(&mut p, id);
        p.put_slice(name.as_bytes());
        table.define(&p)
    }

    #[test]
    fn decoded_size_is_bounded() {
        // 1 MiB of nulls in an array: 32 MiB of values. Refused.
        let n = 1 << 20;
        let mut b = BytesMut::new();
        b.put_u8(ARRAY);
        put_varint(&mut b, n as u64);
        b.put_bytes(NULL, n);
        assert!(KeyTable::default().decode(&mut &b[..]).is_none());
        // A thousand nulls are fine.
        let mut b = BytesMut::new();
        b.put_u8(ARRAY);
        put_varint(&mut b, 1000);
        b.put_bytes(NULL, 1000);
        assert_eq!(
            KeyTable::default().decode(&mut &b[..]).unwrap(),
            Value::Array(vec![Value::Null; 1000])
        );
        // A long key name is damage; so is a key used 20,000 times with a
        // 1 KiB name (20 MiB of copies).
        let mut table = KeyTable::default();
        assert!(key(&mut table, 0, &"k".repeat(MAX_KEY_LEN + 1)).is_none());
        key(&mut table, 0, &"k".repeat(MAX_KEY_LEN)).unwrap();
        let mut b = BytesMut::new();
        b.put_u8(ARRAY);
        put_varint(&mut b, 20_000);
        for _ in 0..20_000 {
            b.put_slice(&[OBJECT, 1, 0, NULL]);
        }
        assert!(table.decode(&mut &b[..]).is_none());
        assert!(key(&mut table, MAX_KEYS as u64, "x").is_none());
    }
}

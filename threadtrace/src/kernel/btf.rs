//! Just enough of BTF to find a struct member's byte offset in the running
//! kernel (task_struct.exit_code, ...), so the kernel programs read the
//! right place without CO-RE support in Rust.
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("not a BTF blob")]
    BadMagic,
    #[error("truncated BTF")]
    Truncated,
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

struct Type {
    kind: u32,
    name_off: u32,
    kind_flag: bool,
    /// Byte offset of the type's member records.
    members_at: usize,
    vlen: usize,
}

pub struct Btf {
    data: Vec<u8>,
    str_at: usize,
    str_len: usize,
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

impl Btf {
    pub fn from_sys() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError::Read(path.into(), e))?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let u32_at = |d: &[u8], o: usize| -> Result<u32, BtfError> {
            d.get(o..o + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .ok_or(BtfError::Truncated)
        };
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_at = hdr_len + u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_at = hdr_len + u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        if data.len() < str_at + str_len || data.len() < type_at + type_len {
            return Err(BtfError::Truncated);
        }
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            kind_flag: false,
            members_at: 0,
            vlen: 0,
        }];
        let mut at = type_at;
        while at < type_at + type_len {
            let name_off = u32_at(&data, at)?;
            let info = u32_at(&data, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let members_at = at + 12;
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => vlen * 12,
                6 | 13 => vlen * 8,
                _ => 0,
            };
            types.push(Type {
                kind,
                name_off,
                kind_flag: info >> 31 == 1,
                members_at,
                vlen,
            });
            at = members_at + extra;
        }
        let mut btf = Btf {
            data,
            str_at,
            str_len,
            types,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name_off != 0 {
                let name = btf.str(t.name_off).to_string();
                btf.by_name.entry(name).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn str(&self, off: u32) -> &str {
        let start = self.str_at + off as usize;
        let end = self.str_at + self.str_len;
        let s = &self.data[start.min(end)..end];
        let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..n]).unwrap_or("")
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.data[o..o + 4].try_into().unwrap())
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// nested structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .find_map(|&id| self.find_member(id, member, 0))
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for i in 0..t.vlen {
            let at = t.members_at + i * 12;
            let (m_name, m_type, m_off) =
                (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8));
            let bits = base_bits
                + if t.kind_flag {
                    m_off & 0x00ff_ffff
                } else {
                    m_off
                };
            if m_name == 0 {
                if let Some(o) = self.find_member(self.skip_modifiers(m_type), member, bits) {
                    return Some(o);
                }
            } else if self.str(m_name) == member {
                return Some(bits / 8);
            }
        }
        None
    }

    fn skip_modifiers(&self, mut id: u32) -> u32 {
        // typedef, volatile, const, restrict, type_tag point at another type.
        while let Some(t) = self.types.get(id as usize) {
            if !matches!(t.kind, 8 | 9 | 10 | 11 | 18) {
                break;
            }
            id = self.u32_at(t.members_at - 4);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(Btf::parse(vec![0; 10]), Err(BtfError::BadMagic)));
        let mut d = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        d.extend_from_slice(&[0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(Btf::parse(d), Err(BtfError::Truncated)));
    }

    #[test]
    fn finds_task_struct_members_on_this_kernel() {
        let Ok(btf) = Btf::from_sys() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux here");
            return;
        };
        let exit_code = btf
            .member_offset("task_struct", "exit_code")
            .expect("exit_code");
        let signal = btf.member_offset("task_struct", "signal").expect("signal");
        assert!(exit_code > 0 && signal > 0 && exit_code != signal);
        assert!(btf.member_offset("signal_struct", "rlim").is_some());
        assert!(btf.member_offset("task_struct", "no_such_member").is_none());
    }

    /// What the mapping probe crosses mounts with (struct mount is the
    /// kernel's own, in fs/mount.h, but its BTF is there).
    #[test]
    fn finds_the_mount_members_on_this_kernel() {
        let Ok(btf) = Btf::from_sys() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux here");
            return;
        };
        let mnt = btf.member_offset("mount", "mnt").expect("mount.mnt");
        let parent = btf
            .member_offset("mount", "mnt_parent")
            .expect("mnt_parent");
        let point = btf
            .member_offset("mount", "mnt_mountpoint")
            .expect("mnt_mountpoint");
        assert!(parent != mnt && point != mnt && point != parent);
        assert!(btf.member_offset("vfsmount", "mnt_root").is_some());
        let (p_mnt, p_dentry) = (
            btf.member_offset("path", "mnt").expect("path.mnt"),
            btf.member_offset("path", "dentry").expect("path.dentry"),
        );
        assert_eq!(p_mnt.abs_diff(p_dentry), 8);
    }
}

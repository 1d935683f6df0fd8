//! Unwinding with .eh_frame (framehop) over the copy of the user stack the
//! kernel took: the frame-pointer walk stops at the first function built
//! without frame pointers, which on Debian is glibc, Python, OpenBLAS...
//! Needs the process's mappings, so only while it is alive.
use std::{collections::HashMap, os::unix::fs::MetadataExt, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
};
use object::{Object, ObjectSection, ObjectSegment};

/// Registers and stack bytes from the kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackSnapshot {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub bytes: Vec<u8>,
}

/// What unwinding needs of one file, read once per inode.
struct UnwindData {
    eh_frame: Option<(std::ops::Range<u64>, Arc<[u8]>)>,
    eh_frame_hdr: Option<(std::ops::Range<u64>, Arc<[u8]>)>,
    text_svma: Option<std::ops::Range<u64>>,
    got_svma: Option<std::ops::Range<u64>>,
    /// (file offset, vaddr, executable) of each PT_LOAD.
    segments: Vec<(u64, u64, bool)>,
}

fn read_unwind_data(path: &str) -> Option<UnwindData> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        Some((
            s.address()..s.address() + s.size(),
            Arc::<[u8]>::from(s.data().ok()?),
        ))
    };
    let range = |name: &str| {
        file.section_by_name(name)
            .map(|s| s.address()..s.address() + s.size())
    };
    let segments = file
        .segments()
        .map(|s| {
            let x = matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
            (s.file_range().0, s.address(), x)
        })
        .collect();
    Some(UnwindData {
        eh_frame: section(".eh_frame"),
        eh_frame_hdr: section(".eh_frame_hdr"),
        text_svma: range(".text"),
        got_svma: range(".got"),
        segments,
    })
}

/// Files whose unwind data is kept at most (each holds its .eh_frame).
const FILES_KEPT: usize = 512;

/// An unwinder and the parsed mappings for one maps snapshot.
struct Prepared {
    key: (u32, u64),
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    /// (start, end, file offset, path), sorted by start.
    maps: Vec<(u64, u64, u64, String)>,
}

#[derive(Default)]
pub struct StackUnwinder {
    files: HashMap<(u64, u64), Option<Arc<UnwindData>>>,
    /// The last snapshot prepared: a storm repeats the same process, and
    /// building the unwinder costs far more than unwinding.
    prepared: Option<Prepared>,
}

fn text_hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl StackUnwinder {
    fn data_for(&mut self, open: &str) -> Option<Arc<UnwindData>> {
        let m = std::fs::metadata(open).ok()?;
        let key = (m.dev(), m.ino());
        if self.files.len() >= FILES_KEPT && !self.files.contains_key(&key) {
            self.files.clear();
        }
        self.files
            .entry(key)
            .or_insert_with(|| read_unwind_data(open).map(Arc::new))
            .clone()
    }

    /// Builds (or reuses) the unwinder for this process's maps snapshot.
    fn prepare(&mut self, pid: u32, maps: &str) -> &mut Prepared {
        let key = (pid, text_hash(maps));
        if self.prepared.as_ref().is_none_or(|p| p.key != key) {
            let mut unwinder: UnwinderX86_64<Arc<[u8]>> = UnwinderX86_64::new();
            let mut parsed = Vec::new();
            for line in maps.lines() {
                let mut f = line.split_whitespace();
                let (Some(range), Some(perms), Some(offset)) = (f.next(), f.next(), f.next())
                else {
                    continue;
                };
                let Some(path) = f.nth(2) else { continue };
                let Some((start, end)) = range.split_once('-') else {
                    continue;
                };
                let (Ok(start), Ok(end), Ok(offset)) = (
                    u64::from_str_radix(start, 16),
                    u64::from_str_radix(end, 16),
                    u64::from_str_radix(offset, 16),
                ) else {
                    continue;
                };
                if !path.starts_with('/') {
                    continue;
                }
                parsed.push((start, end, offset, path.to_string()));
                if !perms.contains('x') {
                    continue;
                }
                // map_files opens the mapped file itself, whatever namespace
                // or chroot the process sees it through; once it has exited,
                // the path is all there is.
                let open = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
                let Some(d) = self.data_for(&open).or_else(|| self.data_for(path)) else {
                    continue;
                };
                // The mapping is the executable segment, mapped from its
                // page-aligned file offset: that offset can lie inside the
                // previous segment's bytes, so match on alignment, not range.
                let Some(&(_, seg_vaddr, _)) = d
                    .segments
                    .iter()
                    .find(|&&(o, _, x)| x && o & !0xfff == offset)
                else {
                    continue;
                };
                // Load bias: where vaddr 0 of the file is in the process.
                let bias = start.wrapping_sub(seg_vaddr & !0xfff);
                let info = ExplicitModuleSectionInfo {
                    base_svma: 0,
                    text_svma: d.text_svma.clone(),
                    got_svma: d.got_svma.clone(),
                    eh_frame_svma: d.eh_frame.as_ref().map(|e| e.0.clone()),
                    eh_frame: d.eh_frame.as_ref().map(|e| e.1.clone()),
                    eh_frame_hdr_svma: d.eh_frame_hdr.as_ref().map(|e| e.0.clone()),
                    eh_frame_hdr: d.eh_frame_hdr.as_ref().map(|e| e.1.clone()),
                    ..Default::default()
                };
                unwinder.add_module(Module::new(path.to_string(), start..end, bias, info));
            }
            parsed.sort_unstable_by_key(|m| m.0);
            self.prepared = Some(Prepared {
                key,
                unwinder,
                maps: parsed,
            });
        }
        self.prepared.as_mut().expect("just set")
    }

    /// (path, file offset) of each address in the process's maps snapshot.
    pub fn locate_all(
        &mut self,
        pid: u32,
        maps: &str,
        addrs: &[u64],
    ) -> Vec<Option<(String, u64)>> {
        let maps = &self.prepare(pid, maps).maps;
        addrs
            .iter()
            .map(|&addr| {
                let i = maps.partition_point(|m| m.0 <= addr).checked_sub(1)?;
                let (start, end, off, path) = &maps[i];
                (addr < *end).then(|| (path.clone(), addr - start + off))
            })
            .collect()
    }

    /// Return addresses, innermost first (the first is `ip`), or None when
    /// nothing could be unwound. `maps` is the process's /proc/PID/maps as
    /// read when its failure arrived (it may have exited since).
    pub fn unwind(
        &mut self,
        pid: u32,
        snap: &StackSnapshot,
        maps: &str,
        max_frames: usize,
    ) -> Option<Vec<u64>> {
        if snap.bytes.is_empty() || snap.ip == 0 {
            return None;
        }
        let prepared = self.prepare(pid, maps);
        let unwinder = &prepared.unwinder;
        let (sp, bytes) = (snap.sp, &snap.bytes);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let b = bytes.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let mut cache = CacheX86_64::<_>::new();
        let mut frames = unwinder.iter_frames(
            snap.ip,
            UnwindRegsX86_64::new(snap.ip, snap.sp, snap.bp),
            &mut cache,
            &mut read_stack,
        );
        let mut out = Vec::new();
        while out.len() < max_frames {
            match frames.next() {
                Ok(Some(FrameAddress::InstructionPointer(a))) => out.push(a),
                Ok(Some(FrameAddress::ReturnAddress(a))) => out.push(a.get()),
                Ok(None) => break,
                Err(e) => {
                    log::debug!(
                        "unwinding pid {pid} stopped after {} frames: {e}",
                        out.len()
                    );
                    break;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A mapping of /proc/PID/maps: (start, end, file offset, path).
pub fn parse_maps(maps: &str) -> impl Iterator<Item = (u64, u64, u64, &str)> {
    maps.lines().filter_map(|line| {
        let mut f = line.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let _perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let path = f.nth(2)?;
        path.starts_with('/').then_some((
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
            offset,
            path,
        ))
    })
}

/// (path, file offset) of an address, from a maps snapshot.
pub fn locate(maps: &str, addr: u64) -> Option<(&str, u64)> {
    parse_maps(maps)
        .find(|&(s, e, _, _)| (s..e).contains(&addr))
        .map(|(s, _, off, p)| (p, addr - s + off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_addresses_in_a_maps_snapshot() {
        let maps = "55d0c0000000-55d0c0021000 r-xp 00002000 08:01 123 /usr/bin/prog\n\
7f0000000000-7f0000100000 r-xp 00026000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(
            locate(maps, 0x55d0c0000010),
            Some(("/usr/bin/prog", 0x2010))
        );
        assert_eq!(
            locate(maps, 0x7f0000000100),
            Some(("/usr/lib/x86_64-linux-gnu/libc.so.6", 0x26100))
        );
        assert_eq!(locate(maps, 0x7ffd00000010), None);
        assert_eq!(locate(maps, 0x1234), None);
    }
}

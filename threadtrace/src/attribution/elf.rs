//! Program headers of an ELF file: enough to tell whether two code
//! addresses lie in the same loaded segment.

/// (file offset, file size, executable) of each PT_LOAD of a 64-bit
/// little-endian ELF.
pub fn load_segments(data: &[u8]) -> Option<Vec<(u64, u64, bool)>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    if data.get(0..4)? != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut out = Vec::new();
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(at)? == 1 {
            let flags = u32_at(at + 4)?;
            out.push((u64_at(at + 8)?, u64_at(at + 32)?, flags & 1 != 0));
        }
    }
    Some(out)
}

/// The file offset of an address `delta` bytes from one at `known_offset`,
/// if both lie in the same executable PT_LOAD segment (which is mapped
/// contiguously, so the delta holds in the file too).
pub fn same_segment_offset(path: &std::path::Path, known_offset: u64, delta: i64) -> Option<u64> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    head.truncate(n);
    let target = known_offset.checked_add_signed(delta)?;
    load_segments(&head)?
        .into_iter()
        .find(|&(off, size, x)| x && (off..off + size).contains(&known_offset))
        .filter(|&(off, size, _)| (off..off + size).contains(&target))
        .map(|_| target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_segments_of_this_binary() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let segs = load_segments(&exe).unwrap();
        let (off, size, _) = *segs.iter().find(|s| s.2).expect("an executable segment");
        let path = std::path::Path::new("/proc/self/exe");
        assert_eq!(same_segment_offset(path, off + 16, 32), Some(off + 48));
        assert_eq!(
            same_segment_offset(path, off + 16, size as i64 + 4096),
            None
        );
        assert!(load_segments(b"not an elf").is_none());
        assert!(load_segments(&exe[..70]).is_none());
    }
}

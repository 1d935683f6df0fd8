//! Unwinding with .eh_frame (framehop) over the copy of the user stack the
//! kernel took: a frame-pointer walk stops at the first function built
//! without frame pointers, which on Debian is glibc, Python, OpenBLAS...
//!
//! The mappings come from the address-space history, as they were when the
//! failure happened, so the process may have exited. Only the files the
//! stack passes through are read: unwinding starts with none, and each
//! return address that lands in a file not yet loaded loads it and unwinds
//! again (a few rounds at most; each round costs microseconds).
//!
//! The first frame of a clone failure is inside libc's clone wrapper,
//! whose unwind info ends before the syscall instruction; framehop treats
//! an address no FDE covers as a leaf when it is the first frame (return
//! address at the stack pointer), which is what that code is.
use std::{collections::HashSet, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
};

use crate::attribution::{
    address_spaces::{Mapping, Snapshot},
    elf::ElfInfo,
};

/// Registers and stack bytes from the kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackSnapshot {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub bytes: Vec<u8>,
}

/// Rounds of "load the file a frame landed in, unwind again".
const MAX_ROUNDS: usize = 24;

/// Runs `f`, containing a panic of the DWARF reader on crafted unwind
/// tables (the files are any user's; gimli's pointer arithmetic overflows
/// on some): the caller falls back to the frame-pointer walk.
fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            log::warn!(
                "unwind tables of a mapped file made the unwinder fail: frame pointers used"
            );
            None
        }
    }
}

/// An unwinder and the files loaded into it, for one snapshot.
struct Prepared {
    key: (u64, usize),
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    /// Mapping starts already tried (loaded, or not loadable).
    tried: HashSet<u64>,
}

#[derive(Default)]
pub struct StackUnwinder {
    /// The last snapshot's: a storm repeats the same process, and loading
    /// files costs far more than unwinding.
    prepared: Option<Prepared>,
}

/// Where vaddr 0 of the file is in the process, from its executable
/// mapping: the segment mapped at `pgoff` (matched on page alignment: the
/// mapping starts at the page holding the segment's first byte).
pub fn load_bias(m: &Mapping, info: &ElfInfo) -> Option<u64> {
    let seg = info
        .segments
        .iter()
        .find(|s| s.exec && s.offset & !0xfff == m.pgoff)
        .or_else(|| info.segments.iter().find(|s| s.holds_offset(m.pgoff)))?;
    Some(
        m.start
            .wrapping_sub(m.pgoff)
            .wrapping_add(seg.offset)
            .wrapping_sub(seg.vaddr),
    )
}

fn module_for(m: &Mapping, info: &ElfInfo) -> Option<Module<Arc<[u8]>>> {
    let bias = load_bias(m, info)?;
    let section = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: info.text.clone(),
        got_svma: info.got.clone(),
        eh_frame_svma: info.eh_frame.as_ref().map(|e| e.svma.clone()),
        eh_frame: info.eh_frame.as_ref().map(|e| e.data.clone()),
        eh_frame_hdr_svma: info.eh_frame_hdr.as_ref().map(|e| e.svma.clone()),
        eh_frame_hdr: info.eh_frame_hdr.as_ref().map(|e| e.data.clone()),
        ..Default::default()
    };
    Some(Module::new(
        m.file.path.to_string(),
        m.start..m.end,
        bias,
        section,
    ))
}

/// The address to look a frame up by: a return address points after its
/// call, which may be the first byte of the next function.
pub fn lookup_address(index: usize, addr: u64) -> u64 {
    if index == 0 {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

impl StackUnwinder {
    /// Return addresses, innermost first (the first is `ip`), or None when
    /// nothing could be unwound. `module` reads a mapping's file (None when
    /// it cannot be read).
    pub fn unwind(
        &mut self,
        snap: &Snapshot,
        stack: &StackSnapshot,
        max_frames: usize,
        mut module: impl FnMut(&Mapping) -> Option<Arc<ElfInfo>>,
    ) -> Option<Vec<u64>> {
        if stack.bytes.is_empty() || stack.ip == 0 {
            return None;
        }
        if self.prepared.as_ref().is_none_or(|p| p.key != snap.key) {
            self.prepared = Some(Prepared {
                key: snap.key,
                unwinder: UnwinderX86_64::new(),
                tried: HashSet::new(),
            });
        }
        if log::log_enabled!(log::Level::Trace) {
            let words: Vec<String> = stack
                .bytes
                .chunks_exact(8)
                .take(128)
                .map(|w| format!("{:x}", u64::from_le_bytes(w.try_into().expect("8 bytes"))))
                .collect();
            log::trace!(
                "stack at sp {:x} (ip {:x}, bp {:x}): {}",
                stack.sp,
                stack.ip,
                stack.bp,
                words.join(" ")
            );
        }
        let frames = self.rounds(snap, stack, max_frames, &mut module)?;
        if frames.len() > 1 {
            return Some(frames);
        }
        // A leaf without unwind info (musl's __clone, Go's runtime.clone:
        // assembly that pushes nothing before its syscall) stops the walk
        // at once; its return address is then the word at the stack
        // pointer, if that lies in a mapped file.
        let leaf = stack.bytes.get(..8).and_then(|b| {
            let ret = u64::from_le_bytes(b.try_into().ok()?);
            snap.locate(ret.checked_sub(1)?)?;
            Some(StackSnapshot {
                ip: ret,
                sp: stack.sp + 8,
                bp: stack.bp,
                bytes: stack.bytes[8..].to_vec(),
            })
        });
        match leaf.and_then(|l| self.rounds(snap, &l, max_frames.saturating_sub(1), &mut module)) {
            Some(rest) if !rest.is_empty() => Some(std::iter::once(stack.ip).chain(rest).collect()),
            _ => Some(frames),
        }
    }

    /// Walks, loading the file of each frame reached, until no new file is.
    fn rounds(
        &mut self,
        snap: &Snapshot,
        stack: &StackSnapshot,
        max_frames: usize,
        module: &mut impl FnMut(&Mapping) -> Option<Arc<ElfInfo>>,
    ) -> Option<Vec<u64>> {
        let prepared = self.prepared.as_mut()?;
        let mut frames = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let Some(walked) = contained(|| walk(&prepared.unwinder, stack, max_frames)) else {
                self.prepared = None;
                return None;
            };
            frames = walked;
            log::trace!("unwound {:x?}", frames);
            // The first frame in a file not tried yet: load it and go again.
            let next = frames.iter().enumerate().find_map(|(i, &a)| {
                let (m, _) = snap.locate(lookup_address(i, a))?;
                (!prepared.tried.contains(&m.start)).then_some(m)
            });
            let Some(m) = next else { break };
            prepared.tried.insert(m.start);
            if let Some(module) = module(m).and_then(|info| module_for(m, &info)) {
                let unwinder = &mut prepared.unwinder;
                if contained(|| unwinder.add_module(module)).is_none() {
                    self.prepared = None;
                    return None;
                }
            }
        }
        (!frames.is_empty()).then_some(frames)
    }
}

fn walk(unwinder: &UnwinderX86_64<Arc<[u8]>>, stack: &StackSnapshot, max: usize) -> Vec<u64> {
    let (sp, bytes) = (stack.sp, &stack.bytes);
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(sp).ok_or(())? as usize;
        let b = bytes.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
    };
    let mut cache = CacheX86_64::<_>::new();
    let mut frames = unwinder.iter_frames(
        stack.ip,
        UnwindRegsX86_64::new(stack.ip, stack.sp, stack.bp),
        &mut cache,
        &mut read_stack,
    );
    let mut out = Vec::new();
    while out.len() < max {
        match frames.next() {
            Ok(Some(FrameAddress::InstructionPointer(a))) => out.push(a),
            Ok(Some(FrameAddress::ReturnAddress(a))) => out.push(a.get()),
            Ok(None) => break,
            Err(e) => {
                log::debug!(
                    "unwinding stopped after {} frames ({} stack bytes): {e}",
                    out.len(),
                    bytes.len()
                );
                break;
            }
        }
    }
    out
}

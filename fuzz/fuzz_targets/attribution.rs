//! Attribution's parsers on what any user controls: /proc/PID/maps lines
//! (names with spaces and newlines), the kernel's mapping events (dentry
//! names), and
//! ELF files a process maps (headers, sections, symbols, unwind tables),
//! then unwinding a stack through them. None may panic, loop, or allocate
//! past the caps.
//!
//! The modules are compiled here from threadtrace's own sources, as they
//! are: the binary crate has no library to link.
#![no_main]

use std::{io::Write, os::fd::FromRawFd, sync::Arc};

use libfuzzer_sys::fuzz_target;

#[path = "../../threadtrace/src/attribution/address_spaces.rs"]
pub mod address_spaces;
#[path = "../../threadtrace/src/attribution/elf.rs"]
pub mod elf;
#[path = "../../threadtrace/src/kernel/mappings.rs"]
pub mod mappings;
#[path = "../../threadtrace/src/attribution/unwind.rs"]
pub mod unwind;

/// The paths those modules name each other by.
mod kernel {
    pub use super::mappings;
}
mod attribution {
    pub use super::{address_spaces, elf};
}

use address_spaces::AddressSpaces;

/// The bytes as a file the reader can pread (a memfd: no disk).
fn memfd(data: &[u8]) -> std::fs::File {
    // SAFETY: a name and no flags.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor we own.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(data).unwrap();
    f
}

/// libFuzzer's hook aborts on any panic, even one the code contains (the
/// unwinder contains the DWARF reader's); a panic that escapes the target
/// is still a crash.
fn contained_panics_are_not_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// A mapping record from untrusted bytes, as the ring buffer's decoder
/// would make of them: never a panic.
fn from_bytes(bytes: &[u8]) -> Option<mappings::SpaceChange> {
    type Raw = threadtrace_common::Event<threadtrace_common::Mapping>;
    if bytes.len() < std::mem::size_of::<Raw>() {
        return None;
    }
    // SAFETY: length checked; the event is repr(C) plain data, any bit
    // pattern is valid, and read_unaligned has no alignment need.
    let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Raw>()) };
    Some(mappings::from_event(&e))
}

fuzz_target!(|data: &[u8]| {
    contained_panics_are_not_crashes();
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let text = String::from_utf8_lossy(data);
            let mut spaces = AddressSpaces::default();
            spaces.seed(1, &text, 0, Some((0, 0)), None);
            if let Some(snap) = spaces.snapshot(1, u64::MAX) {
                for l in address_spaces::parse_maps(&text) {
                    let _ = snap.locate(l.start);
                    let _ = snap.locate(l.end.wrapping_sub(1));
                }
            }
        }
        1 => {
            let mut spaces = AddressSpaces::default();
            let size = std::mem::size_of::<threadtrace_common::Event<threadtrace_common::Mapping>>();
            for (i, chunk) in data.chunks(size).enumerate() {
                if let Some(r) = from_bytes(chunk) {
                    spaces.apply(&r);
                }
                // An exec between mappings, as the kernel sends them.
                if i % 3 == 2 {
                    spaces.apply(&mappings::SpaceChange::Exec { pid: 1, time: i as u64 });
                }
            }
            spaces.fork(1, 2, 5);
            if let Some(snap) = spaces.snapshot(2, u64::MAX) {
                let _ = snap.locate(0x1000);
            }
            spaces.prune(|_| false, false);
        }
        _ => {
            let f = memfd(data);
            let Ok(info) = elf::read(&f, data.len() as u64) else {
                return;
            };
            for off in [0u64, 0x40, 0x1000, data.len() as u64 / 2] {
                let _ = info.symbol_at(off);
                let _ = info.vaddr_of(off);
            }
            // Unwind a stack of this input's own bytes through it.
            let mut spaces = AddressSpaces::default();
            spaces.seed(
                7,
                "7f0000000000-7f0000100000 r-xp 00000000 00:01 9 /fuzz.so\n",
                0,
                None,
                None,
            );
            let snap = spaces.snapshot(7, u64::MAX).unwrap();
            let stack = unwind::StackSnapshot {
                ip: 0x7f00_0000_1000,
                sp: 0x7ffc_0000_0000,
                bp: 0,
                bytes: data.iter().copied().take(4096).collect(),
            };
            let info = Arc::new(info);
            let mut u = unwind::StackUnwinder::default();
            let _ = u.unwind(&snap, &stack, 32, |_| Some(info.clone()));
        }
    }
});

//! The kernel's own records of executable mappings and execs: a software
//! perf event on every CPU with `mmap2` and `comm_exec`, the way profilers
//! keep address spaces without racing the processes they describe. Each
//! record carries the file's device, inode and path (as the mapping process
//! sees it) and a CLOCK_MONOTONIC timestamp, the clock of the eBPF events.
//!
//! Only executable mappings are reported (`mmap_data` is off): a thread's
//! stack or a heap never produces a record, so the cost falls on exec and
//! dlopen, not on thread creation.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{fence, Ordering},
};

use perf_event_open_sys::bindings as sys;

/// What the collector learns from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Mmap {
        pid: u32,
        time: u64,
        start: u64,
        len: u64,
        pgoff: u64,
        dev: u64,
        ino: u64,
        /// i_generation: tells a file from a later one that reuses its
        /// inode number (0 where the filesystem has none).
        generation: u64,
        path: String,
    },
    /// The process began a new program (before its first mapping).
    Exec { pid: u32, time: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum MmapEventsError {
    #[error("perf_event_open on cpu {cpu} (mmap records): {source}")]
    Open { cpu: u32, source: io::Error },
    #[error("mapping the perf buffer of cpu {cpu}: {source}")]
    Map { cpu: u32, source: io::Error },
    #[error("cannot read the online CPUs: {0}")]
    Cpus(io::Error),
}

/// Bytes of record data per CPU: an exec is a handful of records of about
/// 100 bytes; 512 KiB holds the execs of a busy second between drains.
const DATA_PAGES: usize = 128;
/// Record type numbers (perf_event.h).
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
/// The sample_id trailer (TID, TIME) every record ends with.
const TRAILER: usize = 16;

struct Ring {
    _fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    data_off: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by the Ring and used through &mut self only.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping what `open_cpu` mapped, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

pub struct MmapEvents {
    rings: Vec<Ring>,
    /// Records the kernel dropped because a buffer was full.
    pub lost: u64,
    scratch: Vec<u8>,
}

impl MmapEvents {
    pub fn open() -> Result<Self, MmapEventsError> {
        let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_err(MmapEventsError::Cpus)?;
        let mut rings = Vec::new();
        for cpu in parse_cpu_list(&text) {
            rings.push(open_cpu(cpu)?);
        }
        Ok(MmapEvents {
            rings,
            lost: 0,
            scratch: Vec::new(),
        })
    }

    /// Hands every record written so far to `f`, CPU by CPU (each in order;
    /// across CPUs by their timestamps, which the consumer orders).
    pub fn drain(&mut self, mut f: impl FnMut(Record)) {
        for ring in &mut self.rings {
            // SAFETY: the first page of the mapping is the control page.
            let page = ring.base.as_ptr().cast::<sys::perf_event_mmap_page>();
            // SAFETY: data_head is written by the kernel; read it volatile,
            // then order the data reads after it.
            let head = unsafe { std::ptr::read_volatile(&(*page).data_head) };
            fence(Ordering::Acquire);
            // SAFETY: data_tail is ours to read and write.
            let mut tail = unsafe { (*page).data_tail };
            // SAFETY: data_off..data_off+data_size is inside the mapping.
            let data = unsafe {
                std::slice::from_raw_parts(ring.base.as_ptr().add(ring.data_off), ring.data_size)
            };
            while tail < head {
                let at = (tail % ring.data_size as u64) as usize;
                let mut hdr = [0u8; 8];
                copy_wrapped(data, at, &mut hdr);
                let size = u16::from_ne_bytes([hdr[6], hdr[7]]) as usize;
                if size < 8 || tail + size as u64 > head {
                    // Cannot happen with a sane kernel; do not loop on it.
                    tail = head;
                    break;
                }
                self.scratch.resize(size, 0);
                copy_wrapped(data, at, &mut self.scratch);
                match parse(&self.scratch) {
                    Some(Parsed::Record(r)) => f(r),
                    Some(Parsed::Lost(n)) => self.lost += n,
                    None => {}
                }
                tail += size as u64;
            }
            fence(Ordering::Release);
            // SAFETY: telling the kernel how far we have read.
            unsafe { std::ptr::write_volatile(&mut (*page).data_tail, tail) };
        }
    }
}

fn copy_wrapped(data: &[u8], at: usize, out: &mut [u8]) {
    let first = out.len().min(data.len() - at);
    out[..first].copy_from_slice(&data[at..at + first]);
    let rest = out.len() - first;
    out[first..].copy_from_slice(&data[..rest]);
}

fn open_cpu(cpu: u32) -> Result<Ring, MmapEventsError> {
    // SAFETY: plain data; zeroed is the documented default of every field.
    let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = sys::PERF_TYPE_SOFTWARE;
    attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
    attr.config = sys::PERF_COUNT_SW_DUMMY as u64;
    attr.sample_type = (sys::PERF_SAMPLE_TID | sys::PERF_SAMPLE_TIME) as u64;
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    attr.set_exclude_kernel(1);
    attr.set_exclude_hv(1);
    // SAFETY: a valid attr; pid -1 with a cpu: every process on that CPU.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            -1,
            cpu as i32,
            -1,
            sys::PERF_FLAG_FD_CLOEXEC as u64,
        )
    };
    if fd < 0 {
        return Err(MmapEventsError::Open {
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = page * (1 + DATA_PAGES);
    // SAFETY: mapping the perf buffer as the kernel defines it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(MmapEventsError::Map {
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    let base = NonNull::new(base.cast::<u8>()).expect("mmap returned a mapping");
    // SAFETY: the control page is mapped.
    let (off, size) = unsafe {
        let p = base.as_ptr().cast::<sys::perf_event_mmap_page>();
        ((*p).data_offset as usize, (*p).data_size as usize)
    };
    let (data_off, data_size) = if size == 0 {
        (page, page * DATA_PAGES)
    } else {
        (off, size)
    };
    Ok(Ring {
        _fd: fd,
        base,
        len,
        data_off,
        data_size,
    })
}

pub(crate) enum Parsed {
    Record(Record),
    Lost(u64),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn c_string(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// One record: header (type, misc, size), body, sample_id trailer.
pub(crate) fn parse(r: &[u8]) -> Option<Parsed> {
    let kind = u32_at(r, 0)?;
    let misc = u16::from_ne_bytes(r.get(4..6)?.try_into().ok()?);
    let time = u64_at(r, r.len().checked_sub(8)?)?;
    let body_end = r.len().checked_sub(TRAILER)?;
    match kind {
        PERF_RECORD_MMAP2 => {
            // pid, tid, addr, len, pgoff, maj, min, ino, ino_generation,
            // prot, flags, then the file name.
            const NAME: usize = 8 + 64;
            Some(Parsed::Record(Record::Mmap {
                pid: u32_at(r, 8)?,
                time,
                start: u64_at(r, 16)?,
                len: u64_at(r, 24)?,
                pgoff: u64_at(r, 32)?,
                dev: libc::makedev(u32_at(r, 40)?, u32_at(r, 44)?),
                ino: u64_at(r, 48)?,
                generation: u64_at(r, 56)?,
                path: c_string(r.get(NAME..body_end)?),
            }))
        }
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => {
            Some(Parsed::Record(Record::Exec {
                pid: u32_at(r, 8)?,
                time,
            }))
        }
        PERF_RECORD_LOST => Some(Parsed::Lost(u64_at(r, 16)?)),
        _ => None,
    }
}

/// "0-3,8,10-11" → 0, 1, 2, 3, 8, 10, 11.
fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b.min(a.saturating_add(4096)));
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8], time: u64) -> Vec<u8> {
        let size = 8 + body.len() + TRAILER;
        let mut r = Vec::new();
        r.extend(kind.to_ne_bytes());
        r.extend(misc.to_ne_bytes());
        r.extend((size as u16).to_ne_bytes());
        r.extend(body);
        r.extend(7u32.to_ne_bytes());
        r.extend(7u32.to_ne_bytes());
        r.extend(time.to_ne_bytes());
        r
    }

    #[test]
    fn parses_mmap2_comm_exec_and_lost() {
        let mut body = Vec::new();
        for v in [42u32, 43] {
            body.extend(v.to_ne_bytes());
        }
        for v in [0x7f00_0000_0000u64, 0x2000, 0x1000] {
            body.extend(v.to_ne_bytes());
        }
        for v in [0xfdu32, 1] {
            body.extend(v.to_ne_bytes());
        }
        for v in [456u64, 0] {
            body.extend(v.to_ne_bytes());
        }
        for v in [5u32, 2] {
            body.extend(v.to_ne_bytes());
        }
        body.extend(b"/opt/my lib.so\0\0");
        let Some(Parsed::Record(r)) = parse(&record(PERF_RECORD_MMAP2, 0, &body, 99)) else {
            panic!()
        };
        assert_eq!(
            r,
            Record::Mmap {
                pid: 42,
                time: 99,
                start: 0x7f00_0000_0000,
                len: 0x2000,
                pgoff: 0x1000,
                dev: libc::makedev(0xfd, 1),
                ino: 456,
                generation: 0,
                path: "/opt/my lib.so".into()
            }
        );
        let comm = [42u32.to_ne_bytes(), 42u32.to_ne_bytes()].concat();
        let comm = [&comm[..], b"python3\0"].concat();
        assert!(matches!(
            parse(&record(
                PERF_RECORD_COMM,
                PERF_RECORD_MISC_COMM_EXEC,
                &comm,
                5
            )),
            Some(Parsed::Record(Record::Exec { pid: 42, time: 5 }))
        ));
        // A rename (prctl PR_SET_NAME) is no exec.
        assert!(parse(&record(PERF_RECORD_COMM, 0, &comm, 5)).is_none());
        let lost = [1u64.to_ne_bytes(), 17u64.to_ne_bytes()].concat();
        assert!(matches!(
            parse(&record(PERF_RECORD_LOST, 0, &lost, 5)),
            Some(Parsed::Lost(17))
        ));
        // Truncated records are skipped, never a panic.
        let full = record(PERF_RECORD_MMAP2, 0, &body, 99);
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-3,7"), vec![0, 2, 3, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn wrapped_copies() {
        let data = [1, 2, 3, 4, 5];
        let mut out = [0; 3];
        copy_wrapped(&data, 3, &mut out);
        assert_eq!(out, [4, 5, 1]);
    }
}

//! Ring-buffer bytes → typed kernel records. Each record is an `Event<T>`
//! whose header names T; a short or unknown record is an error, not a panic.
use threadtrace_common::{
    CgroupAttach, CreateFailed, Event, EventKind, Header, Mapping, OomVictim, ProcessExec,
    ProcessExit, ProcessFork, RlimitChange,
};

#[derive(Debug, Clone)]
pub enum Raw {
    /// Boxed: about 4.6 KiB with its stack copy, the others a few hundred.
    CreateFailed(Box<Event<CreateFailed>>),
    RlimitChange(Event<RlimitChange>),
    OomVictim(Event<OomVictim>),
    ProcessFork(Event<ProcessFork>),
    ProcessExec(Event<ProcessExec>),
    ProcessExit(Event<ProcessExit>),
    CgroupAttach(Event<CgroupAttach>),
    /// For address spaces only: never reported.
    Mapping(Box<Event<Mapping>>),
}

impl Raw {
    /// The header every kernel record starts with.
    pub fn header(&self) -> &Header {
        match self {
            Raw::CreateFailed(e) => &e.header,
            Raw::RlimitChange(e) => &e.header,
            Raw::OomVictim(e) => &e.header,
            Raw::ProcessFork(e) => &e.header,
            Raw::ProcessExec(e) => &e.header,
            Raw::ProcessExit(e) => &e.header,
            Raw::CgroupAttach(e) => &e.header,
            Raw::Mapping(e) => &e.header,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {got} bytes, expected {want}")]
    Size {
        kind: EventKind,
        got: usize,
        want: usize,
    },
}

fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<Event<T>, DecodeError> {
    let want = std::mem::size_of::<Event<T>>();
    if bytes.len() < want {
        return Err(DecodeError::Size {
            kind,
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: length checked; Event<T> is repr(C) plain data, any bit
    // pattern is valid, and read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event<T>>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Raw, DecodeError> {
    if bytes.len() < std::mem::size_of::<Header>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let kind_raw = u32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let kind = EventKind::from_u32(kind_raw).ok_or(DecodeError::UnknownKind(kind_raw))?;
    Ok(match kind {
        EventKind::CreateFailed => Raw::CreateFailed(Box::new(read(bytes, kind)?)),
        EventKind::RlimitChange => Raw::RlimitChange(read(bytes, kind)?),
        EventKind::OomVictim => Raw::OomVictim(read(bytes, kind)?),
        EventKind::ProcessFork => Raw::ProcessFork(read(bytes, kind)?),
        EventKind::ProcessExec => Raw::ProcessExec(read(bytes, kind)?),
        EventKind::ProcessExit => Raw::ProcessExit(read(bytes, kind)?),
        EventKind::CgroupAttach => Raw::CgroupAttach(read(bytes, kind)?),
        EventKind::Mapping => Raw::Mapping(Box::new(read(bytes, kind)?)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use threadtrace_common::{StackCopy, UserStack, MAX_STACK, STACK_COPY};

    pub fn header(kind: EventKind, tgid: u32, tid: u32, comm: &str) -> Header {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        Header {
            kind: kind as u32,
            cpu: 0,
            ktime_ns: 1_000_000_000,
            tgid,
            tid,
            uid: 65534,
            gid: 65534,
            cgroup_id: 0,
            comm: c,
        }
    }

    pub fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper viewing a repr(C) value as bytes.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    /// A clone3 failure inside glibc's pthread_create, as the kernel
    /// sends it (`syscall` 3: clone3; 6: mmap of the thread's stack).
    pub fn create_failed(tgid: u32, tid: u32, errno: i32, syscall: u32) -> Event<CreateFailed> {
        let mut ips = [0u64; MAX_STACK];
        ips[0] = 0x7f00_0000_1234;
        Event {
            header: header(EventKind::CreateFailed, tgid, tid, "omp"),
            payload: CreateFailed {
                api: if syscall == 3 { 1 } else { syscall },
                syscall,
                errno,
                _pad: 0,
                flags: 0x3d0f00,
                site: 0,
                pd: 0x7f00_0010_0000,
                start_routine: [0x7f00_0000_5678, 0, 0, 0],
                child_arg: [0, 0],
                uretprobes: [[0; 2]; 4],
                stack: UserStack {
                    len: 1,
                    _pad: 0,
                    ips,
                },
                copy: StackCopy {
                    ip: 0x7f00_0000_1234,
                    sp: 0x7ffc_0000_0000,
                    bp: 0,
                    len: 0,
                    _pad: 0,
                    bytes: [0; STACK_COPY],
                },
                nproc: threadtrace_common::NprocSnapshot::default(),
            },
        }
    }

    #[test]
    fn decodes_what_the_kernel_writes() {
        let ev = create_failed(10, 11, 11, 3);
        match decode(&bytes_of(&ev)).unwrap() {
            Raw::CreateFailed(e) => {
                assert_eq!(e.header.tgid, 10);
                assert_eq!(e.payload.errno, 11);
                assert_eq!(e.payload.pd, 0x7f00_0010_0000);
                assert_eq!(e.payload.stack.len, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_short_unknown_and_truncated_records() {
        assert_eq!(decode(&[0; 8]).unwrap_err(), DecodeError::Short(8));
        let mut b = bytes_of(&header(EventKind::OomVictim, 1, 1, "x"));
        b[0..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&b).unwrap_err(), DecodeError::UnknownKind(99));
        let full = bytes_of(&create_failed(1, 1, 11, 3));
        for cut in [std::mem::size_of::<Header>(), full.len() - 1] {
            assert!(matches!(
                decode(&full[..cut]),
                Err(DecodeError::Size { .. })
            ));
        }
    }
}

//! Who holds the threads: a process's threads by the library that created
//! them, read when someone asks (a failure, the dashboard, the summary)
//! rather than counted on every thread's creation and exit.
//!
//! glibc describes its own structures for debuggers (libthread_db): the
//! `_thread_db_*` symbols of libc give the offsets of a thread's list link,
//! tid and start_routine in `struct pthread`, and where the list of threads
//! hangs off the dynamic loader's `_rtld_global`. Walking that list in the
//! process's memory (process_vm_readv) gives each thread's start_routine,
//! and its mapping names the library. Threads glibc does not list (the main
//! thread aside: raw clones, other libcs) are `unattributed`.
//!
//! People know threads by the names their runtime gives them (`top -H`,
//! jstack): the JVM's `GC Thread#0` and `pool-3-thread-7`, tokio's
//! `tokio-runtime-w`. A process's threads are also grouped for the report:
//! by that name when it differs from the process's own, else by the
//! library that created them, else, in a Go program, as Go's Ms.
use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    address_spaces::{Mapping, Snapshot},
    classify,
    elf::ElfInfo,
    modules::Resolution,
    unwind::load_bias,
    Shared,
};
use crate::clock::Clock;

pub const UNATTRIBUTED: &str = "unattributed";

/// Threads walked per process at most (the list is the process's memory:
/// it may be corrupt or cyclic).
const MAX_THREADS: usize = 65_536;

/// Reads `len` bytes of another process's memory at `addr`.
fn read_remote(pid: u32, addr: u64, out: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: out.len(),
    };
    // SAFETY: one local buffer of the size given; the remote side is
    // checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != out.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn read_u64(pid: u32, addr: u64) -> io::Result<u64> {
    let mut b = [0u8; 8];
    read_remote(pid, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_i32(pid: u32, addr: u64) -> io::Result<i32> {
    let mut b = [0u8; 4];
    read_remote(pid, addr, &mut b)?;
    Ok(i32::from_le_bytes(b))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a path names glibc's libc (where pthread_create and the
/// thread_db descriptors are).
pub fn is_glibc(path: &str) -> bool {
    let b = basename(path.strip_suffix(" (deleted)").unwrap_or(path));
    b == "libc.so.6" || (b.starts_with("libc-2.") && b.ends_with(".so"))
}

/// glibc's libc and dynamic loader among a process's mappings.
pub fn glibc_mappings(snap: &Snapshot) -> (Option<&Mapping>, Option<&Mapping>) {
    let libc = snap.mappings.iter().find(|m| is_glibc(&m.file.path));
    let ld = snap
        .mappings
        .iter()
        .find(|m| basename(&m.file.path).starts_with("ld-linux"));
    (libc, ld)
}

/// (tid, start_routine) of the threads glibc lists in process `pid`.
pub fn start_routines(
    pid: u32,
    libc: (&Mapping, &ElfInfo),
    ld: (&Mapping, &ElfInfo),
) -> io::Result<Vec<(i32, u64)>> {
    let db = libc.1.thread_db;
    let (Some(list), Some(tid), Some(start), Some(next), Some(rtld)) = (
        db.pthread_list,
        db.pthread_tid,
        db.pthread_start_routine,
        db.list_next,
        ld.1.rtld_global,
    ) else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let bias = load_bias(ld.0, ld.1).ok_or(io::ErrorKind::InvalidData)?;
    let rtld = bias.wrapping_add(rtld);
    let mut out = Vec::new();
    for head in [db.stack_used, db.stack_user].into_iter().flatten() {
        let head = rtld.wrapping_add(head as u64);
        let mut node = read_u64(pid, head.wrapping_add(next as u64))?;
        while node != head && node != 0 && out.len() < MAX_THREADS {
            let pd = node.wrapping_sub(list as u64);
            let t = read_i32(pid, pd.wrapping_add(tid as u64)).unwrap_or(0);
            let s = read_u64(pid, pd.wrapping_add(start as u64)).unwrap_or(0);
            // glibc lists the main thread too (in `_dl_stack_user`): it
            // was not created by anyone's pthread_create.
            if t > 0 && t as u32 != pid {
                out.push((t, s));
            }
            node = read_u64(pid, node.wrapping_add(next as u64))?;
        }
    }
    Ok(out)
}

/// Threads per creating library: the library of each thread's
/// start_routine (the executable's name for the program's own), and
/// `unattributed` for the rest but the main thread. `total` is the
/// process's thread count now.
pub fn by_library(snap: &Snapshot, routines: &[(i32, u64)], total: i64) -> BTreeMap<String, i64> {
    let mut per = BTreeMap::new();
    for &(_, start) in routines {
        *per.entry(library_of(snap, start)).or_insert(0) += 1;
    }
    let listed = routines.len() as i64;
    let rest = total - 1 - listed;
    if rest > 0 {
        *per.entry(UNATTRIBUTED.to_string()).or_insert(0) += rest;
    }
    per
}

/// A process's threads by library are read again after this long, or
/// when its thread count changes.
const FRESH: Duration = Duration::from_secs(5);
const PROCESSES_KEPT: usize = 8192;
/// Thread names read per process at most; groups kept per process.
const NAMES_READ: usize = 4096;
const GROUPS_KEPT: usize = 16;

/// A process's threads: per creating library, and in groups for people.
#[derive(Debug, Default)]
pub struct Threads {
    pub libraries: BTreeMap<String, i64>,
    /// (name, threads), largest first: a thread-name pattern, a library,
    /// or Go's Ms.
    pub groups: Vec<(String, i64)>,
}

pub type Libraries = Arc<Threads>;

/// A thread name as a group's: the digits that number a pool's threads
/// become `*` (`pool-3-thread-17` → `pool-3-thread-*`), and a name the
/// kernel cut at 15 bytes is a prefix (`C2 CompilerThre*`).
pub fn name_pattern(name: &str) -> String {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < name.len() && !stem.is_empty() {
        format!("{stem}*")
    } else if name.len() >= 15 {
        format!("{name}*")
    } else {
        name.to_string()
    }
}

/// Go's Ms as people can tell them apart from outside: in a system call
/// that blocks (a read, a cgo call's), or waiting (idle, parked, or locked
/// to a goroutine that waits: Go alone knows which).
fn go_m(pid: u32, tid: i32) -> &'static str {
    // futex, nanosleep, sched_yield, epoll_wait, epoll_pwait, epoll_pwait2:
    // how Go's own Ms wait.
    const WAITING: &[u64] = &[202, 35, 24, 232, 281, 441];
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"));
    let nr = text
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|n| n.parse().ok()));
    match nr {
        Some(n) if !WAITING.contains(&n) => "Go Ms in system calls",
        _ => "Go Ms waiting",
    }
}

fn thread_name(pid: u32, tid: i32) -> Option<String> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(t.trim_end_matches('\n').to_string())
}

/// A live process's threads (but the main one) in groups, largest first.
fn groups(pid: u32, snap: &Snapshot, routines: &[(i32, u64)], go: bool) -> Vec<(String, i64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let own = thread_name(pid, pid as i32).unwrap_or_default();
    let libs: HashMap<i32, u64> = routines.iter().copied().collect();
    let mut per: HashMap<String, i64> = HashMap::new();
    let mut unread = 0;
    for (i, tid) in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&t| t != pid as i32)
        .enumerate()
    {
        if i >= NAMES_READ {
            unread += 1;
            continue;
        }
        let name = thread_name(pid, tid).unwrap_or_default();
        // Every thread of a Go program is an M, whatever started it (cgo's
        // threadentry, in a cgo program).
        let label = if !name.is_empty() && name != own {
            name_pattern(&name)
        } else if go {
            go_m(pid, tid).to_string()
        } else if let Some(&start) = libs.get(&tid) {
            library_of(snap, start)
        } else {
            UNATTRIBUTED.to_string()
        };
        *per.entry(label).or_insert(0) += 1;
    }
    let mut out: Vec<(String, i64)> = per.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if out.len() > GROUPS_KEPT {
        let rest: i64 = out.drain(GROUPS_KEPT - 1..).map(|g| g.1).sum();
        out.push(("other names".into(), rest));
    }
    if unread > 0 {
        out.push((format!("not read (over {NAMES_READ} threads)"), unread));
    }
    out
}

/// The library a start routine is in.
fn library_of(snap: &Snapshot, start: u64) -> String {
    snap.locate(start)
        .map(|(m, _)| {
            let is_exe = snap.exe.as_ref().is_some_and(|e| *e == m.file);
            classify::library(&m.file.path, is_exe)
        })
        .unwrap_or_else(|| UNATTRIBUTED.to_string())
}

/// Threads by library per process, read on demand and kept a few seconds.
#[derive(Default)]
pub struct Census {
    /// pid → (when read, its thread count then, what was found).
    cache: HashMap<u32, (Instant, i64, Libraries)>,
}

impl Census {
    /// Threads of `pid` (which has `total` now) per creating library.
    pub fn of(&mut self, pid: u32, total: i64, shared: &Shared, clock: &Clock) -> Libraries {
        if let Some((at, t, libs)) = self.cache.get(&pid) {
            if *t == total && at.elapsed() < FRESH {
                return libs.clone();
            }
        }
        let (libs, walked) = count(pid, total, shared, clock);
        let libs = Arc::new(libs);
        // A walk that could not be made (the process's libc not known yet,
        // its memory not readable) is tried again next time.
        if walked {
            if self.cache.len() >= PROCESSES_KEPT {
                self.prune();
            }
            self.cache
                .insert(pid, (Instant::now(), total, libs.clone()));
        }
        libs
    }

    /// Forgets what is too old to be used again.
    pub fn prune(&mut self) {
        self.cache.retain(|_, (at, _, _)| at.elapsed() < FRESH);
    }
}

/// Threads per library and in groups, and whether glibc's list was read.
fn count(pid: u32, total: i64, shared: &Shared, clock: &Clock) -> (Threads, bool) {
    if total <= 1 {
        return (Threads::default(), true);
    }
    let snap = shared
        .spaces
        .lock()
        .expect("not poisoned")
        .snapshot(pid, u64::MAX);
    let Some(snap) = snap else {
        let libraries = BTreeMap::from([(UNATTRIBUTED.to_string(), total - 1)]);
        return (
            Threads {
                libraries,
                groups: Vec::new(),
            },
            false,
        );
    };
    let read = |m: &Mapping| match shared.module(pid, m, &snap, clock) {
        Resolution::Found(f) => Some(f.info.clone()),
        Resolution::Missing(_) => None,
    };
    let routines = match glibc_mappings(&snap) {
        (Some(libc), Some(ld)) => match (read(libc), read(ld)) {
            (Some(li), Some(di)) => start_routines(pid, (libc, &li), (ld, &di)).ok(),
            _ => None,
        },
        // glibc's loader without its libc: a process just starting, whose
        // libc mapping the collector has not read yet. Asked again later.
        (None, Some(_)) => None,
        // Not glibc (musl, static, Go): its threads stay unattributed.
        _ => Some(Vec::new()),
    };
    let walked = routines.is_some();
    let routines = routines.unwrap_or_default();
    let go = snap.exe.as_ref().is_some_and(|exe| {
        snap.mappings
            .iter()
            .find(|m| m.file == *exe)
            .and_then(read)
            .is_some_and(|i| i.go)
    });
    let threads = Threads {
        libraries: by_library(&snap, &routines, total),
        groups: groups(pid, &snap, &routines, go),
    };
    (threads, walked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{address_spaces::AddressSpaces, files, modules::Modules};

    #[test]
    fn thread_names_group_by_pool() {
        let cases = [
            ("pool-3-thread-17", "pool-3-thread-*"),
            ("GC Thread#0", "GC Thread#*"),
            // Cut at 15 bytes by the kernel: a prefix.
            ("C2 CompilerThre", "C2 CompilerThre*"),
            ("pool-12-thread-", "pool-12-thread-*"),
            ("tokio-runtime-w", "tokio-runtime-w*"),
            ("worker", "worker"),
            ("1234", "1234"),
        ];
        for (name, want) in cases {
            assert_eq!(name_pattern(name), want, "{name}");
        }
    }

    /// This test process's own threads, found through glibc's list: one
    /// started here is attributed to the test executable.
    #[test]
    fn walks_glibc_thread_list_of_a_live_process() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let pid = std::process::id();
        let mut spaces = AddressSpaces::default();
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        use std::os::unix::fs::MetadataExt;
        spaces.seed(
            pid,
            &std::fs::read_to_string("/proc/self/maps").unwrap(),
            crate::clock::monotonic_ns(),
            Some((exe.dev(), exe.ino())),
            None,
        );
        let snap = spaces.snapshot(pid, crate::clock::monotonic_ns()).unwrap();
        let (libc, ld) = glibc_mappings(&snap);
        let (libc, ld) = (libc.unwrap(), ld.unwrap());
        let mut modules = Modules::default();
        let clock = crate::clock::Clock::new();
        let info = |m: &Mapping, modules: &mut Modules| match modules.resolve(
            pid,
            m,
            None,
            &clock,
            Vec::new,
        ) {
            crate::attribution::modules::Resolution::Found(f) => f.info.clone(),
            crate::attribution::modules::Resolution::Missing(why) => panic!("{why}"),
        };
        let li = info(libc, &mut modules);
        let di = info(ld, &mut modules);
        let routines = start_routines(pid, (libc, &li), (ld, &di)).unwrap();
        assert!(!routines.is_empty(), "the test harness and our thread");
        let total = routines.len() as i64 + 1;
        let libs = by_library(&snap, &routines, total);
        let exe_name = classify::library(&snap.exe.as_ref().unwrap().path, true);
        assert!(libs.get(&exe_name).is_some_and(|&n| n >= 1), "{libs:?}");
        let _ = files::mount_ns(pid);
        tx.send(()).unwrap();
        t.join().unwrap();
    }
}

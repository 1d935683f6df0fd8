//! Which runtime made a thread, which of its frames are its own
//! thread-spawning code, and why it wanted the thread.
//!
//! pthread_create is rarely called by the code that wants a thread: Rust's
//! `std::thread`, libuv's `uv_thread_create_ex`, the JVM's
//! `os::create_thread` and cgo's `_cgo_try_pthread_create` stand between,
//! and Go's scheduler makes its threads (Ms) with its own `clone`. Those
//! frames are looked past, as pthread_create is, so that the asker is the
//! code that wanted the thread: the program's function, tokio's blocking
//! pool, Go's scheduler function that needed an M.

/// Runtimes that make threads for the program.
pub const GO: &str = "go";
pub const JVM: &str = "jvm";
pub const NODE: &str = "node";
pub const RUST: &str = "rust";

/// A frame as these rules see it: its function and the library it is in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen<'a> {
    pub symbol: Option<&'a str>,
    pub library: Option<&'a str>,
}

/// A symbol without the ABI suffix Go gives its assembly (`.abi0`).
fn go_name(symbol: &str) -> &str {
    symbol.strip_suffix(".abi0").unwrap_or(symbol)
}

/// Go's path from the scheduler's wish for an M to the clone.
const GO_SPAWN: &[&str] = &[
    "runtime.clone",
    "runtime.newosproc",
    "runtime.newosproc0",
    "runtime.newm1",
    "runtime.newm",
    // cgo: the runtime asks libc's pthread_create through these.
    "runtime.asmcgocall",
    "runtime.systemstack",
    "_cgo_try_pthread_create",
    "_cgo_sys_thread_start",
    "x_cgo_thread_start",
    "_cgo_thread_start",
];

/// Rust's std between `thread::spawn` and pthread_create, however the
/// compiler spelled it (`<std::sys::thread::unix::Thread>::new`).
fn rust_std_spawn(symbol: &str) -> bool {
    let s = symbol.trim_start_matches('<');
    ["std::thread::", "std::sys::", "std::sys_common::"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Whether a frame belongs to a runtime's thread-spawning path.
pub fn spawns(symbol: &str) -> bool {
    GO_SPAWN.contains(&go_name(symbol))
        || rust_std_spawn(symbol)
        // libuv's wrapper (Node, and any program linking libuv).
        || symbol.starts_with("uv_thread_create")
        // HotSpot: the OS thread behind every Java and JVM thread.
        || symbol.starts_with("os::create_thread")
        || symbol.starts_with("JavaThread::JavaThread")
}

/// The runtime whose frames a stack shows, if any; `go` when the
/// executable is a Go program.
pub fn runtime(frames: &[Seen<'_>], go_program: bool) -> Option<&'static str> {
    if go_program {
        return Some(GO);
    }
    let any = |p: &dyn Fn(&Seen<'_>) -> bool| frames.iter().any(p);
    if any(&|f| f.library == Some("libjvm")) {
        Some(JVM)
    } else if any(&|f| f.library == Some("node") || f.library == Some("libnode")) {
        Some(NODE)
    } else if any(&|f| f.symbol.is_some_and(rust_std_spawn)) {
        Some(RUST)
    } else {
        None
    }
}

/// The library to name for an asker Node's executable holds: its libuv
/// (statically linked) is named as such, its pool variable being libuv's.
pub fn library_in_node(symbol: &str) -> Option<&'static str> {
    let libuv = symbol.starts_with("uv_")
        || symbol.starts_with("uv__")
        || matches!(symbol, "init_threads" | "init_once" | "worker");
    libuv.then_some("libuv")
}

/// Why Go's scheduler wanted an M, from the functions on its stack:
/// the most specific reason first.
pub fn go_reason(frames: &[Seen<'_>]) -> Option<&'static str> {
    let has = |names: &[&str]| {
        frames.iter().any(|f| {
            f.symbol
                .is_some_and(|s| names.iter().any(|n| go_name(s) == *n))
        })
    };
    Some(if has(&["runtime.startTemplateThread"]) {
        "a goroutine locked its OS thread (runtime.LockOSThread): Go started the template \
             thread that makes threads for locked goroutines"
    } else if has(&["runtime.templateThread"]) {
        "goroutines locked to their OS threads (runtime.LockOSThread) each hold a thread \
             while they block: Go's template thread made another for the others"
    } else if has(&[
        "runtime.stoplockedm",
        "runtime.startlockedm",
        "runtime.LockOSThread",
        "runtime.lockOSThread",
    ]) {
        "goroutines locked to their OS threads (runtime.LockOSThread) each hold a thread \
             while they block: Go needed another thread to run the other goroutines"
    } else if has(&[
        "runtime.entersyscallblock",
        "runtime.entersyscallblock_handoff",
        "runtime.retake",
        "runtime.exitsyscall",
        "runtime.cgocall",
    ]) {
        "goroutines blocked in system calls or cgo calls each hold an OS thread: Go started \
             another to keep running the others (up to GOMAXPROCS at once)"
    } else if has(&["runtime.main"]) && has(&["runtime.sysmon"]) {
        "Go's system monitor thread (sysmon), started with the program"
    } else if has(&["runtime.startm", "runtime.wakep", "runtime.handoffp"]) {
        "goroutines were ready to run and no idle thread could take them: Go started \
             another (up to GOMAXPROCS running, more while others are blocked)"
    } else if has(&["runtime.newextram", "runtime.oneNewExtraM"]) {
        "a thread created outside Go called into Go (a cgo callback): Go prepared an extra M"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(symbols: &[&'static str]) -> Vec<Seen<'static>> {
        symbols
            .iter()
            .map(|&s| Seen {
                symbol: Some(s),
                library: Some("gospawn"),
            })
            .collect()
    }

    #[test]
    fn go_spawning_frames_are_looked_past_and_the_reason_found() {
        let frames = seen(&[
            "runtime.clone.abi0",
            "runtime.newm1",
            "runtime.newm",
            "runtime.startm",
            "runtime.handoffp",
            "runtime.stoplockedm",
            "runtime.schedule",
        ]);
        let asker = frames.iter().find(|f| !spawns(f.symbol.unwrap())).unwrap();
        assert_eq!(asker.symbol, Some("runtime.startm"));
        assert!(go_reason(&frames).unwrap().contains("LockOSThread"));
        assert_eq!(runtime(&frames, true), Some(GO));
        let plain = seen(&["runtime.newm", "runtime.startm", "runtime.wakep"]);
        assert!(go_reason(&plain).unwrap().contains("GOMAXPROCS"));
        assert_eq!(go_reason(&seen(&["main.main"])), None);
    }

    #[test]
    fn rust_libuv_and_hotspot_wrappers_are_looked_past() {
        for s in [
            "std::sys::pal::unix::thread::Thread::new",
            "<std::sys::thread::unix::Thread>::new",
            "std::thread::Builder::spawn_unchecked_",
            "uv_thread_create_ex",
            "os::create_thread",
            "_cgo_try_pthread_create",
        ] {
            assert!(spawns(s), "{s}");
        }
        for s in [
            "tokio::runtime::blocking::pool::Spawner::spawn_thread",
            "rt_rust::main",
            "node::worker::Worker::StartThread",
            "JVM_StartThread",
            "blas_thread_init",
        ] {
            assert!(!spawns(s), "{s}");
        }
        let rust = [Seen {
            symbol: Some("std::sys::pal::unix::thread::Thread::new"),
            library: Some("app"),
        }];
        assert_eq!(runtime(&rust, false), Some(RUST));
        let node = [Seen {
            symbol: Some("uv_thread_create_ex"),
            library: Some("node"),
        }];
        assert_eq!(runtime(&node, false), Some(NODE));
        assert_eq!(library_in_node("init_threads"), Some("libuv"));
        assert_eq!(library_in_node("node::worker::Worker::StartThread"), None);
    }
}

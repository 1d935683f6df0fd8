//! What threadtrace may do as root, and what it gives up.
//!
//! Up front: can this process load eBPF programs? Checked first, so that
//! the user gets one clear line instead of a verifier or perf_event error.
//!
//! After attach: every probe is attached and every file the tracer writes
//! is open, so it keeps only the capabilities it still uses (see
//! [`plan`]), empties its bounding and ambient sets, and sets
//! `PR_SET_NO_NEW_PRIVS`. The collector does this before it starts the
//! output and dashboard threads, which inherit its credentials
//! (capabilities are per thread).
use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub fn name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("CAP_{cap}"))
}

/// The names of the capabilities in a mask, lowest first.
pub fn names(mask: u64) -> Vec<String> {
    (0..64).filter(|c| mask & (1 << c) != 0).map(name).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read this thread's capabilities: {0}")]
    Get(io::Error),
    #[error("cannot drop capabilities: {0}")]
    Set(io::Error),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(io::Error),
    #[error("capabilities not dropped: {0} threads run already (they would keep theirs)")]
    Threads(usize),
    #[error("after dropping, the thread still holds {0}")]
    Kept(String),
}

/// The effective, permitted and inheritable sets of this thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: 64-bit sets, as two 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

pub fn current() -> Result<Caps, PrivilegeError> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3 from a valid header.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(PrivilegeError::Get(io::Error::last_os_error()));
    }
    let join = |lo: u32, hi: u32| (hi as u64) << 32 | lo as u64;
    Ok(Caps {
        effective: join(d[0].effective, d[1].effective),
        permitted: join(d[0].permitted, d[1].permitted),
        inheritable: join(d[0].inheritable, d[1].inheritable),
    })
}

fn set(c: Caps) -> Result<(), PrivilegeError> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let d: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: half(c.effective, i),
        permitted: half(c.permitted, i),
        inheritable: half(c.inheritable, i),
    });
    // SAFETY: capset reads a valid header and two CapData.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
        return Err(PrivilegeError::Set(io::Error::last_os_error()));
    }
    Ok(())
}

/// Effective capabilities from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn can_trace(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// What decides which capabilities the recording still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Linux (major, minor).
    pub kernel: Option<(u32, u32)>,
    /// kernel.unprivileged_bpf_disabled is set.
    pub unprivileged_bpf_disabled: bool,
}

impl Needs {
    /// This host's facts; the recording's own are set by the caller.
    pub fn of_host() -> Needs {
        Needs {
            kernel: kernel_version(),
            unprivileged_bpf_disabled: std::fs::read_to_string(
                "/proc/sys/kernel/unprivileged_bpf_disabled",
            )
            .map(|s| s.trim() != "0")
            .unwrap_or(true),
        }
    }
}

pub fn kernel_version() -> Option<(u32, u32)> {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = r.trim().split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A capability kept after attach, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub cap: u32,
    pub why: &'static str,
}

/// The capabilities of `held` that recording still uses after attach.
pub fn plan(held: u64, needs: &Needs) -> Vec<Kept> {
    let has = |c: u32| held & (1u64 << c) != 0;
    let at_least = |v: (u32, u32)| needs.kernel.is_some_and(|k| k >= v);
    let mut kept = Vec::new();
    let mut keep = |cap: u32, why: &'static str| {
        if has(cap) && !kept.iter().any(|k: &Kept| k.cap == cap) {
            kept.push(Kept { cap, why });
        }
    };
    keep(
        CAP_SYS_PTRACE,
        "read other users' processes: /proc/PID/maps, exe, root and mem, process_vm_readv",
    );
    keep(
        CAP_DAC_READ_SEARCH,
        "open the files other users' processes map, by handle (open_by_handle_at) or path, whatever their mode",
    );
    if at_least((5, 9)) && has(CAP_CHECKPOINT_RESTORE) {
        keep(
            CAP_CHECKPOINT_RESTORE,
            "open /proc/PID/map_files: the very file a process mapped",
        );
    } else {
        keep(
            CAP_SYS_ADMIN,
            "open /proc/PID/map_files (CAP_CHECKPOINT_RESTORE does not exist before Linux 5.9 or is not held)",
        );
    }
    // Before 5.19 every bpf() call, map reads included, needs CAP_BPF when
    // unprivileged BPF is disabled; since, an open map fd suffices.
    if needs.unprivileged_bpf_disabled && !at_least((5, 19)) {
        if has(CAP_BPF) {
            keep(
                CAP_BPF,
                "read the kernel's counters (bpf() before Linux 5.19)",
            );
        } else {
            keep(
                CAP_SYS_ADMIN,
                "read the kernel's counters (bpf() before Linux 5.19, no CAP_BPF)",
            );
        }
    }
    kept.sort_by_key(|k| k.cap);
    kept
}

fn mask(kept: &[Kept]) -> u64 {
    kept.iter().fold(0, |m, k| m | 1 << k.cap)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/thread-self/..")
        .map(|d| d.count())
        .unwrap_or(1)
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these prctl options take integer arguments only.
    if unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps only what `plan` says, for good: the bounding and ambient sets
/// emptied of the rest (no exec can bring them back), no_new_privs set.
/// Must run while the calling thread is the only one.
pub fn drop_after_attach(needs: &Needs) -> Result<Vec<Kept>, PrivilegeError> {
    let n = threads();
    if n > 1 {
        return Err(PrivilegeError::Threads(n));
    }
    let held = current()?;
    let kept = plan(held.permitted, needs);
    let keep = mask(&kept);
    // Ambient capabilities would survive an exec: none.
    let _ = prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    // The bounding set while CAP_SETPCAP is still held.
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63);
    for cap in (0..=last).filter(|c| keep & (1 << c) == 0) {
        // EPERM without CAP_SETPCAP, EINVAL past the kernel's last: the
        // permitted set below is what counts.
        let _ = prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong);
    }
    set(Caps {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    })?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(PrivilegeError::NoNewPrivs)?;
    let now = current()?;
    if now.permitted & !keep != 0 || now.effective & !keep != 0 {
        return Err(PrivilegeError::Kept(
            names((now.permitted | now.effective) & !keep).join(", "),
        ));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = (1 << 41) - 1;

    fn kept(held: u64, needs: Needs) -> Vec<String> {
        plan(held, &needs).iter().map(|k| name(k.cap)).collect()
    }

    fn needs(kernel: (u32, u32)) -> Needs {
        Needs {
            kernel: Some(kernel),
            unprivileged_bpf_disabled: true,
        }
    }

    #[test]
    fn needs_sys_admin_or_bpf_and_perfmon() {
        assert!(!can_trace(0));
        assert!(can_trace(1 << CAP_SYS_ADMIN));
        assert!(!can_trace(1 << CAP_BPF));
        assert!(can_trace((1 << CAP_BPF) | (1 << CAP_PERFMON)));
    }

    #[test]
    fn root_on_a_recent_kernel_keeps_three() {
        assert_eq!(
            kept(ALL, needs((6, 18))),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_PTRACE",
                "CAP_CHECKPOINT_RESTORE"
            ]
        );
    }

    #[test]
    fn older_kernels_keep_what_they_need() {
        assert_eq!(
            kept(ALL, needs((5, 4))),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_PTRACE",
                "CAP_SYS_ADMIN",
                "CAP_BPF"
            ],
            "map_files needs CAP_SYS_ADMIN, map reads CAP_BPF"
        );
        let mut n = needs((5, 15));
        n.unprivileged_bpf_disabled = false;
        assert_eq!(
            kept(ALL, n),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_PTRACE",
                "CAP_CHECKPOINT_RESTORE"
            ]
        );
    }

    #[test]
    fn nothing_is_kept_that_was_not_held() {
        let held = 1 << CAP_SYS_ADMIN;
        assert_eq!(kept(held, needs((6, 18))), ["CAP_SYS_ADMIN"]);
        assert!(kept(0, needs((6, 18))).is_empty());
    }

    #[test]
    fn this_threads_capabilities_read_back() {
        let c = current().unwrap();
        assert_eq!(c.effective, effective_caps());
        assert_eq!(name(CAP_BPF), "CAP_BPF");
        assert_eq!(
            names(1 << 2 | 1 << 19),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
        );
    }

    /// Setting the hostname it already has needs CAP_SYS_ADMIN, and
    /// changes nothing when it works.
    fn can_set_own_hostname() -> bool {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes.
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        // SAFETY: the same bytes back.
        unsafe { libc::sethostname(buf.as_ptr().cast(), len) == 0 }
    }

    /// In a child: the drop is for the rest of its life.
    #[test]
    fn dropping_keeps_only_the_plan_and_sets_no_new_privs() {
        if current().unwrap().permitted & (1 << CAP_SYS_PTRACE) == 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // SAFETY: the child makes syscalls and reads /proc, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let n = needs((6, 18));
            let ok = drop_after_attach(&n).is_ok_and(|k| k.len() == 3)
                && current().is_ok_and(|c| c.permitted == mask(&plan(ALL, &n)))
                // SAFETY: reading a flag.
                && unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1
                && effective_caps() == mask(&plan(ALL, &n))
                && !can_set_own_hostname();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
    }
}

//! `threadtrace doctor`: can this host run threadtrace, and if not, what to
//! do about it, in plain words.
use std::path::Path;

use crate::{kernel, privileges, words};

pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do when not ok.
    pub fix: Option<String>,
}

fn check(name: &str, ok: bool, detail: impl Into<String>, fix: &str) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: (!ok).then(|| fix.to_string()),
    }
}

pub fn run() -> Vec<Check> {
    let mut out = Vec::new();
    let caps = privileges::effective_caps();
    let root = privileges::can_trace(caps);
    out.push(check(
        "privileges",
        root,
        if root {
            "can load eBPF programs"
        } else {
            "no CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN"
        },
        "run threadtrace with sudo",
    ));
    out.push(capabilities(caps));
    let kv = privileges::kernel_version();
    let kv_ok = kv.is_some_and(|v| v >= (5, 8));
    out.push(check(
        "kernel",
        kv_ok,
        kv.map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_else(|| "unknown".into()),
        "threadtrace needs Linux 5.8 or newer (BPF ring buffer)",
    ));
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(check(
        "BTF",
        btf,
        if btf { "/sys/kernel/btf/vmlinux" } else { "absent" },
        "without BTF, exit codes and the limits in force before a change are not reported; a kernel with CONFIG_DEBUG_INFO_BTF=y has it",
    ));
    let mut tracefs_ok = kernel::tracefs::is_mounted();
    let mut tracefs_detail = "mounted at /sys/kernel/tracing".to_string();
    if !tracefs_ok && root {
        match kernel::tracefs::ensure_mounted() {
            Ok(_) => {
                tracefs_ok = true;
                tracefs_detail = "was not mounted; mounted it at /sys/kernel/tracing".into();
            }
            Err(e) => tracefs_detail = e.to_string(),
        }
    } else if !tracefs_ok {
        tracefs_detail = "not mounted (threadtrace mounts it when run as root)".into();
    }
    out.push(check(
        "tracefs",
        tracefs_ok,
        tracefs_detail,
        "sudo mount -t tracefs nodev /sys/kernel/tracing",
    ));
    if tracefs_ok {
        for &(_, cat, name) in kernel::all_tracepoints() {
            let ok = kernel::tracefs::tracepoint_exists(cat, name);
            out.push(check(
                &format!("tracepoint {cat}:{name}"),
                ok,
                if ok { "present" } else { "missing" },
                "this kernel lacks the tracepoint (CONFIG_FTRACE_SYSCALLS for syscalls:*)",
            ));
        }
    }
    // Where each process's libraries are known from after it exits: the
    // mapping probe, which walks kernel structures at offsets from BTF.
    let mapping = crate::kernel::build_config().map(|c| crate::kernel::missing_mapping_offsets(&c));
    out.push(check(
        "mapping offsets (BTF)",
        matches!(&mapping, Ok(m) if m.is_empty()),
        match &mapping {
            Ok(m) if m.is_empty() => "all found".to_string(),
            Ok(m) => format!("missing: {}", m.join(", ")),
            Err(e) => e.to_string(),
        },
        "needs /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); without it failures of processes that already exited are not attributed to libraries",
    ));
    if root && tracefs_ok {
        out.extend(attach_methods());
    }
    out
}

/// Loads and attaches the programs as `record` would, says how each hook
/// went (fexit, or the tracepoints and why), and detaches them all.
fn attach_methods() -> Vec<Check> {
    match kernel::Kernel::load(0, 0, true) {
        Ok(k) => k
            .attach
            .iter()
            .map(|h| Check {
                name: format!("attach: {}", h.hook),
                ok: true,
                detail: words::attach_method(h),
                fix: None,
            })
            .collect(),
        Err(e) => vec![check(
            "programs load and attach",
            false,
            e.to_string(),
            "see the error; `threadtrace -vv record` says more",
        )],
    }
}

/// What is held, and what `record` keeps once attached, and why.
fn capabilities(held: u64) -> Check {
    let needs = privileges::Needs::of_host();
    let kept = privileges::plan(held, &needs);
    let kept_mask = kept.iter().fold(0u64, |m, k| m | 1 << k.cap);
    let why: Vec<String> = kept
        .iter()
        .map(|k| format!("{} ({})", privileges::name(k.cap), k.why))
        .collect();
    Check {
        name: "capabilities".into(),
        ok: true,
        detail: format!(
            "{} held; after attach, record keeps {}: {}; it drops the other {} and sets no_new_privs",
            held.count_ones(),
            kept.len(),
            if why.is_empty() { "none".into() } else { why.join("; ") },
            (held & !kept_mask).count_ones()
        ),
        fix: None,
    }
}

pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<4} {:<40} {}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("     → {fix}\n"));
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        s.push_str("all checks passed: `sudo threadtrace record` will work here.");
    } else {
        s.push_str(&format!("{failed} check(s) failed; see the → lines."));
    }
    s
}

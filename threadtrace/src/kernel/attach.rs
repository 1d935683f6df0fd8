//! The hooks that can be attached two ways, and which way each one is.
//!
//! Any syscall tracepoint sends every syscall of the host through the
//! kernel's slower syscall exit, whatever the syscall; a program at a
//! kernel function's exit (fexit, over a BPF trampoline) costs only the
//! calls of that function. So where the kernel allows it, the clone,
//! thread-stack and limit-change hooks use fexit (with fentry where the
//! entry must be seen too), and the syscall tracepoints otherwise: never
//! both for one hook, which would count its failures twice. The programs
//! record the same at either place (threadtrace-ebpf's clone.rs,
//! stack_alloc.rs and rlimit.rs: one body, two entry points). Only when
//! every syscall tracepoint is gone does a syscall stop paying.
use std::io;

use aya::programs::ProgramError;

use crate::model::{names::errno_name, AttachMethod, HookAttach};

/// One hook: its fexit program, and the tracepoints that replace it.
pub struct Hook {
    /// What it watches, in words.
    pub name: &'static str,
    /// The fentry program at the same function, when the hook needs it.
    pub fentry: Option<&'static str>,
    /// The fexit program in the eBPF object, and the kernel function.
    pub fexit: (&'static str, &'static str),
    /// (program, category, tracepoint), all attached when fexit is not.
    pub tracepoints: &'static [(&'static str, &'static str, &'static str)],
}

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "clone failures",
        // clone, clone3, fork and vfork all create through it.
        fentry: None,
        fexit: ("fexit_kernel_clone", "kernel_clone"),
        tracepoints: &[
            ("sys_exit_clone", "syscalls", "sys_exit_clone"),
            ("sys_exit_clone3", "syscalls", "sys_exit_clone3"),
            ("sys_exit_fork", "syscalls", "sys_exit_fork"),
            ("sys_exit_vfork", "syscalls", "sys_exit_vfork"),
        ],
    },
    Hook {
        name: "thread stack mmap",
        // mmap(2)'s body, with its arguments as the caller passed them
        // (do_mmap has too many arguments for a trampoline before 6.6).
        fentry: None,
        fexit: ("fexit_ksys_mmap_pgoff", "ksys_mmap_pgoff"),
        tracepoints: &[("sys_exit_mmap", "syscalls", "sys_exit_mmap")],
    },
    Hook {
        name: "thread stack mprotect",
        fentry: None,
        fexit: ("fexit_do_mprotect_pkey", "do_mprotect_pkey"),
        tracepoints: &[("sys_exit_mprotect", "syscalls", "sys_exit_mprotect")],
    },
    Hook {
        name: "limit changes",
        // setrlimit and prlimit64 both change limits through it; the entry
        // reads the limit before the change.
        fentry: Some("fentry_do_prlimit"),
        fexit: ("fexit_do_prlimit", "do_prlimit"),
        tracepoints: &[
            ("sys_enter_setrlimit", "syscalls", "sys_enter_setrlimit"),
            ("sys_exit_setrlimit", "syscalls", "sys_exit_setrlimit"),
            ("sys_enter_prlimit64", "syscalls", "sys_enter_prlimit64"),
            ("sys_exit_prlimit64", "syscalls", "sys_exit_prlimit64"),
        ],
    },
];

/// Why a hook is not at its kernel function's exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `record --tracepoints-only`.
    TurnedOff,
    /// No /sys/kernel/btf/vmlinux (or unreadable): fexit needs it.
    NoBtf,
    /// The function is not in the kernel's BTF (inlined, renamed).
    NotInBtf,
    /// The kernel refused to load the program; the verifier said why when
    /// `verifier` is true.
    Load { errno: Option<i32>, verifier: bool },
    /// Loaded, but the kernel refused to attach it.
    Attach { errno: Option<i32> },
    /// Anything else aya reported.
    Other(String),
}

impl Refusal {
    /// From what aya said when loading (`attaching` false) or attaching.
    pub fn of(e: &ProgramError, attaching: bool) -> Self {
        let errno = |io: &io::Error| io.raw_os_error();
        match e {
            ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. }) => Refusal::NotInBtf,
            ProgramError::Btf(_) => Refusal::NoBtf,
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Refusal::Load {
                errno: errno(io_error),
                verifier: !verifier_log.to_string().trim().is_empty(),
            },
            ProgramError::SyscallError(s) if attaching => Refusal::Attach {
                errno: errno(&s.io_error),
            },
            ProgramError::SyscallError(s) => Refusal::Load {
                errno: errno(&s.io_error),
                verifier: false,
            },
            other => Refusal::Other(other.to_string()),
        }
    }

    /// Words, after "fexit": "not allowed here: EPERM".
    pub fn words(&self, function: &str) -> String {
        const EPERM: i32 = 1;
        const EACCES: i32 = 13;
        const ENOTSUPP: i32 = 524;
        let name = |e: &Option<i32>| e.map_or("an unknown error".into(), errno_name);
        match self {
            Refusal::TurnedOff => "turned off by --tracepoints-only".into(),
            Refusal::NoBtf => "needs the kernel's BTF (/sys/kernel/btf/vmlinux)".into(),
            Refusal::NotInBtf => format!("cannot find {function} in this kernel's BTF"),
            Refusal::Load {
                errno: Some(EPERM), ..
            }
            | Refusal::Attach { errno: Some(EPERM) } => "not allowed here: EPERM".into(),
            Refusal::Load {
                errno: Some(ENOTSUPP),
                ..
            }
            | Refusal::Attach {
                errno: Some(ENOTSUPP),
            } => format!("not supported by this kernel on {function}: ENOTSUPP"),
            Refusal::Load {
                errno,
                verifier: true,
            } => format!("refused by this kernel's verifier: {}", name(errno)),
            Refusal::Load {
                errno: Some(EACCES),
                verifier: false,
            } => "not allowed here: EACCES".into(),
            Refusal::Load { errno, .. } => format!("failed to load: {}", name(errno)),
            Refusal::Attach { errno } => format!("failed to attach: {}", name(errno)),
            Refusal::Other(s) => format!("failed: {s}"),
        }
    }
}

/// What `started` and `doctor` say of `hook`: fexit, or its tracepoints
/// and why not fexit.
pub fn choice(hook: &Hook, refused: Option<&Refusal>) -> HookAttach {
    match refused {
        None => HookAttach {
            hook: hook.name.into(),
            method: if hook.fentry.is_some() {
                AttachMethod::FentryFexit
            } else {
                AttachMethod::Fexit
            },
            at: vec![hook.fexit.1.into()],
            fexit_refused: None,
        },
        Some(r) => HookAttach {
            hook: hook.name.into(),
            method: AttachMethod::Tracepoints,
            at: hook.tracepoints.iter().map(|t| t.2.to_string()).collect(),
            fexit_refused: Some(r.words(hook.fexit.1)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fexit_says_its_function() {
        let h = choice(&HOOKS[0], None);
        assert_eq!(h.method, AttachMethod::Fexit);
        assert_eq!(h.at, ["kernel_clone"]);
        assert_eq!(h.fexit_refused, None);
    }

    #[test]
    fn a_hook_that_needs_its_entry_says_fentry_too() {
        let h = HOOKS.iter().find(|h| h.fexit.1 == "do_prlimit").unwrap();
        let c = choice(h, None);
        assert_eq!(c.method, AttachMethod::FentryFexit);
        assert_eq!(c.at, ["do_prlimit"]);
    }

    #[test]
    fn tracepoints_say_all_of_them_and_why() {
        let r = Refusal::Load {
            errno: Some(1),
            verifier: false,
        };
        let h = choice(&HOOKS[0], Some(&r));
        assert_eq!(h.method, AttachMethod::Tracepoints);
        assert_eq!(
            h.at,
            [
                "sys_exit_clone",
                "sys_exit_clone3",
                "sys_exit_fork",
                "sys_exit_vfork"
            ]
        );
        assert_eq!(h.fexit_refused.as_deref(), Some("not allowed here: EPERM"));
    }

    #[test]
    fn refusals_in_words() {
        let w = |r: Refusal| r.words("kernel_clone");
        assert_eq!(
            w(Refusal::NotInBtf),
            "cannot find kernel_clone in this kernel's BTF"
        );
        assert_eq!(
            w(Refusal::Attach { errno: Some(1) }),
            "not allowed here: EPERM"
        );
        assert_eq!(
            w(Refusal::Load {
                errno: Some(22),
                verifier: true
            }),
            "refused by this kernel's verifier: EINVAL"
        );
        assert_eq!(
            w(Refusal::Load {
                errno: Some(524),
                verifier: false
            }),
            "not supported by this kernel on kernel_clone: ENOTSUPP"
        );
        assert_eq!(
            w(Refusal::Attach { errno: Some(16) }),
            "failed to attach: EBUSY"
        );
        assert_eq!(w(Refusal::TurnedOff), "turned off by --tracepoints-only");
    }

    #[test]
    fn refusals_from_aya_errors() {
        // (aya's LoadError cannot be made outside aya: its verifier log
        // has no public constructor.)
        let attach = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_raw_tracepoint_open",
            io_error: io::Error::from_raw_os_error(1),
        });
        assert_eq!(
            Refusal::of(&attach, true),
            Refusal::Attach { errno: Some(1) }
        );
        assert_eq!(
            Refusal::of(&attach, false),
            Refusal::Load {
                errno: Some(1),
                verifier: false
            }
        );
        let missing = ProgramError::Btf(aya::BtfError::UnknownBtfTypeName {
            type_name: "kernel_clone".into(),
        });
        assert_eq!(Refusal::of(&missing, false), Refusal::NotInBtf);
    }

    /// Every hook's tracepoints are all attached when fexit is not, and no
    /// tracepoint is in two places (it would be attached twice).
    #[test]
    fn tracepoints_are_not_shared() {
        let mut seen: Vec<&str> = super::super::TRACEPOINTS.iter().map(|t| t.0).collect();
        for h in HOOKS {
            for t in h.tracepoints {
                assert!(!seen.contains(&t.0), "{}", t.0);
                seen.push(t.0);
            }
        }
    }
}

//! How a hook is attached, in one line: `started` and `doctor` say it.
use crate::model::{AttachMethod, HookAttach};

/// "clone failures: fexit kernel_clone", or "clone failures: tracepoints
/// sys_exit_clone, sys_exit_clone3 (fexit not allowed here: EPERM)".
pub fn hook_attach(h: &HookAttach) -> String {
    format!("{}: {}", h.hook, attach_method(h))
}

/// The method alone: "fexit kernel_clone", "tracepoint sys_exit_mmap
/// (fexit not allowed here: EPERM)".
pub fn attach_method(h: &HookAttach) -> String {
    let method = match h.method {
        AttachMethod::Fexit => "fexit",
        AttachMethod::FentryFexit => "fentry/fexit",
        AttachMethod::Tracepoints if h.at.len() == 1 => "tracepoint",
        AttachMethod::Tracepoints => "tracepoints",
    };
    let mut s = format!("{method} {}", h.at.join(", "));
    if let Some(why) = &h.fexit_refused {
        s.push_str(&format!(" (fexit {why})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_the_method_and_why_not_fexit() {
        let fexit = HookAttach {
            hook: "clone failures".into(),
            method: AttachMethod::Fexit,
            at: vec!["kernel_clone".into()],
            fexit_refused: None,
        };
        assert_eq!(hook_attach(&fexit), "clone failures: fexit kernel_clone");
        let tp = HookAttach {
            hook: "clone failures".into(),
            method: AttachMethod::Tracepoints,
            at: vec!["sys_exit_clone".into(), "sys_exit_clone3".into()],
            fexit_refused: Some("not allowed here: EPERM".into()),
        };
        assert_eq!(
            hook_attach(&tp),
            "clone failures: tracepoints sys_exit_clone, sys_exit_clone3 (fexit not allowed here: EPERM)"
        );
        let one = HookAttach {
            hook: "thread stack mmap".into(),
            at: vec!["sys_exit_mmap".into()],
            ..tp
        };
        assert_eq!(
            hook_attach(&one),
            "thread stack mmap: tracepoint sys_exit_mmap (fexit not allowed here: EPERM)"
        );
        let both = HookAttach {
            hook: "limit changes".into(),
            method: AttachMethod::FentryFexit,
            at: vec!["do_prlimit".into()],
            fexit_refused: None,
        };
        assert_eq!(hook_attach(&both), "limit changes: fentry/fexit do_prlimit");
    }
}

//! What reaches the dashboard, made safe to draw: ratatui leaves out C0
//! and C1 controls, but draws bidirectional overrides and invisible
//! characters, and does not bound a name's length. Every string of an
//! update goes through `sanitize` as it arrives, once.
use std::sync::Arc;

use super::data::{FailureGroup, Second, Update};
use crate::{diagnosis::limits::ProcessLimits, sanitize};

fn text(s: &mut String) {
    if let std::borrow::Cow::Owned(clean) = sanitize::text(s) {
        *s = clean;
    }
}

fn group(g: &mut FailureGroup) {
    text(&mut g.library);
    text(&mut g.cause);
    for (_, comm, _) in &mut g.processes {
        text(comm);
    }
    g.example = g
        .example
        .as_deref()
        .and_then(sanitize::for_display)
        .map(Arc::new);
}

fn process(p: &mut ProcessLimits) {
    text(&mut p.comm);
    for (library, _) in &mut p.libraries {
        text(library);
    }
    if let Some(pids) = &mut p.pids {
        text(&mut pids.cgroup);
    }
    if let Some((_, source)) = &mut p.cpus {
        text(source);
    }
    p.oversubscribed = p.oversubscribed.as_ref().and_then(sanitize::for_display);
}

impl Update {
    /// The same update with every string escaped; None for a record that
    /// cannot be (it is in the trace file, exact).
    pub fn for_display(self) -> Option<Update> {
        Some(match self {
            Update::Record(r) => Update::Record(Box::new(sanitize::for_display(&*r)?)),
            Update::Second(mut s) => {
                let Second {
                    summary,
                    failures,
                    processes,
                    limits,
                    dropped: _,
                } = &mut *s;
                for l in limits.iter_mut() {
                    *l = sanitize::for_display(&*l).unwrap_or_default();
                }
                *summary = sanitize::for_display(summary).unwrap_or_default();
                failures.iter_mut().for_each(group);
                processes.iter_mut().for_each(process);
                Update::Second(s)
            }
            Update::Usage(u) => Update::Usage(u),
            Update::Log(l) => Update::Log(sanitize::line(&l, sanitize::FIELD_MAX).into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fixtures::failure, Record};

    #[test]
    fn every_string_of_an_update_is_escaped() {
        let mut e = failure(7, "\x1b]0;PWNED\x07", "lib\u{202e}x", "rlimit_nproc");
        e.cgroup = Some("/sys/fs/cgroup/pids/\u{9b}2J".into());
        let Some(Update::Record(r)) =
            Update::Record(Box::new(Record::ThreadCreateFailed(e.clone()))).for_display()
        else {
            panic!("a record")
        };
        let Record::ThreadCreateFailed(c) = *r else {
            panic!()
        };
        assert_eq!(c.task.comm, r"\x1b]0;PWNED\x07");
        assert_eq!(c.library.as_deref(), Some(r"lib\u{202e}x"));
        assert_eq!(c.cgroup.as_deref(), Some(r"/sys/fs/cgroup/pids/\u{9b}2J"));

        let second = Second {
            failures: vec![FailureGroup {
                library: "a\u{2066}".into(),
                cause: "c".into(),
                failures: 1,
                processes: vec![(7, "\x1b[2J".into(), 0)],
                example: Some(Arc::new(e)),
            }],
            processes: vec![ProcessLimits {
                comm: "\u{85}x".into(),
                libraries: vec![("\x07".into(), 1)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let Some(Update::Second(s)) = Update::Second(Box::new(second)).for_display() else {
            panic!("a second")
        };
        let debug = format!("{s:?}");
        for c in ['\x1b', '\x07', '\u{85}', '\u{2066}', '\u{202e}', '\u{9b}'] {
            assert!(!debug.contains(c), "{c:?} in {debug}");
        }
        assert_eq!(s.failures[0].processes[0].1, r"\x1b[2J");
    }
}

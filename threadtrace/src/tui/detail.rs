//! What Enter opens: the whole story of one finding, failure group,
//! process or event, with its stack and its remedy. Built when opened,
//! so that it holds still while the SRE reads it.
use std::fmt::Write as _;

use super::data::FailureRow;
use crate::{
    diagnosis::limits::ProcessLimits,
    model::{Finding, Frame, Headroom, OomKill, Record, Storm, ThreadCreateFailed},
    sink::lines,
    words::{self, limit_or_unlimited as limit},
};

#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub title: String,
    pub lines: Vec<String>,
    /// Lines scrolled past.
    pub scroll: u16,
}

fn detail(title: String, lines: Vec<String>) -> Detail {
    Detail {
        title,
        lines,
        scroll: 0,
    }
}

pub fn finding(f: &Finding) -> Detail {
    let mut lines: Vec<String> = f.evidence.iter().map(|e| format!("why: {e}")).collect();
    if !f.remedy.is_empty() {
        lines.push(String::new());
        lines.push(format!("do: {}", f.remedy));
    }
    detail(f.title.clone(), lines)
}

fn frame(i: usize, f: &Frame) -> String {
    let mut s = format!("  #{i:<2} ");
    match (&f.symbol, f.offset) {
        (Some(sym), Some(off)) => {
            let _ = write!(s, "{sym}+{off:#x}");
        }
        (Some(sym), None) => s.push_str(sym),
        _ => {
            let _ = write!(s, "{:#x}", f.addr);
        }
    }
    if let Some(m) = &f.module {
        let _ = write!(s, "  in {m}");
    }
    s
}

/// The readable lines of the console, then what does not fit on a line:
/// the command, the thread's function and the stack.
fn failure_lines(e: &ThreadCreateFailed) -> Vec<String> {
    let mut lines: Vec<String> = lines::render(&Record::ThreadCreateFailed(e.clone()))
        .lines()
        .map(|l| l.trim_start().to_string())
        .collect();
    if let Some(c) = &e.cmdline {
        lines.push(format!("command: {c}"));
    }
    if let Some(k) = &e.k8s {
        lines.push(format!("kubernetes: {}", words::pod(k)));
    }
    if let Some(r) = &e.start_routine {
        lines.push(format!(
            "thread function: {} in {}",
            r.symbol.as_deref().unwrap_or("?"),
            r.module.as_deref().unwrap_or("?")
        ));
    }
    if e.stack.is_empty() {
        lines.push("stack: not captured".into());
    } else {
        lines.push(format!(
            "stack ({} frames, innermost first):",
            e.stack.len()
        ));
        lines.extend(e.stack.iter().enumerate().map(|(i, f)| frame(i, f)));
    }
    lines
}

pub fn failures(r: &FailureRow, storm: Option<&Storm>) -> Detail {
    let g = &r.group;
    let mut lines = vec![format!(
        "{} failures seen in detail, {}/s in the last second",
        g.failures,
        r.rate()
    )];
    let procs: Vec<String> = g
        .processes
        .iter()
        .map(|(pid, comm, uid)| format!("{comm}[{pid}] uid {uid}"))
        .collect();
    lines.push(format!("in {}", procs.join(", ")));
    if let Some(s) = storm {
        lines.push(format!(
            "STORM for {}: {} failures (exact) in {:.1} s, peak {}/s; single failures are no longer printed",
            s.scope, s.failures, s.duration_s, s.peak_rate_per_s
        ));
    }
    if let Some(e) = &g.example {
        lines.push(String::new());
        lines.push("the latest failure seen:".into());
        lines.extend(failure_lines(e));
    }
    detail(format!("{} × {}", g.library, g.cause), lines)
}

pub fn process(p: &ProcessLimits) -> Detail {
    let mut lines = vec![format!(
        "{} threads{}",
        p.threads,
        p.uid.map(|u| format!(", uid {u}")).unwrap_or_default()
    )];
    if !p.libraries.is_empty() {
        let libs: Vec<String> = p
            .libraries
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        lines.push(format!("threads by creating library: {}", libs.join(", ")));
    }
    if p.failures > 0 {
        lines.push(format!(
            "{} failed thread or process creations (exact kernel count)",
            p.failures
        ));
    }
    match (p.nproc_soft, p.user_tasks, p.uid) {
        (_, _, Some(0)) => lines.push("RLIMIT_NPROC: does not bind root".into()),
        (Some(l), Some(t), Some(u)) => lines.push(format!(
            "RLIMIT_NPROC (soft) {}: user {u} runs {t} threads in all",
            limit(l)
        )),
        (Some(l), _, _) => lines.push(format!("RLIMIT_NPROC (soft) {}", limit(l))),
        _ => {}
    }
    if let Some(c) = &p.pids {
        lines.push(format!(
            "pids cgroup {}: {} of {}",
            c.cgroup,
            c.current,
            c.max.map(limit).unwrap_or_else(|| "max".into())
        ));
    }
    if let Some((n, source)) = &p.cpus {
        lines.push(format!("may use {n} CPUs (by its {source})"));
    }
    if let Some(o) = &p.oversubscribed {
        lines.push(String::new());
        lines.push(format!(
            "OVERSUBSCRIBED: {} runs {} threads on {} CPUs",
            o.library, o.threads, o.cpus_allowed
        ));
        lines.push(format!("do: {}", o.remedy));
    }
    detail(format!("{}[{}]", p.comm, p.pid), lines)
}

/// A limit near its maximum: what it is and what it holds.
pub fn headroom(l: &Headroom) -> Detail {
    let mut lines = vec![
        words::headroom::used(l),
        format!("{:.0}% used", l.ratio * 100.0),
    ];
    if let Some(k) = &l.k8s {
        lines.push(words::pod(k));
    }
    lines.push(String::new());
    lines.push(
        "a limit_near record says when a --near threshold is crossed, with the rate, \
         the time left, the holders and the command to raise it"
            .into(),
    );
    detail(format!("limit: {}", l.kind), lines)
}

/// Each grower on its own line: size, growth, and how early it showed.
fn growers(k: &OomKill) -> Vec<String> {
    let mut out = Vec::new();
    if !k.growers.is_empty() {
        out.push(String::new());
        out.push("grew the most in the window before the kill:".into());
    }
    for g in &k.growers {
        out.push(format!(
            "  {}[{}]{} rss {}, {}{}",
            g.comm,
            g.pid,
            if g.pid == k.victim.pid {
                " (killed)"
            } else {
                ""
            },
            words::bytes(g.rss_bytes),
            words::growth::grew(g),
            g.visible_s
                .map(|v| format!("; a quarter of it showed {v:.0} s before the kill"))
                .unwrap_or_default()
        ));
    }
    if k.growth_unknown > 0 {
        out.push(format!(
            "  ({} more processes whose growth is not known)",
            k.growth_unknown
        ));
    }
    out
}

pub fn record(r: &Record) -> Detail {
    let (title, lines) = match r {
        Record::ThreadCreateFailed(e) => (
            format!("{}[{}]: {} {}", e.task.comm, e.task.pid, e.api, e.error),
            failure_lines(e),
        ),
        r => {
            let text = lines::render(r);
            let mut lines: Vec<String> = text.lines().map(|l| l.trim_start().to_string()).collect();
            if let Record::OomKill(k) = r {
                if let Some(c) = &k.victim.cmdline {
                    lines.push(format!("victim's command: {c}"));
                }
                if let Some(g) = k.group_kill.as_ref().filter(|g| g.killed_with_group()) {
                    lines.push(format!(
                        "memory.oom.group of {} killed it with {}[{}], the victim the OOM killer chose: see that kill for why and what to do",
                        g.cgroup, g.chosen_comm, g.chosen
                    ));
                }
                if let Some(p) = &k.pool {
                    lines.push(format!(
                        "pool: {} of {}[{}], {} workers still alive",
                        p.kind, p.parent_comm, p.parent_pid, p.siblings_alive
                    ));
                }
                lines.extend(growers(k));
            }
            let title = lines.first().cloned().unwrap_or_default();
            (title, lines)
        }
    };
    detail(title, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{failure, not_the_grower, pool_kill as oom_kill};

    #[test]
    fn an_event_shows_its_stack_and_remedy() {
        let d = record(&Record::ThreadCreateFailed(failure(
            42,
            "omp",
            "libgomp",
            "rlimit_nproc",
        )));
        assert_eq!(d.title, "omp[42]: pthread_create EAGAIN");
        let text = d.lines.join("\n");
        assert!(
            text.contains("stack (1 frames, innermost first):\n  #0  GOMP_parallel+0x131  in /usr/lib/x86_64-linux-gnu/libgomp.so.0"),
            "{text}"
        );
        assert!(text.contains("\ndo: OMP_NUM_THREADS=1"), "{text}");
    }

    #[test]
    fn a_kill_lists_who_grew() {
        let mut k = not_the_grower();
        k.growers[0].visible_s = Some(41.5);
        k.growth_unknown = 3;
        let d = record(&Record::OomKill(k));
        let text = d.lines.join("\n");
        assert!(
            text.contains("growth: killed python3[100] (largest, 180 MiB, grew 0 MiB in 60 s); python3[200] grew 150 MiB in 60 s"),
            "{text}"
        );
        assert!(
            text.contains("grew the most in the window before the kill:\n  python3[200] rss 60 MiB, grew 150 MiB in 60 s; a quarter of it showed 42 s before the kill\n  (3 more processes whose growth is not known)"),
            "{text}"
        );
    }

    #[test]
    fn a_kill_names_the_pool_left_waiting() {
        let d = record(&oom_kill(500, true));
        let text = d.lines.join("\n");
        assert!(d.title.contains("OOM KILL  python3[500]"), "{}", d.title);
        assert!(
            text.contains("pool: python-multiprocessing of python3[497], 2 workers still alive")
                && text.contains("wait forever"),
            "{text}"
        );
    }
}

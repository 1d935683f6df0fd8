//! One readable line per event (`record --no-tui`, and the dashboard's
//! recent events), and the end-of-recording summary: what broke, in which
//! process, and the numbers that say why.
use std::fmt::Write as _;

use crate::{
    model::{
        names::errno_name, Finding, LimitNear, Limits, OomKill, Outcome, ProcessExit, Record,
        RlimitChange, Started, Storm, Summary, ThreadCreateFailed, TraceFileStatus, Tracer,
    },
    sanitize,
    words::{self, bytes, clock_ms as clock, errno_meaning},
};

fn failed(e: &ThreadCreateFailed) -> String {
    let who = match (&e.library, &e.symbol) {
        (Some(l), Some(s)) => format!("{l} ({s})"),
        (Some(l), None) => l.clone(),
        _ => "unknown code".into(),
    };
    let who = match e.runtime.as_deref() {
        Some(r) => format!("{who} via the {} runtime", words::runtime_name(r)),
        None => who,
    };
    let mut s = format!(
        "{} THREAD CREATE FAILED  {who} → {} {}  in {}[{}] uid {}",
        clock(&e.task.time),
        e.api,
        e.error,
        e.task.comm,
        e.task.pid,
        e.task.uid
    );
    if let (Some(sc), Some(n)) = (&e.syscall, e.syscall_errno) {
        let _ = write!(s, "  ({sc} failed with {})", errno_name(n));
    }
    if let Some(cg) = &e.cgroup {
        let _ = write!(s, "  cgroup {cg}");
    }
    if let Some(gap) = &e.attribution_gap {
        let _ = write!(s, "\n    who: {gap}");
    }
    if let Some(r) = &e.reason {
        let _ = write!(s, "\n    wanted: {r}");
    }
    if let Some(c) = &e.cause {
        let _ = write!(s, "\n    why: {}: {}", c.kind, c.detail);
        if let Some(a) = &c.inherited_from {
            let _ = write!(s, "; inherited from {}[{}]", a.comm, a.pid);
            if let Some(t) = &a.started {
                let _ = write!(s, " (started {t})");
            }
        }
        if !c.holders.is_empty() {
            let _ = write!(s, "\n    held by: {}", words::threads_held(&c.holders));
        }
        if !c.remedy.is_empty() {
            let _ = write!(s, "\n    do: {}", c.remedy);
        }
    }
    s
}

fn limit_near(e: &LimitNear) -> String {
    let mut s = format!(
        "{} LIMIT NEAR  {:.0}%  {}; {}",
        clock(&e.time),
        e.limit.ratio * 100.0,
        words::headroom::used(&e.limit),
        words::headroom::outlook(e)
    );
    if let Some(k) = &e.limit.k8s {
        let _ = write!(s, "  {}", words::pod(k));
    }
    if let Some(a) = &e.inherited_from {
        let _ = write!(s, "\n    limit inherited from {}[{}]", a.comm, a.pid);
        if let Some(t) = &a.started {
            let _ = write!(s, ", started {t}");
        }
    }
    if let Some(set) = &e.set_by {
        let _ = write!(
            s,
            "\n    limit set by {}[{}] at {}",
            set.comm,
            set.pid,
            clock(&set.time)
        );
    }
    if !e.holders.is_empty() {
        let _ = write!(s, "\n    held by: {}", words::threads_held(&e.holders));
    }
    if !e.memory_holders.is_empty() {
        let _ = write!(
            s,
            "\n    held by: {}",
            words::memory_held(&e.memory_holders)
        );
    }
    if !e.remedy.is_empty() {
        let _ = write!(s, "\n    do: {}", e.remedy);
    }
    s
}

fn oom(e: &OomKill) -> String {
    let v = &e.victim;
    let mut s = format!("{} OOM KILL  {}[{}]", clock(&e.task.time), v.comm, v.pid);
    if let Some(rss) = v.rss_bytes {
        let _ = write!(s, " rss {}", bytes(rss));
    }
    if let Some(cg) = &v.cgroup {
        let _ = write!(s, "  memory cgroup {cg}");
    }
    if let (Some(pp), Some(pc)) = (v.ppid, &v.parent_comm) {
        let _ = write!(s, "  parent {pc}[{pp}]");
    }
    // Killed only because its cgroup was: one line, the story is the
    // chosen victim's.
    if let Some(g) = e.group_kill.as_ref().filter(|g| g.killed_with_group()) {
        let _ = write!(
            s,
            "  killed with its memory cgroup (memory.oom.group) when the OOM killer chose {}[{}]",
            g.chosen_comm, g.chosen
        );
        return s;
    }
    let t = &e.trigger;
    if t.pid == v.pid {
        s.push_str("  (its own allocation triggered it)");
    } else {
        let _ = write!(s, "  triggered by {}[{}]", t.comm, t.pid);
    }
    if let Some(g) = words::growth::sentence(e) {
        let _ = write!(s, "\n    growth: {g}");
    }
    if let Some(c) = &e.memory_cgroup {
        let _ = write!(
            s,
            "\n    why: memory limit {} of {} reached",
            bytes(c.limit_bytes),
            c.path
        );
        if let (Some(g), Some(w)) = (c.grew_bytes, c.window_s) {
            let _ = write!(s, "; its usage grew {} in {w:.0} s", bytes(g));
        }
    }
    if !e.top_holders.is_empty() {
        let _ = write!(s, "\n    held by: {}", words::memory_held(&e.top_holders));
    }
    if let Some(g) = &e.group_kill {
        let _ = write!(
            s,
            "\n    then: every other process of {} is killed with it (memory.oom.group)",
            g.cgroup
        );
    }
    if let Some(c) = &e.consequence {
        let _ = write!(s, "\n    then: {c}");
    }
    if !e.remedy.is_empty() {
        let _ = write!(s, "\n    do: {}", e.remedy);
    }
    s
}

fn rlimit(e: &RlimitChange) -> String {
    let target = if e.target_pid == e.task.pid {
        "its own".to_string()
    } else {
        format!(
            "{}[{}]'s",
            e.target_comm.as_deref().unwrap_or("?"),
            e.target_pid
        )
    };
    let lim = |l: &Option<Limits>| match l {
        Some(l) => format!("{}/{}", l.soft, l.hard),
        None => "?".into(),
    };
    let result = match &e.result {
        Outcome::Ok(_) => String::new(),
        Outcome::Err(err) => format!("  FAILED {err}"),
    };
    let change = match &e.old {
        Some(_) => format!("{} → {}", lim(&e.old), lim(&e.new)),
        None => format!("to {} (previous value not visible)", lim(&e.new)),
    };
    format!(
        "{} RLIMIT CHANGE  {}[{}] set {target} {} (soft/hard) {change}  via {}{result}",
        clock(&e.task.time),
        e.task.comm,
        e.task.pid,
        e.resource,
        e.api
    )
}

fn exit(e: &ProcessExit) -> String {
    let how = match (&e.signal, e.exit_code) {
        (Some(sig), _) => format!("killed by {sig}"),
        (None, Some(c)) => format!("exit {c}"),
        _ => "exited".into(),
    };
    format!(
        "{} exit   {}[{}] {how}",
        clock(&e.task.time),
        e.task.comm,
        e.task.pid
    )
}

fn started(e: &Started) -> String {
    let mut s = format!(
        "threadtrace {} recording on {} (kernel {}): {} probes attached, {} processes known. Ctrl-C to stop.",
        e.version,
        e.host,
        e.kernel,
        e.probes.len(),
        e.processes
    );
    for h in &e.attach {
        let _ = write!(s, "\n    {}", words::hook_attach(h));
    }
    s
}

fn storm(s: &Storm) -> String {
    let procs: Vec<String> = s
        .processes
        .iter()
        .take(5)
        .map(|p| format!("{}[{}]", p.comm, p.pid))
        .collect();
    let libs = if s.libraries.is_empty() {
        "unknown code".to_string()
    } else {
        s.libraries.join(", ")
    };
    let mut out = match s.state.as_str() {
        "start" => format!(
            "{} STORM of {} for {}: from {libs} in {}; single failures are no longer printed \
             (the trace file keeps a sample and the exact counts)",
            clock(&s.time),
            words::storm_failures(&s.creates),
            s.scope,
            procs.join(", ")
        ),
        "end" => format!(
            "{} STORM ENDED for {} after {:.1} s: {} failures ({} seen in detail), peak {}/s, from {libs} in {}",
            clock(&s.time),
            s.scope,
            s.duration_s,
            s.failures,
            s.events,
            s.peak_rate_per_s,
            procs.join(", ")
        ),
        _ => format!(
            "{} STORM goes on for {}: {} failures in {:.1} s, peak {}/s",
            clock(&s.time),
            s.scope,
            s.failures,
            s.duration_s,
            s.peak_rate_per_s
        ),
    };
    if s.state != "update" {
        if !s.causes.is_empty() {
            let _ = write!(out, "\n    why: {}", s.causes.join(", "));
        }
        if !s.remedy.is_empty() {
            let _ = write!(out, "\n    do: {}", s.remedy);
        }
    }
    out
}

/// What the tracer cut or skipped to stay bounded, in one line.
fn tracer(t: &Tracer) -> String {
    let mut parts = Vec::new();
    let forgotten: u64 = t.evicted.values().sum();
    if forgotten > 0 {
        let per: Vec<String> = t
            .evicted
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        parts.push(format!("forgot the oldest entries ({})", per.join(", ")));
    }
    if t.cmdlines_cut > 0 {
        parts.push(format!("cut {} command lines at 4 KiB", t.cmdlines_cut));
    }
    if t.records_dropped > 0 {
        parts.push(format!(
            "dropped {} records while its output was stuck",
            t.records_dropped
        ));
    }
    if t.snapshots_skipped > 0 {
        parts.push(format!(
            "skipped {} counter snapshots while its output was busy",
            t.snapshots_skipped
        ));
    }
    if t.attribution_panics > 0 {
        parts.push(format!(
            "caught {} panics in attribution (those failures show no library)",
            t.attribution_panics
        ));
    }
    if t.attribution_skipped > 0 {
        parts.push(format!(
            "left {} failures unattributed to stop promptly",
            t.attribution_skipped
        ));
    }
    format!("to stay bounded, the tracer {}.", parts.join("; "))
}

/// Findings as text, numbered, at most `max`.
pub fn findings(findings: &[Finding], max: usize) -> String {
    if findings.is_empty() {
        return "no findings: nothing failed, nothing was killed.".into();
    }
    let mut s = String::from("FINDINGS, most important first:\n");
    for (i, f) in findings.iter().take(max).enumerate() {
        s.push_str(&format!("{}. {}\n", i + 1, f.title));
        for e in f.evidence.iter().take(3) {
            s.push_str(&format!("   why: {e}\n"));
        }
        if !f.remedy.is_empty() {
            s.push_str(&format!("   do:  {}\n", f.remedy));
        }
    }
    if findings.len() > max {
        s.push_str(&format!(
            "({} more findings: threadtrace report --json)\n",
            findings.len() - max
        ));
    }
    s.trim_end().to_string()
}

/// Why the trace file does not hold everything, in words that fit the
/// cause: a full disk, a read-only file system, an error.
fn trace_file_incomplete(t: &TraceFileStatus) -> String {
    format!(
        "{}; the counts above are complete.",
        trace_file_shortfall(t)
    )
}

/// What the trace file misses and why, as one sentence without an end.
pub fn trace_file_shortfall(t: &TraceFileStatus) -> String {
    let path = sanitize::text(&t.path);
    let waiting = match t.bytes_unwritten {
        0 => String::new(),
        n => format!(", {n} bytes were still waiting for it"),
    };
    let too_large = match t.records_too_large {
        0 => String::new(),
        n => format!(", {n} records too large for the format"),
    };
    let why = match (t.stopped_by.as_deref(), t.error.as_deref()) {
        (Some("disk full"), _) => "the disk was full".to_string(),
        (Some("read-only file system"), _) => "its file system became read-only".to_string(),
        (_, Some(e)) => format!("writing it failed ({e})"),
        (_, None) => String::new(),
    };
    if why.is_empty() {
        return format!(
            "the trace file {path} is incomplete: {} lost{waiting}{too_large}",
            words::count(t.records_lost, "record")
        );
    }
    let lost = match t.records_lost {
        1 => "1 record was".to_string(),
        n => format!("{n} records were"),
    };
    format!("the trace file {path} is incomplete: {why}: {lost} not written{waiting}{too_large}")
}

/// The summary, safe for a terminal: every string in it escaped first
/// (`sanitize`), then the text laid out.
pub fn summary(s: &Summary) -> String {
    match sanitize::for_display(s) {
        Some(clean) => sanitize::block(&summary_of(&clean)).into_owned(),
        None => sanitize::line(&summary_of(s), usize::MAX).into_owned(),
    }
}

fn summary_of(s: &Summary) -> String {
    let mut out = String::new();
    failures(&mut out, s);
    live_threads(&mut out, s);
    what_is_missing(&mut out, s);
    out.trim_end().to_string()
}

/// The findings, then the exact counts: by api and error, the top
/// processes, and what the first error means.
fn failures(out: &mut String, s: &Summary) {
    if !s.findings.is_empty() {
        out.push_str(&findings(&s.findings, 6));
        out.push('\n');
    }
    let _ = writeln!(out, "── summary ({:.1} s) ──", s.duration_s);
    if s.failures_total == 0 {
        out.push_str("no thread- or process-creation failures.\n");
    } else {
        let _ = writeln!(
            out,
            "{} {} (exact kernel counts):",
            s.failures_total,
            words::creation_failures(s.by_api.keys().map(String::as_str))
        );
        for (api, errs) in &s.by_api {
            for (err, n) in errs {
                let _ = writeln!(out, "  {api:<15} {err:<7} {n:>10}");
            }
        }
        out.push_str("top processes:\n");
        for p in s.by_process.iter().take(10) {
            let _ = writeln!(
                out,
                "  {:<16} pid {:<8} {:<15} {:<7} {:>10}",
                p.comm, p.pid, p.api, p.error, p.count
            );
        }
        let unlisted = s.by_process.len().saturating_sub(10) as u64 + s.processes_not_listed;
        if unlisted > 0 {
            let failures: u64 =
                s.by_process.iter().skip(10).map(|p| p.count).sum::<u64>() + s.failures_not_listed;
            let _ = writeln!(
                out,
                "  and {} more with {}",
                words::count(unlisted, "process"),
                words::count(failures, "failure")
            );
        }
        if let Some(p) = s.by_process.first() {
            let meaning = errno_meaning(p.errno);
            if !meaning.is_empty() {
                let _ = writeln!(out, "{}: {meaning}.", p.error);
            }
        }
    }
}

/// Live threads by the library that created them.
fn live_threads(out: &mut String, s: &Summary) {
    if !s.threads.is_empty() {
        out.push_str("live threads by creating library:\n");
        for t in s.threads.iter().take(5) {
            let _ = writeln!(
                out,
                "  {:<16} pid {:<8} {:<24} {:>6}",
                t.comm, t.pid, t.library, t.live
            );
        }
    }
}

/// What the counts are exact without: details lost, sampled out, left out
/// of the file, or given up by the tracer to stay bounded.
fn what_is_missing(out: &mut String, s: &Summary) {
    if s.events_lost > 0 {
        let _ = writeln!(
            out,
            "{} events lost (ring buffer full): their detail is missing, their counts above are exact.",
            s.events_lost
        );
    }
    if s.events_sampled_out > 0 {
        let _ = writeln!(
            out,
            "{} failures past --detail-rate were counted without capturing their stacks.",
            s.events_sampled_out
        );
    }
    if s.trace_events_dropped > 0 {
        let _ = writeln!(
            out,
            "the trace file reached --max-size: {} events were left out of it; its counters are complete.",
            s.trace_events_dropped
        );
    }
    if let Some(t) = s.trace_file.as_ref().filter(|t| t.is_incomplete()) {
        let _ = writeln!(out, "{}", trace_file_incomplete(t));
    }
    if !s.tracer.is_quiet() {
        let _ = writeln!(out, "{}", tracer(&s.tracer));
    }
    if s.failures_without_process > 0 {
        let _ = writeln!(
            out,
            "{} failures counted without a process (counter table full).",
            s.failures_without_process
        );
    }
    let a = s.attribution;
    if a.unattributed > 0 {
        let _ = writeln!(
            out,
            "{} of {} failures captured in detail could not be attributed to a library (each says why).",
            a.unattributed,
            a.attributed + a.unattributed
        );
    }
    if s.mmap_records_lost > 0 {
        let _ = writeln!(
            out,
            "{} of the kernel's mapping records were lost (buffer full): some failures may lack their library.",
            s.mmap_records_lost
        );
    }
}

/// A record's readable line(s), safe for a terminal: every string in the
/// record escaped first (`sanitize`), so that a name cannot end a line or
/// draw on the screen, then laid out. Should the escaped copy not
/// deserialize, the whole text is escaped, newlines included.
pub fn render(r: &Record) -> String {
    match sanitize::for_display(r) {
        Some(clean) => sanitize::block(&render_clean(&clean)).into_owned(),
        None => sanitize::line(&render_clean(r), usize::MAX).into_owned(),
    }
}

fn render_clean(r: &Record) -> String {
    match r {
        Record::Started(e) => started(e),
        Record::ThreadCreateFailed(e) => failed(e),
        Record::RlimitChange(e) => rlimit(e),
        Record::OomKill(e) => oom(e),
        Record::ProcessFork(e) => format!(
            "{} fork   {}[{}] → {}",
            clock(&e.task.time),
            e.task.comm,
            e.task.pid,
            e.child_pid
        ),
        Record::ProcessExec(e) => format!(
            "{} exec   {}[{}] {}",
            clock(&e.task.time),
            e.task.comm,
            e.task.pid,
            e.filename
        ),
        Record::ProcessExit(e) => exit(e),
        Record::ProcessCgroup(e) => format!(
            "{} cgroup {}[{}] moved pid {} to {}:{}",
            clock(&e.task.time),
            e.task.comm,
            e.task.pid,
            e.moved_pid,
            e.hierarchy,
            e.path
        ),
        Record::Summary(s) => summary_of(s),
        Record::Storm(s) => storm(s),
        Record::LimitNear(e) => limit_near(e),
        Record::Oversubscribed(o) => format!(
            "{} OVERSUBSCRIBED  {}[{}]: {} runs {} threads on {} CPUs allowed ({})\n    do: {}",
            clock(&o.time),
            o.comm,
            o.pid,
            o.library,
            o.threads,
            o.cpus_allowed,
            o.source,
            o.remedy
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Task;

    #[test]
    fn a_failure_line_says_what_where_and_why() {
        let e = ThreadCreateFailed {
            task: Task {
                time: "2026-11-22T03:00:00.123456Z".into(),
                pid: 42,
                tid: 43,
                comm: "python3".into(),
                uid: 65534,
            },
            api: "pthread_create".into(),
            creates: None,
            errno: 11,
            error: "EAGAIN".into(),
            library: Some("libopenblas".into()),
            module: Some("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3".into()),
            symbol: Some("blas_thread_init".into()),
            runtime: None,
            libc: None,
            reason: None,
            syscall: Some("clone3".into()),
            syscall_errno: Some(11),
            cgroup: Some("/sys/fs/cgroup/pids/app".into()),
            ppid: Some(1),
            exe: None,
            cmdline: None,
            caller: Some(0x7f00),
            start_routine: None,
            start_routine_addr: None,
            stack: vec![],
            attribution_gap: None,
            cause: None,
            k8s: None,
        };
        let l = render(&Record::ThreadCreateFailed(e));
        assert!(
            l.starts_with(
                "03:00:00.123 THREAD CREATE FAILED  libopenblas (blas_thread_init) → pthread_create EAGAIN  in python3[42] uid 65534"
            ),
            "{l}"
        );
        assert!(
            l.contains("clone3 failed with EAGAIN") && l.contains("/sys/fs/cgroup/pids/app"),
            "{l}"
        );
    }

    /// memory.oom.group: the chosen victim's lines say the group goes
    /// with it; a process killed with it is one line naming the choice.
    #[test]
    fn a_group_kill_tells_the_chosen_victim_from_those_killed_with_it() {
        let group = |role: &str| {
            Some(crate::model::GroupKill {
                cgroup: "/sys/fs/cgroup/app".into(),
                chosen: 692,
                chosen_comm: "python3".into(),
                role: role.into(),
            })
        };
        let mut chosen = crate::model::fixtures::kill(692, "python3");
        chosen.group_kill = group("chosen");
        let l = render(&Record::OomKill(chosen));
        assert!(
            l.contains("\n    then: every other process of /sys/fs/cgroup/app is killed with it (memory.oom.group)"),
            "{l}"
        );
        let mut k = crate::model::fixtures::kill(689, "sleep");
        k.victim.rss_bytes = Some(708 << 10);
        k.trigger.pid = 692;
        k.trigger.comm = "python3".into();
        k.group_kill = group("killed_with_group");
        k.remedy = String::new();
        assert_eq!(
            render(&Record::OomKill(k)),
            "03:00:00.000 OOM KILL  sleep[689] rss 1 MiB  memory cgroup /sys/fs/cgroup/memory/app  \
             killed with its memory cgroup (memory.oom.group) when the OOM killer chose python3[692]"
        );
    }

    #[test]
    fn started_says_how_each_hook_is_attached() {
        use crate::model::{AttachMethod, HookAttach};
        let mut e = Started {
            time: "2026-11-22T03:00:00.000000Z".into(),
            version: "0.1.0".into(),
            host: "vm".into(),
            kernel: "6.1.0".into(),
            tracer_pid: 1,
            probes: vec!["fexit:kernel_clone".into()],
            processes: 9,
            attach: vec![],
        };
        let bare = render(&Record::Started(e.clone()));
        assert!(!bare.contains('\n'), "{bare}");
        e.attach = vec![
            HookAttach {
                hook: "clone failures".into(),
                method: AttachMethod::Fexit,
                at: vec!["kernel_clone".into()],
                fexit_refused: None,
            },
            HookAttach {
                hook: "thread stack mmap".into(),
                method: AttachMethod::Tracepoints,
                at: vec!["sys_exit_mmap".into()],
                fexit_refused: Some("not allowed here: EPERM".into()),
            },
        ];
        let l = render(&Record::Started(e));
        assert!(
            l.ends_with(
                "Ctrl-C to stop.\n    clone failures: fexit kernel_clone\n    thread stack mmap: tracepoint sys_exit_mmap (fexit not allowed here: EPERM)"
            ),
            "{l}"
        );
    }

    #[test]
    fn summary_explains_eagain() {
        let mut s = Summary::default();
        s.by_api
            .entry("pthread_create".into())
            .or_default()
            .insert("EAGAIN".into(), 3);
        s.failures_total = 3;
        s.by_process = vec![crate::model::fixtures::eagain(7, 3)];
        let t = summary(&s);
        assert!(
            t.contains("3 thread-creation failures") && t.contains("RLIMIT_NPROC"),
            "{t}"
        );
    }

    #[test]
    fn a_hung_pool_outranks_failures_which_outrank_oversubscription() {
        let f = vec![
            Finding {
                kind: "oversubscribed".into(),
                impact: 1_004,
                title: "o".into(),
                evidence: vec![],
                remedy: "r".into(),
            },
            Finding {
                kind: "thread_create_failed".into(),
                impact: 10_050,
                title: "f".into(),
                evidence: vec!["e".into()],
                remedy: "r".into(),
            },
            Finding {
                kind: "oom_kill".into(),
                impact: 1_000_000,
                title: "k".into(),
                evidence: vec![],
                remedy: "r".into(),
            },
        ];
        let mut sorted = f.clone();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.impact));
        let t = findings(&sorted, 2);
        assert!(
            t.starts_with("FINDINGS, most important first:\n1. k\n"),
            "{t}"
        );
        assert!(
            t.contains("2. f\n   why: e\n   do:  r") && t.contains("1 more findings"),
            "{t}"
        );
        assert_eq!(
            findings(&[], 5),
            "no findings: nothing failed, nothing was killed."
        );
    }
}

//! Drawing the dashboard from the state only: `ui(frame, &app)` does no
//! I/O, so every screen is tested with ratatui's TestBackend.
//!
//! Top to bottom: the header (is the tracer keeping up, what is it
//! writing), findings (what to do), failures by library × cause (what
//! broke, why), processes against their limits (who), OOM kills, recent
//! events, and the keys. A panel with nothing to show takes one line; a
//! narrow terminal loses columns, never legibility.
use std::collections::VecDeque;

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table, Wrap},
    Frame,
};

use super::{
    app::{App, Panel},
    data::FailureRow,
    detail::Detail,
};
use crate::{
    diagnosis::limits::ProcessLimits,
    model::{Finding, Headroom, OomKill, Pool, Record},
    sink::lines,
    words::{
        bytes_fine as size, bytes_short as short, clock_s as clock,
        growth::{verdict, GrowthVerdict},
        limit_or_infinity as of_limit, thousands as count, uptime,
    },
};

const DIM: Style = Style::new().fg(Color::DarkGray);
const ALERT: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const WARN: Style = Style::new().fg(Color::Yellow);
const GOOD: Style = Style::new().fg(Color::Green);
const KEY: Style = Style::new().add_modifier(Modifier::BOLD);
const HEADING: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// The last `width` seconds as bars, scaled to their peak; nothing drawn
/// for a second without failures, so that bursts stand out.
pub fn spark(per_second: &VecDeque<u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = per_second.len().saturating_sub(width);
    let shown: Vec<u64> = per_second.iter().skip(skip).copied().collect();
    let peak = shown.iter().copied().max().unwrap_or(0).max(1);
    let mut s: String = " ".repeat(width - shown.len());
    for v in shown {
        s.push(match v {
            0 => ' ',
            v => BARS[((v * 8).div_ceil(peak) as usize).clamp(1, 8) - 1],
        });
    }
    s
}

/// The rows each panel shows, filtered once per frame.
struct View<'a> {
    findings: Vec<&'a Finding>,
    failures: Vec<&'a FailureRow>,
    processes: Vec<&'a ProcessLimits>,
    limits: Vec<&'a Headroom>,
    kills: Vec<&'a Record>,
    recent: Vec<&'a Record>,
}

pub fn ui(frame: &mut Frame, app: &App) {
    let v = View {
        findings: app.findings(),
        failures: app.failures(),
        processes: app.processes(),
        limits: app.limits(),
        kills: app.kills(),
        recent: app.recent(),
    };
    let area = frame.area();
    let [header_area, body, help] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    header(frame, header_area, app);
    let h = heights(body.height, wants(&v), app.focus.index());
    let areas = Layout::vertical(h.map(Constraint::Length)).split(body);
    for (panel, a) in Panel::ALL.into_iter().zip(areas.iter()) {
        match panel {
            Panel::Findings => findings(frame, *a, app, &v.findings),
            Panel::Failures => failures(frame, *a, app, &v.failures),
            Panel::Processes => processes(frame, *a, app, &v.processes),
            Panel::Limits => limits(frame, *a, app, &v.limits),
            Panel::Kills => kills(frame, *a, app, &v.kills),
            Panel::Recent => recent(frame, *a, app, &v.recent),
        }
    }
    help_line(frame, help, app);
    if let Some(d) = &app.detail {
        detail(frame, body, d);
    }
}

fn sep() -> Span<'static> {
    Span::styled(" │ ", DIM)
}

fn header(frame: &mut Frame, area: Rect, app: &App) {
    let d = app.data();
    let s = &d.summary;
    let mut one = vec![
        Span::styled("threadtrace", HEADING.fg(Color::Cyan)),
        Span::raw(format!(" up {}", uptime(s.duration_s))),
        sep(),
    ];
    match &d.started {
        Some(st) => one.push(Span::raw(format!("{} probes", st.probes.len()))),
        None => one.push(Span::styled("attaching probes", WARN)),
    }
    one.extend([sep(), Span::raw(format!("{} ev/s", count(d.events_per_s)))]);
    one.push(sep());
    one.push(if s.events_lost > 0 {
        Span::styled(format!("lost {}", count(s.events_lost)), ALERT)
    } else {
        Span::raw("lost 0")
    });
    one.extend([
        sep(),
        Span::raw(format!(
            "CPU {:.1}% RSS {}",
            d.usage.cpu_percent,
            size(d.usage.rss_bytes)
        )),
    ]);
    if let Some(st) = &d.started {
        one.extend([sep(), Span::styled(format!("host {}", st.host), DIM)]);
    }

    let mut two = vec![if s.failures_total > 0 {
        Span::styled(
            format!("{} failures (exact)", count(s.failures_total)),
            ALERT,
        )
    } else {
        Span::styled("no failures", GOOD)
    }];
    if let Some(storm) = d.storms.values().next() {
        two.push(sep());
        two.push(Span::styled(
            format!(
                "STORM {}: {}/s peak",
                storm.scope,
                count(storm.peak_rate_per_s)
            ),
            ALERT.add_modifier(Modifier::REVERSED),
        ));
        if d.storms.len() > 1 {
            two.push(Span::styled(
                format!(" +{} more", d.storms.len() - 1),
                ALERT,
            ));
        }
    }
    if let Some(n) = app.paused() {
        two.extend([
            sep(),
            Span::styled(
                format!("PAUSED ({n} updates since; recording goes on)"),
                Style::new().fg(Color::Black).bg(Color::Yellow),
            ),
        ]);
    }
    if !app.typed().is_empty() {
        two.extend([
            sep(),
            Span::styled(format!("filter \"{}\"", app.typed()), WARN),
        ]);
    }
    two.push(sep());
    two.push(match &app.trace_path {
        Some(p) => Span::raw(format!(
            "trace {p}{}",
            d.usage
                .trace_bytes
                .map(|b| format!(" {}", size(b)))
                .unwrap_or_default()
        )),
        None => Span::styled("no trace file (-o FILE keeps one)", DIM),
    });
    if d.dropped > 0 {
        two.extend([
            sep(),
            Span::styled(
                format!("dashboard skipped {} updates", count(d.dropped)),
                WARN,
            ),
        ]);
    }
    if let Some(l) = &d.log {
        two.extend([sep(), Span::styled(l.clone(), WARN)]);
    }
    frame.render_widget(Paragraph::new(vec![Line::from(one), Line::from(two)]), area);
}

/// (least, most) lines each panel can use, in Panel::ALL order.
fn wants(v: &View) -> [(u16, u16); 6] {
    let table = |n: usize, most: usize| -> (u16, u16) {
        match n {
            0 => (1, 1),
            n => (3, 2 + n.min(most) as u16),
        }
    };
    let findings = match v.findings.len() {
        0 => (1, 1),
        n => (2, 1 + 2 * n.min(3) as u16),
    };
    let recent = match v.recent.len() {
        0 => (1, u16::MAX),
        n => (1 + n.min(3) as u16, u16::MAX),
    };
    [
        findings,
        table(v.failures.len(), 8),
        table(v.processes.len(), 10),
        table(v.limits.len(), 5),
        table(v.kills.len(), 4),
        recent,
    ]
}

/// Lines per panel: each its least, then the focused panel, then the
/// others in order of urgency, up to what they can use; the recent
/// events take the rest. Too short for that, the panels shrink to their
/// title and the focused one gets what is left.
pub fn heights(body: u16, wants: [(u16, u16); 6], focus: usize) -> [u16; 6] {
    let least: u16 = wants.iter().map(|w| w.0).sum();
    let mut h = [0u16; 6];
    if least > body {
        if body >= 6 {
            h = [1; 6];
            h[focus] += body - 6;
        } else {
            h[focus] = body;
        }
        return h;
    }
    let mut left = body - least;
    for (i, w) in wants.iter().enumerate() {
        h[i] = w.0;
    }
    // Kills, then limits near their maximum, then the processes.
    for i in [focus, 0, 1, 4, 3, 2, 5] {
        let add = wants[i].1.saturating_sub(h[i]).min(left);
        h[i] += add;
        left -= add;
    }
    h[5] += left;
    h
}

/// A panel's first line: its name and what it adds up to.
fn title(frame: &mut Frame, area: Rect, app: &App, panel: Panel, spans: Vec<Span<'static>>) {
    let focused = app.focus == panel && app.detail.is_none();
    let mut line = vec![Span::styled(
        if focused { "▶ " } else { "  " },
        HEADING.fg(Color::Cyan),
    )];
    line.extend(spans);
    let style = if focused {
        Style::new().bg(Color::Blue).fg(Color::White)
    } else {
        Style::new().bg(Color::Rgb(40, 40, 40))
    };
    frame.render_widget(Paragraph::new(Line::from(line)).style(style), area);
}

fn split_title(area: Rect) -> (Rect, Rect) {
    let [t, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    (t, rest)
}

/// The first row shown so that the selected one is visible.
fn window(selected: usize, rows: usize) -> usize {
    selected.saturating_sub(rows.saturating_sub(1))
}

fn findings(frame: &mut Frame, area: Rect, app: &App, fs: &[&Finding]) {
    if area.height == 0 {
        return;
    }
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled("FINDINGS", HEADING)];
    if fs.is_empty() {
        spans.push(Span::raw(if app.data().summary.findings.is_empty() {
            "  none yet: nothing failed, nothing was killed"
        } else {
            "  none match the filter"
        }));
    } else {
        spans.push(Span::raw(format!(
            "  {}, most important first · Enter: evidence and remedy",
            fs.len()
        )));
    }
    title(frame, t, app, Panel::Findings, spans);
    if fs.is_empty() || rest.height == 0 {
        return;
    }
    let per = if rest.height >= 2 { 2 } else { 1 };
    let shown = (rest.height as usize / per).max(1);
    let sel = app.selected_within(Panel::Findings, fs.len());
    let start = window(sel, shown);
    let focused = app.focus == Panel::Findings;
    let mut lines = Vec::new();
    for (i, f) in fs.iter().enumerate().skip(start).take(shown) {
        let style = match f.kind.as_str() {
            "oom_kill" | "pool_worker_died" => ALERT,
            "thread_create_failed" => Style::new().fg(Color::LightRed),
            _ => WARN,
        };
        let style = if focused && i == sel {
            style.patch(SELECTED)
        } else {
            style
        };
        lines.push(Line::styled(format!("{}. {}", i + 1, f.title), style));
        if per == 2 {
            lines.push(Line::from(vec![
                Span::styled("   do: ", GOOD.add_modifier(Modifier::BOLD)),
                Span::raw(f.remedy.clone()),
            ]));
        }
    }
    frame.render_widget(Paragraph::new(lines), rest);
}

fn table(
    frame: &mut Frame,
    area: Rect,
    header: Vec<&'static str>,
    widths: Vec<Constraint>,
    rows: Vec<Row<'static>>,
) {
    frame.render_widget(
        Table::new(rows, widths).header(Row::new(header).style(DIM.add_modifier(Modifier::BOLD))),
        area,
    );
}

/// Which rows of a table fit, and the style of the selected one.
fn rows_shown(app: &App, panel: Panel, area: Rect, n: usize) -> (usize, usize, Option<usize>) {
    let fit = area.height.saturating_sub(1) as usize;
    let sel = app.selected_within(panel, n);
    let start = window(sel, fit);
    let selected = (app.focus == panel).then_some(sel);
    (start, fit.min(n.saturating_sub(start)), selected)
}

fn failures(frame: &mut Frame, area: Rect, app: &App, rows: &[&FailureRow]) {
    if area.height == 0 {
        return;
    }
    let d = app.data();
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled("FAILURES by library × cause", HEADING)];
    if rows.is_empty() {
        spans.push(Span::raw(match d.summary.failures_total {
            0 => "  none".to_string(),
            n => format!("  {} counted, none seen in detail", count(n)),
        }));
    }
    for s in d.storms.values() {
        spans.push(Span::styled(
            format!(
                "  STORM {}: {} in {:.0} s",
                s.scope,
                count(s.failures),
                s.duration_s
            ),
            ALERT,
        ));
    }
    if (d.summary.events_lost > 0 || d.summary.events_sampled_out > 0) && !rows.is_empty() {
        // Counts are exact; which library is from the stacks captured.
        spans.push(Span::styled(
            "  exact counts, libraries from sampled stacks",
            WARN,
        ));
    }
    title(frame, t, app, Panel::Failures, spans);
    if rows.is_empty() || rest.height == 0 {
        return;
    }
    let w = area.width as usize;
    let lib = if w >= 100 { 20 } else { 14 };
    let spark_w = if w >= 70 {
        ((w - 60) / 2).clamp(8, 60)
    } else {
        0
    };
    let (start, n, selected) = rows_shown(app, Panel::Failures, rest, rows.len());
    let out: Vec<Row> = rows[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let g = &r.group;
            let storm = d.storm_of(g).is_some();
            let mut procs: Vec<String> = g
                .processes
                .iter()
                .take(3)
                .map(|(pid, comm, _)| format!("{comm}[{pid}]"))
                .collect();
            if g.processes.len() > 3 {
                procs.push(format!("+{}", g.processes.len() - 3));
            }
            let procs = if storm {
                format!("STORM {}", procs.join(" "))
            } else {
                procs.join(" ")
            };
            let mut cells = vec![
                Cell::from(g.library.clone()),
                Cell::from(g.cause.clone()),
                Cell::from(format!("{:>9}", count(g.failures))),
                Cell::from(format!("{:>7}", count(r.rate()))),
            ];
            if spark_w > 0 {
                cells.push(Cell::from(spark(&r.per_second, spark_w)));
            }
            cells.push(Cell::from(procs));
            let style = if storm {
                ALERT
            } else {
                Style::new().fg(Color::LightRed)
            };
            Row::new(cells).style(if selected == Some(start + i) {
                style.patch(SELECTED)
            } else {
                style
            })
        })
        .collect();
    let mut header = vec!["LIBRARY", "CAUSE", "   FAILED", "    /S"];
    let mut widths = vec![
        Constraint::Length(lib),
        Constraint::Length(13),
        Constraint::Length(9),
        Constraint::Length(7),
    ];
    if spark_w > 0 {
        header.push("PER SECOND");
        widths.push(Constraint::Length(spark_w as u16));
    }
    header.push("PROCESSES");
    widths.push(Constraint::Fill(1));
    table(frame, rest, header, widths, out);
}

/// "tasks/limit" of the user's RLIMIT_NPROC, and whether it is nearly
/// reached.
fn nproc_cell(p: &ProcessLimits) -> (String, bool) {
    match (p.uid, p.nproc_soft, p.user_tasks) {
        (Some(0), _, _) => ("root".into(), false),
        (_, Some(l), Some(t)) => (
            format!("{t}/{}", of_limit(l)),
            l != u64::MAX && t * 10 >= l * 9,
        ),
        (_, Some(l), None) => (format!("?/{}", of_limit(l)), false),
        _ => ("-".into(), false),
    }
}

fn pids_cell(p: &ProcessLimits) -> (String, bool) {
    match &p.pids {
        Some(c) => (
            format!(
                "{}/{}",
                c.current,
                c.max.map(of_limit).unwrap_or_else(|| "∞".into())
            ),
            c.max.is_some_and(|m| c.current * 10 >= m * 9),
        ),
        None => ("-".into(), false),
    }
}

/// The limits closest to their maximum: a user's tasks under its
/// RLIMIT_NPROC, pids and memory cgroups, the host's.
fn limits(frame: &mut Frame, area: Rect, app: &App, rows: &[&Headroom]) {
    if area.height == 0 {
        return;
    }
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled("CLOSEST TO A LIMIT", HEADING)];
    match rows.first() {
        None => spans.push(Span::raw("  none read yet (--near off?)")),
        Some(top) => spans.push(Span::styled(
            format!("  {:.0}% at most", top.ratio * 100.0),
            if top.ratio >= 0.9 {
                ALERT
            } else if top.ratio >= 0.8 {
                WARN
            } else {
                Style::new()
            },
        )),
    }
    title(frame, t, app, Panel::Limits, spans);
    if rows.is_empty() || rest.height == 0 {
        return;
    }
    let (start, n, selected) = rows_shown(app, Panel::Limits, rest, rows.len());
    let out: Vec<Row> = rows[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let of = match (&l.cgroup, l.uid) {
                (Some(cg), _) => cg.clone(),
                (None, Some(uid)) => match (&l.comm, l.pid) {
                    (Some(c), Some(p)) => format!("uid {uid} (lowest: {c}[{p}])"),
                    _ => format!("uid {uid}"),
                },
                _ => "host".into(),
            };
            let (used, max) = if l.kind == "memory_cgroup" {
                (short(l.current), short(l.max))
            } else {
                (count(l.current), count(l.max))
            };
            let style = if l.ratio >= 0.9 {
                ALERT
            } else if l.ratio >= 0.8 {
                WARN
            } else {
                Style::new()
            };
            let row = Row::new(vec![
                Cell::from(format!("{:>3.0}%", l.ratio * 100.0)),
                Cell::from(l.kind.clone()),
                Cell::from(format!("{used:>7}")),
                Cell::from(format!("{max:>7}")),
                Cell::from(of),
            ]);
            row.style(if selected == Some(start + i) {
                style.patch(SELECTED)
            } else {
                style
            })
        })
        .collect();
    table(
        frame,
        rest,
        vec!["USED", "KIND", "NOW", "MAX", "LIMIT OF"],
        vec![
            Constraint::Length(5),
            Constraint::Length(13),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
        out,
    );
}

fn processes(frame: &mut Frame, area: Rect, app: &App, rows: &[&ProcessLimits]) {
    if area.height == 0 {
        return;
    }
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled(
        "PROCESSES by threads, against their limits",
        HEADING,
    )];
    if rows.is_empty() {
        spans.push(Span::raw("  none yet"));
    } else {
        spans.push(Span::raw(format!("  {}", count(rows.len() as u64))));
        let over = rows.iter().filter(|p| p.oversubscribed.is_some()).count();
        if over > 0 {
            spans.push(Span::styled(format!("  {over} OVERSUBSCRIBED"), WARN));
        }
    }
    title(frame, t, app, Panel::Processes, spans);
    if rows.is_empty() || rest.height == 0 {
        return;
    }
    let wide = area.width >= 100;
    let (start, n, selected) = rows_shown(app, Panel::Processes, rest, rows.len());
    let out: Vec<Row> = rows[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (nproc, nproc_near) = nproc_cell(p);
            let (pids, pids_near) = pids_cell(p);
            let libs: Vec<String> = p
                .libraries
                .iter()
                .take(3)
                .map(|(l, n)| format!("{l} {n}"))
                .collect();
            let libs = match &p.oversubscribed {
                Some(o) if wide => format!(
                    "OVERSUBSCRIBED {} {}>{} CPUs; {}",
                    o.library,
                    o.threads,
                    o.cpus_allowed,
                    libs.join(", ")
                ),
                Some(o) => format!("OVERSUB {} {}>{}", o.library, o.threads, o.cpus_allowed),
                None => libs.join(", "),
            };
            let mut cells = vec![Cell::from(p.pid.to_string()), Cell::from(p.comm.clone())];
            if wide {
                cells.push(Cell::from(
                    p.uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
                ));
            }
            cells.extend([
                Cell::from(format!("{:>7}", p.threads)),
                Cell::from(nproc),
                Cell::from(pids),
                Cell::from(
                    p.cpus
                        .as_ref()
                        .map(|c| c.0.to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(libs),
            ]);
            let style = if nproc_near || pids_near {
                ALERT
            } else if p.oversubscribed.is_some() {
                WARN.add_modifier(Modifier::BOLD)
            } else if p.failures > 0 {
                Style::new().fg(Color::LightRed)
            } else {
                Style::new()
            };
            Row::new(cells).style(if selected == Some(start + i) {
                style.patch(SELECTED)
            } else {
                style
            })
        })
        .collect();
    let mut header = vec!["PID", "COMM"];
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(if wide { 15 } else { 12 }),
    ];
    if wide {
        header.push("UID");
        widths.push(Constraint::Length(6));
    }
    header.extend(["THREADS", "USER/NPROC", "PIDS/MAX", "CPUS", "LIBRARIES"]);
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(if wide { 12 } else { 10 }),
        Constraint::Length(if wide { 11 } else { 9 }),
        Constraint::Length(4),
        Constraint::Fill(1),
    ]);
    table(frame, rest, header, widths, out);
}

/// The parent first: it is what hangs, and what to restart.
fn pool_cell(p: &Pool) -> String {
    format!(
        "{}[{}] waits forever ({})",
        p.parent_comm, p.parent_pid, p.kind
    )
}

const GROWER_WIDE: usize = 22;
const GROWER_NARROW: usize = 20;

/// Who grew the most before the kill, in `width` columns: the size and
/// the pid are kept, the name is cut.
fn grower_cell(k: &OomKill, width: usize) -> String {
    // Killed with its cgroup: the chosen victim's row has the growers.
    if let Some(g) = k.group_kill.as_ref().filter(|g| g.killed_with_group()) {
        let head = "with ";
        let tail = format!("[{}]", g.chosen);
        let room = width.saturating_sub(head.len() + tail.chars().count());
        let comm: String = g.chosen_comm.chars().take(room).collect();
        return format!("{head}{comm}{tail}");
    }
    match verdict(k) {
        GrowthVerdict::NotTheGrower(o) => {
            let head = format!("+{} ", short(o.grew_bytes));
            let tail = format!("[{}]", o.pid);
            let room = width.saturating_sub(head.chars().count() + tail.chars().count());
            let comm: String = o.comm.chars().take(room).collect();
            format!("{head}{comm}{tail}")
        }
        GrowthVerdict::Grower(g) => format!("itself +{}", short(g.grew_bytes)),
        GrowthVerdict::NoGrowth(_) => "none".into(),
        GrowthVerdict::Unknown => "-".into(),
    }
}

/// One row of the kills panel: an OOM kill, or a pool worker killed by
/// a signal.
#[derive(Default)]
struct KillRow {
    time: String,
    victim: String,
    rss: String,
    grew: String,
    grower: String,
    trigger: String,
    limit: String,
    pool: Option<String>,
}

impl KillRow {
    fn of(r: &Record, wide: bool) -> KillRow {
        match r {
            Record::OomKill(k) => KillRow {
                time: clock(&k.task.time).to_string(),
                victim: format!("{}[{}]", k.victim.comm, k.victim.pid),
                rss: k.victim.rss_bytes.map(size).unwrap_or_else(|| "?".into()),
                grew: k
                    .victim_growth
                    .as_ref()
                    .map(|g| format!("+{}", short(g.grew_bytes)))
                    .unwrap_or_else(|| "?".into()),
                grower: grower_cell(k, if wide { GROWER_WIDE } else { GROWER_NARROW }),
                trigger: if k.trigger.pid == k.victim.pid {
                    "itself".to_string()
                } else {
                    format!("{}[{}]", k.trigger.comm, k.trigger.pid)
                },
                limit: k
                    .memory_cgroup
                    .as_ref()
                    .map(|c| size(c.limit_bytes))
                    .unwrap_or_else(|| "host".into()),
                pool: k.pool.as_ref().map(pool_cell),
            },
            Record::ProcessExit(e) => KillRow {
                time: clock(&e.task.time).to_string(),
                victim: format!("{}[{}]", e.task.comm, e.task.pid),
                rss: "-".into(),
                grew: "-".into(),
                grower: "-".into(),
                trigger: e.signal.clone().unwrap_or_else(|| "?".into()),
                limit: "-".into(),
                pool: e.pool.as_ref().map(pool_cell),
            },
            _ => KillRow::default(),
        }
    }

    /// Narrow, the victim's growth, the trigger and the limit give way to
    /// the top grower (the detail view has them all).
    fn cells(self, wide: bool) -> Vec<Cell<'static>> {
        let mut cells = Vec::new();
        if wide {
            cells.push(Cell::from(self.time));
        }
        cells.extend([Cell::from(self.victim), Cell::from(self.rss)]);
        if wide {
            cells.push(Cell::from(self.grew));
        }
        cells.push(Cell::from(self.grower));
        if wide {
            cells.extend([Cell::from(self.trigger), Cell::from(self.limit)]);
        }
        cells.push(Cell::from(self.pool.unwrap_or_else(|| "-".into())));
        cells
    }

    fn columns(wide: bool) -> (Vec<&'static str>, Vec<Constraint>) {
        if wide {
            (
                vec![
                    "TIME",
                    "VICTIM",
                    "RSS",
                    "GREW",
                    "TOP GROWER",
                    "TRIGGER",
                    "LIMIT",
                    "POOL",
                ],
                vec![
                    Constraint::Length(8),
                    Constraint::Length(20),
                    Constraint::Length(9),
                    Constraint::Length(6),
                    Constraint::Length(GROWER_WIDE as u16),
                    Constraint::Length(18),
                    Constraint::Length(9),
                    Constraint::Fill(1),
                ],
            )
        } else {
            (
                vec!["VICTIM", "RSS", "TOP GROWER", "POOL"],
                vec![
                    Constraint::Length(16),
                    Constraint::Length(9),
                    Constraint::Length(GROWER_NARROW as u16),
                    Constraint::Fill(1),
                ],
            )
        }
    }
}

fn kills(frame: &mut Frame, area: Rect, app: &App, rows: &[&Record]) {
    if area.height == 0 {
        return;
    }
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled("OOM KILLS and pool workers lost", HEADING)];
    spans.push(Span::raw(match rows.len() {
        0 => "  none".to_string(),
        n => format!("  {n}, newest first"),
    }));
    title(frame, t, app, Panel::Kills, spans);
    if rows.is_empty() || rest.height == 0 {
        return;
    }
    let wide = area.width >= 100;
    let (start, n, selected) = rows_shown(app, Panel::Kills, rest, rows.len());
    let out: Vec<Row> = rows[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let row = KillRow::of(r, wide);
            let style = if row.pool.is_some() {
                ALERT
            } else {
                Style::new().fg(Color::Magenta)
            };
            Row::new(row.cells(wide)).style(if selected == Some(start + i) {
                style.patch(SELECTED)
            } else {
                style
            })
        })
        .collect();
    let (header, widths) = KillRow::columns(wide);
    table(frame, rest, header, widths, out);
}

fn record_style(r: &Record) -> Style {
    match r {
        Record::ThreadCreateFailed(_) => Style::new().fg(Color::LightRed),
        Record::OomKill(_) | Record::Storm(_) => ALERT,
        Record::ProcessExit(e) if e.pool.is_some() => ALERT,
        Record::RlimitChange(_) | Record::Oversubscribed(_) => WARN,
        _ => Style::new(),
    }
}

fn recent(frame: &mut Frame, area: Rect, app: &App, rows: &[&Record]) {
    if area.height == 0 {
        return;
    }
    let (t, rest) = split_title(area);
    let mut spans = vec![Span::styled("RECENT EVENTS", HEADING)];
    spans.push(Span::raw(match rows.len() {
        0 => "  none yet".to_string(),
        n => format!("  {n}, newest first"),
    }));
    title(frame, t, app, Panel::Recent, spans);
    if rows.is_empty() || rest.height == 0 {
        return;
    }
    let fit = rest.height as usize;
    let sel = app.selected_within(Panel::Recent, rows.len());
    let start = window(sel, fit);
    let focused = app.focus == Panel::Recent;
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(fit)
        .map(|(i, r)| {
            let text = lines::render(r);
            let first = text.lines().next().unwrap_or("").to_string();
            let style = record_style(r);
            Line::styled(
                first,
                if focused && i == sel {
                    style.patch(SELECTED)
                } else {
                    style
                },
            )
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), rest);
}

fn help_line(frame: &mut Frame, area: Rect, app: &App) {
    let keys = |pairs: &[(&'static str, &'static str)]| -> Vec<Span<'static>> {
        let mut v = vec![Span::raw(" ")];
        for (i, (k, what)) in pairs.iter().enumerate() {
            if i > 0 {
                v.push(Span::styled(" · ", DIM));
            }
            v.push(Span::styled(*k, KEY));
            v.push(Span::raw(format!(" {what}")));
        }
        v
    };
    let line = if app.typing {
        let mut v = vec![
            Span::styled(" / ", KEY),
            Span::styled(format!("{}▏", app.typed()), WARN),
        ];
        v.extend(keys(&[("Enter", "keep"), ("Esc", "clear")]));
        v.push(Span::styled("  (comm, pid, uid or library)", DIM));
        Line::from(v)
    } else if app.detail.is_some() {
        Line::from(keys(&[
            ("Esc", "close"),
            ("↑↓ PgUp PgDn", "scroll"),
            ("q", "quit"),
        ]))
    } else {
        let mut pairs = vec![
            ("q", "quit"),
            (
                "p",
                if app.paused().is_some() {
                    "resume"
                } else {
                    "pause"
                },
            ),
            ("/", "filter"),
            ("Tab", "panel"),
            ("↑↓", "select"),
            ("Enter", "detail"),
        ];
        if !app.typed().is_empty() {
            pairs.push(("Esc", "unfilter"));
        }
        Line::from(keys(&pairs))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn detail(frame: &mut Frame, r: Rect, d: &Detail) {
    let lines: Vec<Line> = d
        .lines
        .iter()
        .map(|l| {
            let style = if l.starts_with("do:") {
                GOOD.add_modifier(Modifier::BOLD)
            } else if l.starts_with("why:") {
                WARN
            } else if l.starts_with("STORM") || l.starts_with("OVERSUBSCRIBED") {
                ALERT
            } else {
                Style::new()
            };
            Line::styled(l.clone(), style)
        })
        .collect();
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((d.scroll, 0))
            .block(
                Block::bordered()
                    .title(Line::styled(format!(" {} ", d.title), HEADING))
                    .title_bottom(Line::styled(" Esc close ", DIM)),
            ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnosis::limits::PidsUse,
        model::{
            fixtures::{not_the_grower, pool_kill as oom_kill, storm},
            Finding, Oversubscribed, Started, Summary,
        },
        tui::{
            app::tests::{group, second},
            data::{Second, Update},
            detail,
        },
    };
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{backend::TestBackend, Terminal};

    fn screen(app: &App, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| ui(f, app)).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn started() -> Update {
        Update::Record(Box::new(Record::Started(Started {
            time: "2026-11-22T03:00:00.000000Z".into(),
            version: "0.1.0".into(),
            host: "vm".into(),
            kernel: "6.18".into(),
            tracer_pid: 1,
            probes: (0..13).map(|i| format!("probe{i}")).collect(),
            processes: 100,
            attach: vec![],
        })))
    }

    fn key(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn line_with<'a>(s: &'a [String], needle: &str) -> &'a str {
        s.iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", s.join("\n")))
    }

    fn limits(pid: u32, threads: i64) -> ProcessLimits {
        ProcessLimits {
            pid,
            comm: format!("worker{pid}"),
            uid: Some(1000),
            threads,
            libraries: vec![("libopenblas".into(), threads - 1)],
            failures: 0,
            nproc_soft: Some(1024),
            user_tasks: Some(1016),
            pids: Some(PidsUse {
                cgroup: "/sys/fs/cgroup/pids/app".into(),
                current: 40,
                max: None,
            }),
            cpus: Some((4, "cgroup cpu.max".into())),
            oversubscribed: None,
        }
    }

    #[test]
    fn an_empty_recording_says_all_is_well_and_how_to_drive() {
        let mut app = App::new(None);
        app.update(started());
        app.update(second(3.0, vec![]));
        let s = screen(&app, 120, 30);
        assert!(
            s[0].starts_with(
                "threadtrace up 0:03 │ 13 probes │ 0 ev/s │ lost 0 │ CPU 0.0% RSS 0 B │ host vm"
            ),
            "{}",
            s[0]
        );
        assert!(
            s[1].starts_with("no failures │ no trace file (-o FILE keeps one)"),
            "{}",
            s[1]
        );
        line_with(&s, "FINDINGS  none yet: nothing failed, nothing was killed");
        line_with(&s, "FAILURES by library × cause  none");
        line_with(&s, "OOM KILLS and pool workers lost  none");
        assert!(s[2].starts_with("▶ FINDINGS"), "focus starts on findings");
        assert_eq!(
            s[29],
            " q quit · p pause · / filter · Tab panel · ↑↓ select · Enter detail"
        );
    }

    #[test]
    fn a_storm_is_highlighted_while_it_lasts() {
        let mut app = App::new(Some("/tmp/incident.trace".into()));
        app.update(started());
        app.update(second(1.0, vec![group("libgomp", "rlimit_nproc", 20)]));
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "start", "libgomp",
        )))));
        app.update(second(2.0, vec![group("libgomp", "rlimit_nproc", 900)]));
        let s = screen(&app, 120, 30);
        assert!(
            s[1].starts_with("900 failures (exact) │ STORM uid 65534: 4,800/s peak"),
            "{}",
            s[1]
        );
        assert!(s[1].contains("trace /tmp/incident.trace"), "{}", s[1]);
        let row = line_with(&s, "rlimit_nproc    ");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            ["libgomp", "rlimit_nproc", "900", "880"],
            "{row}"
        );
        assert!(row.contains("▁█ STORM omp[4242]"), "{row}");
        line_with(&s, "STORM uid 65534: 5,000 in 1 s");
        line_with(&s, "STORM of thread-creation failures for uid 65534");
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "end", "libgomp",
        )))));
        let s = screen(&app, 120, 30);
        assert!(!s[1].contains("STORM"), "ended: {}", s[1]);
        assert!(!line_with(&s, "rlimit_nproc    ").contains("STORM"));
    }

    fn with_oom_pool_finding() -> App {
        let mut app = App::new(None);
        app.update(started());
        app.update(Update::Record(Box::new(oom_kill(19478, true))));
        let finding = Finding {
            kind: "oom_kill".into(),
            impact: 1_000_000,
            title: "OOM kill of python3[19478] (198 MiB), a worker of the python-multiprocessing pool of python3[19475]".into(),
            evidence: vec![
                "memory limit 200 MiB of /sys/fs/cgroup/memory/consumer reached".into(),
                "python3[19475] is a multiprocessing pool: it is not told that the task died with its worker; map/map_async/join on it will wait forever".into(),
            ],
            remedy: "restart python3[19475] (its pool will not recover the lost task), and use concurrent.futures.ProcessPoolExecutor".into(),
        };
        app.update(Update::Second(Box::new(Second {
            limits: Vec::new(),
            summary: Summary {
                duration_s: 5.0,
                findings: vec![finding],
                ..Default::default()
            },
            ..Default::default()
        })));
        app
    }

    #[test]
    fn an_oom_kill_of_a_pool_worker_says_who_waits_and_what_to_do() {
        let app = with_oom_pool_finding();
        let s = screen(&app, 160, 30);
        line_with(&s, "1. OOM kill of python3[19478] (198 MiB), a worker of the python-multiprocessing pool of python3[19475]");
        line_with(
            &s,
            "   do: restart python3[19475] (its pool will not recover the lost task)",
        );
        let row = line_with(&s, "python3[19478]   ");
        assert!(
            row.contains("198.0 MiB")
                && row.contains("itself")
                && row.contains("200.0 MiB")
                && row.contains("python3[19475] waits forever (python-multiprocessing)"),
            "{row}"
        );
        line_with(&s, "OOM KILL  python3[19478] rss 198 MiB");
    }

    /// Incident 5: the largest was killed, another grew; the panel names
    /// the grower, wide or narrow.
    #[test]
    fn an_oom_kill_names_the_process_that_grew() {
        let mut app = App::new(None);
        app.update(started());
        let k = not_the_grower();
        app.update(Update::Record(Box::new(Record::OomKill(k))));
        let s = screen(&app, 140, 30);
        let head = line_with(&s, "TOP GROWER");
        assert!(head.contains("GREW") && head.contains("TRIGGER"), "{head}");
        let row = line_with(&s, "python3[100]  ");
        assert!(
            row.contains("180.0 MiB") && row.contains("+0M") && row.contains("+150M python3[200]"),
            "{row}"
        );
        line_with(&s, "OOM KILL  python3[100] rss 180 MiB");
        let s = screen(&app, 80, 24);
        let row = line_with(&s, "python3[100]  ");
        assert!(row.contains("+150M python3[200]"), "{row}");
        let mut k = not_the_grower();
        k.growers[0].comm = "tensorflow_serv".into();
        k.growers[0].pid = 4_194_303;
        assert_eq!(grower_cell(&k, GROWER_NARROW), "+150M tenso[4194303]");
    }

    #[test]
    fn enter_opens_the_finding_with_its_evidence() {
        let mut app = with_oom_pool_finding();
        key(&mut app, KeyCode::Enter);
        let s = screen(&app, 100, 30);
        line_with(&s, "OOM kill of python3[19478]");
        line_with(
            &s,
            "why: memory limit 200 MiB of /sys/fs/cgroup/memory/consumer reached",
        );
        line_with(&s, "do: restart python3[19475]");
        assert!(s[29].starts_with(" Esc close"), "{}", s[29]);
        key(&mut app, KeyCode::Esc);
        assert!(!screen(&app, 100, 30)
            .iter()
            .any(|l| l.contains("why: memory limit")));
    }

    /// Everything at once on 80×24: each panel keeps its title, rows fit
    /// without wrapping into each other, the keys stay on the last line.
    #[test]
    fn everything_fits_in_80_by_24() {
        let mut app = with_oom_pool_finding();
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "start", "libgomp",
        )))));
        let mut over = limits(4300, 25);
        over.oversubscribed = Some(Oversubscribed {
            time: "t".into(),
            pid: 4300,
            comm: "worker4300".into(),
            library: "libopenblas".into(),
            threads: 25,
            cpus_allowed: 4,
            source: "cgroup cpu.max".into(),
            remedy: "set OPENBLAS_NUM_THREADS=4".into(),
            k8s: None,
        });
        let mut procs = vec![over];
        procs.extend((0..30).map(|i| limits(5000 + i, 10)));
        app.update(Update::Second(Box::new(Second {
            limits: Vec::new(),
            summary: Summary {
                duration_s: 6.0,
                failures_total: 5000,
                findings: app.data().summary.findings.clone(),
                ..Default::default()
            },
            failures: vec![
                group("libgomp", "rlimit_nproc", 900),
                group("libopenblas", "cgroup_pids", 3),
            ],
            processes: procs,
            dropped: 0,
        })));
        let s = screen(&app, 80, 24);
        assert!(
            s[0].starts_with("threadtrace up 0:06 │ 13 probes"),
            "{}",
            s[0]
        );
        assert!(
            s[1].starts_with("5,000 failures (exact) │ STORM uid 65534"),
            "{}",
            s[1]
        );
        for t in [
            "FINDINGS",
            "FAILURES",
            "PROCESSES",
            "OOM KILLS",
            "RECENT EVENTS",
        ] {
            line_with(&s, t);
        }
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(line_with(&s, "rlimit_nproc"))[..5],
            ["libgomp", "rlimit_nproc", "900", "900", "█"]
        );
        assert_eq!(
            cells(line_with(&s, "cgroup_pids"))[..4],
            ["libopenblas", "cgroup_pids", "3", "3"]
        );
        assert_eq!(
            cells(line_with(&s, "4300")),
            [
                "4300",
                "worker4300",
                "25",
                "1016/1024",
                "40/∞",
                "4",
                "OVERSUB",
                "libopenblas",
                "25>4"
            ]
        );
        let kill = line_with(&s, "python3[19478]   ");
        assert!(kill.contains("python3[19475] waits forever"), "{kill}");
        assert!(
            s.iter().filter(|l| l.starts_with("500")).count() >= 3,
            "processes keep rows:\n{}",
            s.join("\n")
        );
        line_with(&s, "STORM of thread-creation failures for uid 65534");
        assert_eq!(
            s[23],
            " q quit · p pause · / filter · Tab panel · ↑↓ select · Enter detail"
        );
        // The focused panel grows; the others keep their title.
        let rows = |s: &[String]| s.iter().filter(|l| l.contains("worker50")).count();
        let before = rows(&s);
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Tab);
        let s = screen(&app, 80, 24);
        assert!(rows(&s) > before, "{}", s.join("\n"));
        line_with(&s, "▶ PROCESSES");
        for t in ["FINDINGS", "FAILURES", "OOM KILLS", "RECENT EVENTS"] {
            line_with(&s, t);
        }
    }

    #[test]
    fn too_small_a_terminal_degrades_without_panicking() {
        let app = with_oom_pool_finding();
        for (w, h) in [(80, 24), (60, 12), (40, 6), (20, 3), (10, 1), (1, 1)] {
            let s = screen(&app, w, h);
            assert_eq!(s.len(), h as usize);
        }
        assert_eq!(
            heights(
                10,
                [(2, 7), (3, 10), (3, 14), (1, 1), (3, 6), (2, u16::MAX)],
                2
            ),
            [1, 1, 5, 1, 1, 1]
        );
        assert_eq!(
            heights(
                22,
                [(2, 7), (1, 1), (3, 14), (1, 1), (1, 1), (2, u16::MAX)],
                0
            ),
            [7, 1, 10, 1, 1, 2]
        );
    }

    #[test]
    fn the_limits_closest_to_their_maximum_have_a_panel() {
        let mut app = App::new(None);
        let nproc = Headroom {
            kind: "rlimit_nproc".into(),
            current: 57,
            max: 60,
            ratio: 0.95,
            uid: Some(65534),
            pid: Some(812),
            comm: Some("python3".into()),
            ..Default::default()
        };
        let memory = Headroom {
            kind: "memory_cgroup".into(),
            current: 150 << 20,
            max: 200 << 20,
            ratio: 0.75,
            cgroup: Some("/sys/fs/cgroup/app".into()),
            ..Default::default()
        };
        app.update(Update::Second(Box::new(Second {
            limits: vec![nproc, memory],
            summary: Summary {
                duration_s: 5.0,
                ..Default::default()
            },
            failures: vec![],
            processes: vec![],
            dropped: 0,
        })));
        let s = screen(&app, 100, 30).join("\n");
        assert!(s.contains("CLOSEST TO A LIMIT  95% at most"), "{s}");
        assert!(
            s.lines().any(|l| l.contains(" 95%")
                && l.contains("rlimit_nproc")
                && l.contains("uid 65534 (lowest: python3[812])")),
            "{s}"
        );
        assert!(
            s.lines()
                .any(|l| l.contains("memory_cgroup") && l.contains("/sys/fs/cgroup/app")),
            "{s}"
        );
        // Its detail names the limit in words.
        app.focus = Panel::Limits;
        app.detail = app.limits().first().map(|l| detail::headroom(l));
        let s = screen(&app, 100, 30).join("\n");
        assert!(
            s.contains("user 65534 has 57 tasks of the soft RLIMIT_NPROC 60 of python3[812]"),
            "{s}"
        );
    }

    #[test]
    fn paused_and_filtered_states_are_said_in_the_header() {
        let mut app = with_oom_pool_finding();
        key(&mut app, KeyCode::Char('p'));
        app.update(second(6.0, vec![]));
        key(&mut app, KeyCode::Char('/'));
        for c in "python".chars() {
            key(&mut app, KeyCode::Char(c));
        }
        let s = screen(&app, 120, 30);
        assert!(
            s[1].contains("PAUSED (1 updates since; recording goes on) │ filter \"python\""),
            "{}",
            s[1]
        );
        assert!(
            s[29].starts_with(" / python▏ Enter keep · Esc clear"),
            "{}",
            s[29]
        );
    }

    #[test]
    fn sparkline_scales_to_its_peak() {
        let v: VecDeque<u64> = [0, 1, 4, 8].into_iter().collect();
        assert_eq!(spark(&v, 6), "   ▁▄█");
        assert_eq!(spark(&v, 2), "▄█");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
    }

    /// The figure for the README, not a test of speed (nothing is
    /// asserted about time): `cargo test --release -p threadtrace
    /// render_time -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn render_time_with_10k_processes() {
        let make = |filter: &str, n: u32| {
            let mut app = with_oom_pool_finding();
            app.update(Update::Second(Box::new(Second {
                limits: Vec::new(),
                summary: Summary {
                    duration_s: 6.0,
                    failures_total: 20_000,
                    ..Default::default()
                },
                failures: (0..20)
                    .map(|i| group(&format!("lib{i}"), "rlimit_nproc", 1000 - i))
                    .collect(),
                processes: (0..n)
                    .map(|i| limits(10_000 + i, 10_000 - i as i64))
                    .collect(),
                dropped: 0,
            })));
            for i in 0..500 {
                app.update(Update::Record(Box::new(oom_kill(30_000 + i, false))));
            }
            if !filter.is_empty() {
                key(&mut app, KeyCode::Char('/'));
                for c in filter.chars() {
                    key(&mut app, KeyCode::Char(c));
                }
                key(&mut app, KeyCode::Enter);
            }
            // The processes panel focused, its last row selected.
            key(&mut app, KeyCode::Tab);
            key(&mut app, KeyCode::Tab);
            key(&mut app, KeyCode::End);
            app
        };
        for (w, h, filter, n) in [
            (80, 24, "", 0),
            (80, 24, "", 10_000),
            (200, 60, "", 10_000),
            (200, 60, "worker1999", 10_000),
        ] {
            let app = make(filter, n);
            let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
            let frames = 200;
            let t0 = std::time::Instant::now();
            for _ in 0..frames {
                t.draw(|f| ui(f, &app)).unwrap();
            }
            println!(
                "render {w}x{h}, {n} processes{}: {:?} per frame",
                if filter.is_empty() { "" } else { ", filtered" },
                t0.elapsed() / frames
            );
        }
    }
}

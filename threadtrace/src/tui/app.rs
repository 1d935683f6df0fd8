//! The dashboard's state: what the SRE is looking at (the focused panel,
//! the selection, the filter typed, a detail open), over the `Data` the
//! recording has shown so far. It changes only through `update` and
//! `key`; `ui` draws it. No I/O here, so every behaviour is a unit test.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{
    data::{Data, FailureGroup, FailureRow, Update},
    detail::{self, Detail},
};
use crate::{
    diagnosis::limits::ProcessLimits,
    model::{Finding, Headroom, Record, Task},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Findings,
    Failures,
    Processes,
    Limits,
    Kills,
    Recent,
}

impl Panel {
    pub const ALL: [Panel; 6] = [
        Panel::Findings,
        Panel::Failures,
        Panel::Processes,
        Panel::Limits,
        Panel::Kills,
        Panel::Recent,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    fn next(self) -> Panel {
        Panel::ALL[(self.index() + 1) % Panel::ALL.len()]
    }

    fn prev(self) -> Panel {
        Panel::ALL[(self.index() + Panel::ALL.len() - 1) % Panel::ALL.len()]
    }
}

/// What `/` typed: a process (comm, pid), a user (uid), a library.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    text: String,
    number: Option<u32>,
}

impl Filter {
    fn new(typed: &str) -> Filter {
        let text = typed.trim().to_lowercase();
        Filter {
            number: text.parse().ok(),
            text,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// A number is a pid or a uid; anything else a part of a name.
    pub fn process(&self, pid: u32, comm: &str, uid: Option<u32>) -> bool {
        match self.number {
            Some(n) => pid == n || uid == Some(n),
            None => self.text(comm),
        }
    }

    pub fn text(&self, s: &str) -> bool {
        self.text.is_empty() || s.to_lowercase().contains(&self.text)
    }

    fn finding(&self, f: &Finding) -> bool {
        self.text(&f.title) || f.evidence.iter().any(|e| self.text(e))
    }

    fn failures(&self, g: &FailureGroup) -> bool {
        (self.number.is_none() && (self.text(&g.library) || self.text(&g.cause)))
            || g.processes
                .iter()
                .any(|(pid, comm, uid)| self.process(*pid, comm, Some(*uid)))
    }

    fn limits(&self, p: &ProcessLimits) -> bool {
        self.process(p.pid, &p.comm, p.uid)
            || (self.number.is_none() && p.libraries.iter().any(|(l, _)| self.text(l)))
    }

    /// A limit: its user, its cgroup's path, or the process it names.
    fn headroom(&self, l: &Headroom) -> bool {
        match self.number {
            Some(n) => l.uid == Some(n) || l.pid == Some(n),
            None => {
                l.cgroup.as_deref().is_some_and(|c| self.text(c))
                    || l.comm.as_deref().is_some_and(|c| self.text(c))
                    || self.text(&l.kind)
            }
        }
    }

    fn record(&self, r: &Record) -> bool {
        if self.is_empty() {
            return true;
        }
        let task = |t: &Task| self.process(t.pid, &t.comm, Some(t.uid));
        match r {
            Record::ThreadCreateFailed(e) => {
                task(&e.task)
                    || (self.number.is_none() && e.library.as_deref().is_some_and(|l| self.text(l)))
            }
            Record::OomKill(k) => {
                self.process(k.victim.pid, &k.victim.comm, k.victim.uid)
                    || self.process(k.trigger.pid, &k.trigger.comm, Some(k.trigger.uid))
                    || k.pool
                        .as_ref()
                        .is_some_and(|p| self.process(p.parent_pid, &p.parent_comm, None))
                    || k.growers.iter().any(|g| self.process(g.pid, &g.comm, None))
            }
            Record::RlimitChange(e) => {
                task(&e.task)
                    || self.process(e.target_pid, e.target_comm.as_deref().unwrap_or(""), None)
            }
            Record::Storm(s) => {
                (self.number.is_none()
                    && (self.text(&s.scope) || s.libraries.iter().any(|l| self.text(l))))
                    || self.number == Some(s.uid)
                    || s.processes
                        .iter()
                        .any(|p| self.process(p.pid, &p.comm, None))
            }
            Record::Oversubscribed(o) => {
                self.process(o.pid, &o.comm, None)
                    || (self.number.is_none() && self.text(&o.library))
            }
            r => r.task().is_some_and(task),
        }
    }
}

pub struct App {
    live: Data,
    frozen: Option<Box<Data>>,
    pub focus: Panel,
    selected: [usize; 6],
    typed: String,
    filter: Filter,
    /// `/` was pressed: keys go to the filter until Enter or Esc.
    pub typing: bool,
    pub detail: Option<Detail>,
    pub quit: bool,
    /// The trace file being written (-o).
    pub trace_path: Option<String>,
}

impl App {
    pub fn new(trace_path: Option<String>) -> App {
        App {
            live: Data::default(),
            frozen: None,
            focus: Panel::Findings,
            selected: [0; 6],
            typed: String::new(),
            filter: Filter::default(),
            typing: false,
            detail: None,
            quit: false,
            trace_path,
        }
    }

    pub fn update(&mut self, u: Update) {
        self.live.update(u);
    }

    /// What is shown: the live state, or the one frozen by `p`.
    pub fn data(&self) -> &Data {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    /// Updates that arrived since the display was paused.
    pub fn paused(&self) -> Option<u64> {
        self.frozen
            .as_ref()
            .map(|f| self.live.updates.saturating_sub(f.updates))
    }

    pub fn typed(&self) -> &str {
        &self.typed
    }

    pub fn findings(&self) -> Vec<&Finding> {
        let d = self.data();
        d.summary
            .findings
            .iter()
            .filter(|f| self.filter.finding(f))
            .collect()
    }

    pub fn failures(&self) -> Vec<&FailureRow> {
        let d = self.data();
        d.failures
            .iter()
            .filter(|r| self.filter.failures(&r.group))
            .collect()
    }

    pub fn processes(&self) -> Vec<&ProcessLimits> {
        let d = self.data();
        if self.filter.is_empty() {
            return d.processes.iter().collect();
        }
        d.processes
            .iter()
            .filter(|p| self.filter.limits(p))
            .collect()
    }

    /// The limits closest to their maximum.
    pub fn limits(&self) -> Vec<&Headroom> {
        let d = self.data();
        d.limits
            .iter()
            .filter(|l| self.filter.is_empty() || self.filter.headroom(l))
            .collect()
    }

    pub fn kills(&self) -> Vec<&Record> {
        let d = self.data();
        d.kills.iter().filter(|r| self.filter.record(r)).collect()
    }

    pub fn recent(&self) -> Vec<&Record> {
        let d = self.data();
        d.recent.iter().filter(|r| self.filter.record(r)).collect()
    }

    pub fn len(&self, p: Panel) -> usize {
        match p {
            Panel::Findings => self.findings().len(),
            Panel::Failures => self.failures().len(),
            Panel::Processes => self.processes().len(),
            Panel::Limits => self.limits().len(),
            Panel::Kills => self.kills().len(),
            Panel::Recent => self.recent().len(),
        }
    }

    /// The selected row of a panel, within what it shows.
    pub fn selected(&self, p: Panel) -> usize {
        self.selected_within(p, self.len(p))
    }

    /// The same, for a panel whose rows are already counted.
    pub fn selected_within(&self, p: Panel, len: usize) -> usize {
        self.selected[p.index()].min(len.saturating_sub(1))
    }

    fn select(&mut self, by: isize) {
        let p = self.focus;
        let last = self.len(p).saturating_sub(1);
        let now = self.selected(p) as isize;
        self.selected[p.index()] = (now + by).clamp(0, last as isize) as usize;
    }

    pub fn key(&mut self, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        // In raw mode Ctrl-C is a key, not SIGINT: it must still stop.
        if ctrl && matches!(k.code, KeyCode::Char('c')) {
            self.quit = true;
            return;
        }
        if self.typing {
            match k.code {
                KeyCode::Char(c) if !ctrl => self.typed.push(c),
                KeyCode::Backspace => {
                    self.typed.pop();
                }
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.typed.clear();
                    self.typing = false;
                }
                _ => {}
            }
            self.filter = Filter::new(&self.typed);
            return;
        }
        if let Some(d) = &mut self.detail {
            match k.code {
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => self.detail = None,
                KeyCode::Up | KeyCode::Char('k') => d.scroll = d.scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => d.scroll = d.scroll.saturating_add(1),
                KeyCode::PageUp => d.scroll = d.scroll.saturating_sub(10),
                KeyCode::PageDown | KeyCode::Char(' ') => d.scroll = d.scroll.saturating_add(10),
                KeyCode::Home => d.scroll = 0,
                _ => {}
            }
            return;
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('p') => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(Box::new(self.live.clone())),
                }
            }
            KeyCode::Char('/') => self.typing = true,
            KeyCode::Esc => {
                self.typed.clear();
                self.filter = Filter::default();
            }
            KeyCode::Tab => self.focus = self.focus.next(),
            KeyCode::BackTab => self.focus = self.focus.prev(),
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::PageUp => self.select(-10),
            KeyCode::PageDown => self.select(10),
            KeyCode::Home | KeyCode::Char('g') => self.select(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.select(isize::MAX / 2),
            KeyCode::Enter => self.detail = self.detail_of_selection(),
            _ => {}
        }
    }

    fn detail_of_selection(&self) -> Option<Detail> {
        let i = self.selected(self.focus);
        match self.focus {
            Panel::Findings => self.findings().get(i).map(|f| detail::finding(f)),
            Panel::Failures => self
                .failures()
                .get(i)
                .map(|r| detail::failures(r, self.data().storm_of(&r.group))),
            Panel::Processes => self.processes().get(i).map(|p| detail::process(p)),
            Panel::Limits => self.limits().get(i).map(|l| detail::headroom(l)),
            Panel::Kills => self.kills().get(i).map(|r| detail::record(r)),
            Panel::Recent => self.recent().get(i).map(|r| detail::record(r)),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        model::fixtures::{failure, pool_kill as oom_kill, storm},
        model::Summary,
        tui::data::{Second, KILLS},
    };

    pub fn group(library: &str, cause: &str, failures: u64) -> FailureGroup {
        FailureGroup {
            library: library.into(),
            cause: cause.into(),
            failures,
            processes: vec![(4242, "omp".into(), 65534)],
            example: Some(Arc::new(failure(4242, "omp", library, cause))),
        }
    }

    pub fn second(duration_s: f64, groups: Vec<FailureGroup>) -> Update {
        Update::Second(Box::new(Second {
            limits: Vec::new(),
            summary: Summary {
                duration_s,
                failures_total: groups.iter().map(|g| g.failures).sum(),
                events_delivered: (duration_s * 10.0) as u64,
                ..Default::default()
            },
            failures: groups,
            processes: vec![],
            dropped: 0,
        }))
    }

    fn key(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn type_str(app: &mut App, s: &str) {
        for c in s.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    #[test]
    fn rates_are_per_second_differences_of_the_cumulative_counts() {
        let mut app = App::new(None);
        app.update(second(1.0, vec![group("libgomp", "rlimit_nproc", 3)]));
        app.update(second(2.0, vec![group("libgomp", "rlimit_nproc", 10)]));
        app.update(second(
            3.0,
            vec![
                group("libgomp", "rlimit_nproc", 10),
                group("libopenblas", "rlimit_nproc", 4),
            ],
        ));
        let rows = app.failures();
        assert_eq!(
            rows[0].per_second.iter().copied().collect::<Vec<_>>(),
            vec![3, 7, 0]
        );
        assert_eq!(rows[1].rate(), 4);
        assert_eq!(app.data().events_per_s, 10);
    }

    #[test]
    fn storms_last_from_start_to_end_and_updates_stay_out_of_the_list() {
        let mut app = App::new(None);
        app.update(second(1.0, vec![group("libgomp", "rlimit_nproc", 30)]));
        let in_storm = |app: &App| app.data().storm_of(&app.failures()[0].group).is_some();
        assert!(!in_storm(&app));
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "start", "libgomp",
        )))));
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "update", "libgomp",
        )))));
        assert!(in_storm(&app));
        assert_eq!(app.recent().len(), 1, "the start, not each second's update");
        app.update(Update::Record(Box::new(Record::Storm(storm(
            "end", "libgomp",
        )))));
        assert!(!in_storm(&app));
        assert_eq!(app.recent().len(), 2);
    }

    #[test]
    fn kills_and_pool_deaths_are_kept_newest_first() {
        let mut app = App::new(None);
        app.update(Update::Record(Box::new(oom_kill(100, false))));
        app.update(Update::Record(Box::new(oom_kill(200, true))));
        let kills = app.kills();
        assert!(matches!(kills[0], Record::OomKill(k) if k.victim.pid == 200));
        assert_eq!(kills.len(), 2);
        for i in 0..(KILLS + 5) as u32 {
            app.update(Update::Record(Box::new(oom_kill(1000 + i, false))));
        }
        assert_eq!(app.kills().len(), KILLS, "bounded");
    }

    #[test]
    fn pause_freezes_the_display_not_the_recording() {
        let mut app = App::new(None);
        app.update(second(1.0, vec![group("libgomp", "rlimit_nproc", 3)]));
        key(&mut app, KeyCode::Char('p'));
        app.update(second(2.0, vec![group("libgomp", "rlimit_nproc", 50)]));
        app.update(Update::Record(Box::new(oom_kill(100, false))));
        assert_eq!(app.failures()[0].group.failures, 3, "frozen");
        assert!(app.kills().is_empty());
        assert_eq!(app.paused(), Some(2));
        key(&mut app, KeyCode::Char('p'));
        assert_eq!(app.paused(), None);
        assert_eq!(app.failures()[0].group.failures, 50, "live again");
        assert_eq!(app.kills().len(), 1);
    }

    #[test]
    fn the_filter_takes_a_process_a_uid_or_a_library() {
        let mut app = App::new(None);
        let mut other = group("libopenblas", "cgroup_pids", 2);
        other.processes = vec![(777, "python3".into(), 1000)];
        app.update(second(
            1.0,
            vec![group("libgomp", "rlimit_nproc", 3), other],
        ));
        app.update(Update::Record(Box::new(Record::ThreadCreateFailed(
            failure(4242, "omp", "libgomp", "rlimit_nproc"),
        ))));
        app.update(Update::Record(Box::new(oom_kill(900, true))));
        key(&mut app, KeyCode::Char('/'));
        type_str(&mut app, "BLAS");
        assert!(app.typing);
        assert_eq!(app.failures().len(), 1);
        assert_eq!(app.failures()[0].group.library, "libopenblas");
        assert!(app.recent().is_empty());
        key(&mut app, KeyCode::Enter);
        assert!(!app.typing, "Enter keeps the filter");
        assert_eq!(app.failures().len(), 1);
        key(&mut app, KeyCode::Char('/'));
        for _ in 0..4 {
            key(&mut app, KeyCode::Backspace);
        }
        type_str(&mut app, "65534");
        assert_eq!(app.failures().len(), 1, "uid 65534");
        assert_eq!(app.failures()[0].group.library, "libgomp");
        assert_eq!(app.recent().len(), 1);
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.typed(), "");
        assert_eq!(app.failures().len(), 2, "Esc clears");
        assert_eq!(app.recent().len(), 2);
        key(&mut app, KeyCode::Char('/'));
        type_str(&mut app, "900");
        assert_eq!(app.kills().len(), 1, "the victim's pid");
        assert_eq!(app.failures().len(), 0);
    }

    #[test]
    fn keys_move_focus_select_and_open_details() {
        let mut app = App::new(None);
        app.update(second(
            1.0,
            vec![
                group("libgomp", "rlimit_nproc", 3),
                group("libopenblas", "rlimit_nproc", 2),
            ],
        ));
        assert_eq!(app.focus, Panel::Findings);
        key(&mut app, KeyCode::Tab);
        assert_eq!(app.focus, Panel::Failures);
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Down);
        assert_eq!(app.selected(Panel::Failures), 1, "stops at the last row");
        key(&mut app, KeyCode::Enter);
        let d = app.detail.as_ref().expect("detail of the selected group");
        assert!(d.title.contains("libopenblas"), "{}", d.title);
        let text = d.lines.join("\n");
        assert!(
            text.contains("GOMP_parallel") && text.contains("do: OMP_NUM_THREADS=1"),
            "the stack and the remedy: {text}"
        );
        key(&mut app, KeyCode::Char('q'));
        assert!(app.quit, "q quits even from a detail");
        let mut app = App::new(None);
        key(&mut app, KeyCode::BackTab);
        assert_eq!(app.focus, Panel::Recent);
        key(&mut app, KeyCode::Enter);
        assert!(app.detail.is_none(), "nothing selected, nothing opened");
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit, "Ctrl-C is a key in raw mode");
    }
}

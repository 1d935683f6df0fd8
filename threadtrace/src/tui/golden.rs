//! The dashboard fed the golden recording (tests/golden/record.jsonl) as
//! the output stage feeds it, drawn at one size with each panel focused
//! and each panel's first detail open: the screens must stay as they were
//! (`GOLDEN_UPDATE=1` rewrites tests/golden/expected/dashboard.txt).
use std::time::Instant;

use ratatui::{backend::TestBackend, Terminal};

use super::{app::App, data::Update, feed, ui};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::ui(f, app)).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let row: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

fn key(app: &mut App, code: KeyCode) {
    app.key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn the_dashboard_of_the_golden_recording_is_unchanged() {
    use crate::model::Record;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let text = std::fs::read_to_string(dir.join("record.jsonl")).unwrap();
    let (mut feed, rx) = feed::channel();
    let t0 = Instant::now();
    let mut summary = None;
    for line in text.lines() {
        let r: Record = serde_json::from_str(line).unwrap();
        match &r {
            Record::Summary(s) => summary = Some(s.clone()),
            Record::ThreadCreateFailed(e) => {
                feed.failure(e, t0);
                feed.record(&r);
            }
            r if r.is_noteworthy() => feed.record(r),
            _ => {}
        }
    }
    feed.second(summary.expect("a summary"), Vec::new());
    let mut app = App::new(Some("/var/tmp/golden.trace".into()));
    while let Ok(u) = rx.try_recv() {
        if let Some(u) = u.for_display() {
            app.update(u);
        }
    }
    // A log line, as a warning would arrive.
    app.update(Update::Log("a warning".into()));
    let (w, h) = (140, 60);
    let mut out = String::new();
    for panel in 0..5 {
        out.push_str(&format!("=== panel {panel} focused\n"));
        out.push_str(&screen(&app, w, h));
        key(&mut app, KeyCode::Enter);
        out.push_str(&format!("=== panel {panel}: its first row's detail\n"));
        out.push_str(&screen(&app, w, h));
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Tab);
    }
    let path = dir.join("expected/dashboard.txt");
    if std::env::var_os("GOLDEN_UPDATE").is_some_and(|v| !v.is_empty()) {
        std::fs::write(&path, &out).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    if want != out {
        let at = want
            .lines()
            .zip(out.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "dashboard differs from {} at line {}:\n  expected: {}\n  got:      {}",
            path.display(),
            at + 1,
            want.lines().nth(at).unwrap_or("<end>"),
            out.lines().nth(at).unwrap_or("<end>")
        );
    }
}

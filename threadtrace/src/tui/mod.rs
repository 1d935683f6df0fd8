//! The live dashboard of `record` on a terminal: what broke, why, who and
//! what to do, within seconds, instead of a scrolling log.
//!
//! The output stage feeds it (`feed`, never blocking the recording); `app`
//! holds the state, changed only by updates and keys; `ui` draws it. This
//! file owns the terminal: raw mode and the alternate screen, given back
//! on quit, on panic, and whenever the recording stops (Ctrl-C, SIGTERM,
//! --duration), before the summary is printed on it.
//!
//! It runs on one thread, started with the collector's and the output
//! stage's, before `started`: no thread is created while recording.
pub mod app;
mod clean;
pub mod data;
pub mod detail;
pub mod feed;
#[cfg(test)]
mod golden;
pub mod logs;
pub mod ui;
mod usage;

use std::{
    io::{self, Stdout},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, TryRecvError},
        Arc, Once,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossterm::{
    cursor,
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{backend::CrosstermBackend, Terminal};

use app::App;
use data::Update;

/// How often the screen is redrawn when something changed; keys are
/// answered at once.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot take over the terminal for the dashboard: {0} (--no-tui prints lines instead)"
    )]
    Setup(io::Error),
    #[error("cannot start the dashboard's thread: {0}")]
    Spawn(io::Error),
    #[error("the dashboard lost its terminal: {0}")]
    Terminal(io::Error),
    #[error("the dashboard crashed")]
    Panicked,
}

/// Whether the terminal is in raw mode on the alternate screen: restoring
/// happens once, whoever gets there first (quit, panic, stop).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back as it was. Safe to call from anywhere, twice.
fn restore() {
    if TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// A panic anywhere restores the terminal before its message is printed,
/// or the message would be lost in the alternate screen.
fn restore_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            logs::release_on_panic();
            previous(info);
        }));
    });
}

/// The running dashboard, as the collector holds it.
pub struct Dashboard {
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// Takes over the terminal and starts the dashboard's thread. The
/// receiver resolves when the dashboard ends by itself (q, Ctrl-C, or an
/// error): the recording must stop then.
pub fn start(
    trace: Option<PathBuf>,
) -> Result<(Dashboard, feed::Feed, tokio::sync::oneshot::Receiver<()>), Error> {
    restore_on_panic();
    let (feed, rx) = feed::channel();
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
    terminal::enable_raw_mode().map_err(Error::Setup)?;
    TAKEN.store(true, Ordering::SeqCst);
    let terminal = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
        .and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())))
        .map_err(|e| {
            restore();
            Error::Setup(e)
        })?;
    logs::capture();
    let closing = Arc::new(AtomicBool::new(false));
    let stop = closing.clone();
    let app = App::new(trace.as_ref().map(|p| p.display().to_string()));
    let thread = std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || {
            let r = run(terminal, app, rx, &stop, usage::Sampler::new(trace));
            // The terminal first, so that it is back before the summary.
            restore();
            drop(quit_tx);
            r
        })
        .map_err(|e| {
            restore();
            logs::release();
            Error::Spawn(e)
        })?;
    Ok((
        Dashboard {
            closing,
            thread: Some(thread),
        },
        feed,
        quit_rx,
    ))
}

impl Dashboard {
    /// Ends it, terminal restored and kept log lines on stderr.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        self.closing.store(true, Ordering::SeqCst);
        let r = match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(Error::Panicked)),
            None => Ok(()),
        };
        restore();
        logs::release();
        r
    }
}

impl Drop for Dashboard {
    /// An early return of the collector must not leave the terminal raw.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn run(
    mut terminal: Terminal<CrosstermBackend<Stdout>>,
    mut app: App,
    rx: Receiver<Update>,
    closing: &AtomicBool,
    mut sampler: usage::Sampler,
) -> Result<(), Error> {
    let mut dirty = true;
    let mut next_draw = Instant::now();
    let mut next_sample = Instant::now();
    while !closing.load(Ordering::SeqCst) && !app.quit {
        let now = Instant::now();
        let mut draw_now = false;
        // Waiting for a key is the loop's sleep, until the next tick.
        if event::poll(next_draw.saturating_duration_since(now)).map_err(Error::Terminal)? {
            match event::read().map_err(Error::Terminal)? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    app.key(k);
                    draw_now = true;
                }
                Event::Resize(..) => draw_now = true,
                _ => {}
            }
        }
        loop {
            match rx.try_recv() {
                Ok(u) => {
                    // Escaped once, here: everything drawn comes from updates.
                    if let Some(u) = u.for_display() {
                        app.update(u);
                    }
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                // The output stage is gone: the recording is over.
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }
        let now = Instant::now();
        if now >= next_sample {
            app.update(Update::Usage(sampler.sample()));
            for l in logs::unseen() {
                if let Some(u) = Update::Log(l).for_display() {
                    app.update(u);
                }
            }
            next_sample = now + Duration::from_secs(1);
            dirty = true;
        }
        if draw_now || (dirty && now >= next_draw) {
            terminal
                .draw(|f| ui::ui(f, &app))
                .map_err(Error::Terminal)?;
            dirty = false;
        }
        if now >= next_draw {
            next_draw = now + TICK;
        }
    }
    Ok(())
}

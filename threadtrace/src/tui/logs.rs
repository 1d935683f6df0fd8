//! Log lines while the dashboard owns the terminal: a line written to
//! stderr then would be drawn over the dashboard and garble it. They are
//! kept (bounded), the latest shown in the header, and all written to
//! stderr once the terminal is restored.
use std::{
    collections::VecDeque,
    io::{self, Write},
    sync::{Mutex, MutexGuard},
};

/// Lines kept for stderr at most; the oldest go first.
const KEPT: usize = 500;

#[derive(Default)]
struct CapturedLogs {
    /// For stderr, after the dashboard.
    kept: VecDeque<String>,
    /// Not yet shown by the dashboard.
    unseen: Vec<String>,
    /// A line not yet ended.
    partial: String,
    lost: u64,
}

/// None: lines go straight to stderr.
static CAPTURE: Mutex<Option<CapturedLogs>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<CapturedLogs>> {
    // A panic while logging must not silence the logs that follow.
    CAPTURE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The logger's target (env_logger's pipe) when a dashboard may run.
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut c = lock();
        let Some(c) = c.as_mut() else {
            return io::stderr().write(buf);
        };
        c.partial.push_str(&String::from_utf8_lossy(buf));
        while let Some(end) = c.partial.find('\n') {
            let line: String = c.partial.drain(..=end).collect();
            let line = line.trim_end().to_string();
            if c.kept.len() >= KEPT {
                c.kept.pop_front();
                c.lost += 1;
            }
            if c.unseen.len() < KEPT {
                c.unseen.push(line.clone());
            }
            c.kept.push_back(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match lock().as_ref() {
            Some(_) => Ok(()),
            None => io::stderr().flush(),
        }
    }
}

/// From now on, keep log lines instead of writing them.
pub fn capture() {
    lock().get_or_insert_with(CapturedLogs::default);
}

/// Lines logged since the last call.
pub fn unseen() -> Vec<String> {
    lock()
        .as_mut()
        .map(|c| std::mem::take(&mut c.unseen))
        .unwrap_or_default()
}

/// Back to stderr, with what was kept.
pub fn release() {
    let c = lock().take();
    write_out(c);
}

/// The same from the panic hook, unless the panic came from a thread
/// that holds the lock (it would wait for itself).
pub fn release_on_panic() {
    let c = match CAPTURE.try_lock() {
        Ok(mut g) => g.take(),
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    write_out(c);
}

fn write_out(c: Option<CapturedLogs>) {
    let Some(c) = c else { return };
    let mut err = io::stderr().lock();
    if c.lost > 0 {
        let _ = writeln!(err, "({} earlier log lines were not kept)", c.lost);
    }
    for l in c
        .kept
        .iter()
        .chain(Some(&c.partial).filter(|p| !p.is_empty()))
    {
        let _ = writeln!(err, "{l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_while_captured_and_shown_once() {
        capture();
        let mut w = Writer;
        w.write_all(b"[WARN ] first\n[WARN ] sec").unwrap();
        w.write_all(b"ond\n").unwrap();
        assert_eq!(unseen(), vec!["[WARN ] first", "[WARN ] second"]);
        assert!(unseen().is_empty());
        assert_eq!(lock().as_ref().unwrap().kept.len(), 2);
        release();
        assert!(lock().is_none());
        assert!(unseen().is_empty());
    }
}

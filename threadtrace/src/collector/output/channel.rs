//! The channel from the collector to the output stage: bounded in
//! messages and in bytes, and never waited on by the collector
//! ([`Sender::try_send`]).
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use super::Msg;
use crate::model::{Record, Summary};

/// Records waiting for the output thread at most.
const QUEUE: usize = 2048;
/// And their bytes at most: a failure carries a stack copy and its
/// process's maps, which any process can make large.
const QUEUE_BYTES: usize = 64 << 20;

/// Bytes a message holds, roughly: what it carries that can be large.
fn message_bytes(m: &Msg) -> usize {
    const BASE: usize = 1024;
    let summary =
        |s: &Summary| BASE + 128 * (s.by_process.len() + s.threads.len()) + 1024 * s.findings.len();
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    match m {
        Msg::Failure(e, captured) => {
            BASE + text(&e.cmdline)
                + text(&e.exe)
                + 64 * e.stack.len()
                + captured.as_ref().map_or(0, |c| {
                    8 * c.ips.len() + 12 * c.start_routine.len() + c.snapshot.bytes.len()
                })
        }
        Msg::Record(r) => match &**r {
            Record::ProcessExec(e) => BASE + text(&e.cmdline),
            Record::ProcessExit(e) => BASE + text(&e.cmdline),
            Record::OomKill(e) => BASE + text(&e.victim.cmdline),
            _ => BASE,
        },
        Msg::Checkpoint(c) => summary(&c.summary),
        Msg::Dashboard(c, processes) => summary(&c.summary) + 256 * processes.len(),
        Msg::LivePods(uids) => BASE + 64 * uids.len(),
        Msg::Limits(limits) => BASE + 512 * limits.len(),
        Msg::Reopen { processes, .. } => BASE + 512 * processes.len(),
        // The last one always fits.
        Msg::Finish(..) => 0,
    }
}

/// Why the output stage did not take a message.
pub enum Refused {
    /// Full: the message is handed back, to be tried again.
    Full(Msg),
    /// The output thread is gone (it returned or panicked).
    Gone,
}

/// The collector's end of the channel: it never waits.
pub struct Sender {
    tx: SyncSender<(usize, Msg)>,
    in_flight: Arc<AtomicUsize>,
    stopping: Arc<OnceLock<Instant>>,
}

/// The output stage's end: messages, with the bytes each was counted as.
pub struct Receiving {
    pub rx: Receiver<(usize, Msg)>,
    pub in_flight: Arc<AtomicUsize>,
    /// When the recording began to stop.
    pub stopping: Arc<OnceLock<Instant>>,
}

impl Receiving {
    /// The next message, its bytes no longer counted; None once the
    /// collector is gone.
    pub fn next(&self) -> Option<Msg> {
        let (size, m) = self.rx.recv().ok()?;
        self.in_flight.fetch_sub(size, Ordering::SeqCst);
        Some(m)
    }

    /// How long ago the recording began to stop (None: it is not).
    pub fn stopping_for(&self) -> Option<Duration> {
        self.stopping.get().map(Instant::elapsed)
    }
}

pub fn channel() -> (Sender, Receiving) {
    let (tx, rx) = sync_channel(QUEUE);
    let (in_flight, stopping) = (Arc::new(AtomicUsize::new(0)), Arc::new(OnceLock::new()));
    (
        Sender {
            tx,
            in_flight: in_flight.clone(),
            stopping: stopping.clone(),
        },
        Receiving {
            rx,
            in_flight,
            stopping,
        },
    )
}

impl Sender {
    pub fn try_send(&self, m: Msg) -> Result<(), Refused> {
        let size = message_bytes(&m);
        // Counted before the send: the output thread may take it at once.
        let before = self.in_flight.fetch_add(size, Ordering::SeqCst);
        if before > 0 && before + size > QUEUE_BYTES {
            self.in_flight.fetch_sub(size, Ordering::SeqCst);
            return Err(Refused::Full(m));
        }
        match self.tx.try_send((size, m)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.in_flight.fetch_sub(size, Ordering::SeqCst);
                match e {
                    TrySendError::Full((_, m)) => Err(Refused::Full(m)),
                    TrySendError::Disconnected(_) => Err(Refused::Gone),
                }
            }
        }
    }

    /// The recording is stopping, from now: failures still queued are
    /// attributed for a while, then written without attribution, so that
    /// the summary comes promptly.
    pub fn stopping(&self) {
        let _ = self.stopping.set(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stop's moment is kept from its first notice: the grace after it
    /// for attributing what is queued is counted from there.
    #[test]
    fn the_stop_is_timed_from_its_first_notice() {
        let (tx, rx) = channel();
        assert_eq!(rx.stopping_for(), None);
        tx.stopping();
        let first = *rx.stopping.get().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        tx.stopping();
        assert_eq!(*rx.stopping.get().unwrap(), first);
        assert!(rx.stopping_for().unwrap() >= Duration::from_millis(5));
    }
}

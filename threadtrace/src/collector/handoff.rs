//! The hand-off to the output stage, with its back-pressure: messages go
//! out in order and the collector never waits. What the output stage has
//! no room for waits here, and while anything waits the ring buffer is
//! not read (the kernel's buffer absorbs the burst, and counts what
//! overflows it). Once-a-second snapshots are skipped, and counted, when
//! the stage is busy: the next one carries the same counts.
use std::collections::VecDeque;

use super::output::{Msg, Refused, Sender};
use crate::{attribution::Captured, model::Record};

/// Messages held back while the output stage is full; only checkpoints
/// add to them then (the ring buffer is not read meanwhile).
const PENDING_MAX: usize = 256;

pub struct Handoff {
    output: Sender,
    /// Messages the output stage had no room for, oldest first.
    pending: VecDeque<Msg>,
    /// The output thread ended: the recording cannot go on.
    gone: bool,
    /// Counter snapshots and dashboard seconds not sent, the stage busy.
    pub snapshots_skipped: u64,
    /// Messages dropped past PENDING_MAX.
    pub records_dropped: u64,
}

impl Handoff {
    pub fn new(output: Sender) -> Self {
        Handoff {
            output,
            pending: VecDeque::new(),
            gone: false,
            snapshots_skipped: 0,
            records_dropped: 0,
        }
    }

    /// Whether the output thread is gone.
    pub fn gone(&self) -> bool {
        self.gone
    }

    /// Whether nothing waits for the output stage: only then is the ring
    /// buffer read.
    pub fn is_clear(&self) -> bool {
        self.pending.is_empty()
    }

    /// A record; a failure with what the kernel captured of its stack,
    /// which the output stage attributes.
    pub fn emit(&mut self, r: Record, captured: Option<Box<Captured>>) {
        self.send(match r {
            Record::ThreadCreateFailed(e) => Msg::Failure(Box::new(e), captured),
            r => Msg::Record(Box::new(r)),
        });
    }

    /// To the output stage, in order, without waiting: what it has no room
    /// for waits (and the ring buffer is not read meanwhile).
    pub fn send(&mut self, m: Msg) {
        if self.pending.len() >= PENDING_MAX {
            self.records_dropped += 1;
            return;
        }
        self.pending.push_back(m);
        self.flush();
    }

    /// A once-a-second message: skipped, and counted, when the output
    /// stage is busy; the next second's carries the same counts.
    pub fn send_or_skip(&mut self, m: Msg) {
        if !self.pending.is_empty() {
            self.snapshots_skipped += 1;
            return;
        }
        match self.output.try_send(m) {
            Ok(()) => {}
            Err(Refused::Full(_)) => self.snapshots_skipped += 1,
            Err(Refused::Gone) => self.gone = true,
        }
    }

    /// Hands over what waits; true when nothing does.
    pub fn flush(&mut self) -> bool {
        while let Some(m) = self.pending.pop_front() {
            match self.output.try_send(m) {
                Ok(()) => {}
                Err(Refused::Full(m)) => {
                    self.pending.push_front(m);
                    return false;
                }
                Err(Refused::Gone) => {
                    self.gone = true;
                    self.pending.clear();
                    return false;
                }
            }
        }
        true
    }

    /// The recording is stopping: failures still queued are attributed
    /// for a while, then written without attribution, so that the summary
    /// comes promptly.
    pub fn stopping(&self) {
        self.output.stopping();
    }
}

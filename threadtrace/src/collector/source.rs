//! The kernel side of the collector: the loaded programs, the exact
//! counters they keep, and decoding what they send through the ring
//! buffer.
use threadtrace_common::RlimitChange;

use crate::kernel::{
    counters::{CounterMaps, Counters},
    decode::{self, Raw},
    Kernel,
};

pub struct Source {
    pub kernel: Kernel,
    counters: CounterMaps,
    /// Records decoded, and records that did not decode.
    pub delivered: u64,
    pub decode_errors: u64,
}

impl Source {
    pub fn new(kernel: Kernel, counters: CounterMaps) -> Self {
        Source {
            kernel,
            counters,
            delivered: 0,
            decode_errors: 0,
        }
    }

    /// A ring-buffer record, decoded; None when it does not decode (it is
    /// counted) or is not news: the tracer capping its own memory after
    /// attach.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Raw> {
        let raw = match decode::decode(bytes) {
            Ok(raw) => raw,
            Err(e) => {
                self.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                return None;
            }
        };
        self.delivered += 1;
        match &raw {
            Raw::RlimitChange(e) if is_own(e) => None,
            _ => Some(raw),
        }
    }

    /// Has the kernel read each new thread's start routine at `offset` too
    /// (a libc build not seen before).
    pub fn read_start_routine_at(&mut self, offset: u32) {
        if !self.kernel.add_start_routine_offset(offset) {
            log::info!("a fifth libc build: its threads' start routines are not captured");
        }
    }

    /// The start_routine offsets the kernel reads at, slot by slot.
    pub fn start_routine_offsets(&self) -> &[u32] {
        &self.kernel.offsets_in_use
    }

    /// The exact counts, now.
    pub fn counters(&self) -> Counters {
        self.counters.read()
    }
}

fn is_own(e: &threadtrace_common::Event<RlimitChange>) -> bool {
    e.header.tgid == std::process::id()
}

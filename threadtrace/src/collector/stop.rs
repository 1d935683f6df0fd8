//! The end of a recording: the terminal given back, what the ring buffer
//! still holds handed over (attributed for a moment, then unattributed, so
//! that the stop is prompt), the summary written, and every thread joined.
//! A stuck output stage (a stdout nobody reads) or a second Ctrl-C does not
//! hold the exit back.
use std::{thread::JoinHandle, time::Duration};

use super::{output::Msg, startup::Recording, RETRY};

/// Ring-buffer batches read after the stop at most.
const STOP_BATCHES: u32 = 64;
/// How long the output stage has, after the stop, to take what is left
/// and write the summary: longer means it is stuck, and the tracer exits
/// without it.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// The output thread ended before the summary: why, in one line.
fn output_died(thread: JoinHandle<anyhow::Result<()>>) -> anyhow::Error {
    let why = match thread.join() {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => "it returned early".into(),
        // Its message was printed by the panic hook.
        Err(_) => "it panicked".into(),
    };
    anyhow::anyhow!(
        "the output stage stopped ({why}): recording stopped; the trace file is readable up to its last second"
    )
}

pub async fn stop(r: Recording) -> anyhow::Result<()> {
    let Recording {
        collector: mut c,
        mut ring,
        mut signals,
        dashboard,
        output_thread,
        metrics_server,
        ..
    } = r;
    // The terminal back first: the summary is printed on it.
    let dashboard_failed = dashboard.and_then(|d| d.close().err());
    if c.handoff.gone() {
        drop(c);
        return Err(output_died(output_thread));
    }
    // What is still queued is attributed for a moment (it happened before
    // the stop), then goes out unattributed: the stop is prompt.
    c.handoff.stopping();
    let finish_by = tokio::time::Instant::now() + FINISH_WITHIN;
    let interrupted = async {
        tokio::select! {
            _ = signals.interrupt.recv() => {}
            _ = signals.terminate.recv() => {}
        }
    };
    tokio::pin!(interrupted);
    let (mut batches, mut finish_queued) = (0, false);
    let finished = loop {
        if !finish_queued && c.handoff.flush() {
            // Events already in the ring buffer belong to this recording;
            // a storm that goes on does not hold the stop back.
            if c.drain(ring.get_mut()) || batches >= STOP_BATCHES {
                let console = c.counts(true);
                let file = c.counts(false);
                c.handoff
                    .send(Msg::Finish(Box::new(console), Box::new(file)));
                finish_queued = true;
            } else {
                batches += 1;
                if c.handoff.is_clear() {
                    continue;
                }
            }
        }
        if finish_queued {
            c.handoff.flush();
        }
        if c.handoff.gone() || output_thread.is_finished() {
            break true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = tokio::time::sleep_until(finish_by) => break false,
            // A second Ctrl-C or SIGTERM: do not wait.
            _ = &mut interrupted => break false,
        }
    };
    if !finished {
        anyhow::bail!(
            "the output stage did not finish within {} s of the stop (is stdout read?): \
             exiting without the summary; the trace file is readable up to its last second",
            FINISH_WITHIN.as_secs()
        );
    }
    let sent_finish = finish_queued && c.handoff.is_clear() && !c.handoff.gone();
    drop(c);
    if !sent_finish {
        return Err(output_died(output_thread));
    }
    output_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
    drop(metrics_server);
    match dashboard_failed {
        Some(e) => Err(anyhow::Error::new(e)
            .context("the recording was stopped; its trace file and summary are complete")),
        None => Ok(()),
    }
}

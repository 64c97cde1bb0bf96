//! Talking to a worker: writing a request (and, pipelining, the next one behind it) as the
//! pipe takes it, and splitting its stdout into frames until what the host waits for comes.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::super::child::unread_bytes;
use super::super::process::{Outgoing, Source, Want};
use super::super::stop::Watch;
use super::super::RunnerEvent;
use super::frames::{Exchange, Expect};
use super::WorkerProcess;

impl WorkerProcess {
    /// Talks to the worker until `expect` is met or the worker exits: writes `out`, splits
    /// stdout into frames, and lets the supervised process keep stderr, the exit, cancel and
    /// `watch`'s deadlines.
    pub(super) fn talk(
        &mut self,
        out: &mut Outgoing,
        expect: &mut Expect,
        watch: &mut Watch<'_>,
        events: Option<&async_channel::Sender<RunnerEvent>>,
    ) -> Exchange {
        // When a pipe ended while the worker lived: it may be on its way out (a process closes
        // its pipes as it exits, or just before), so it has the grace period to end by itself.
        let mut pipe_ended_at: Option<Instant> = None;
        loop {
            // Frames already here (from an earlier read) come first.
            if let Some(exchange) = self.frames.take(expect, watch) {
                return exchange;
            }
            if self.frames.over {
                self.process.stdout = None;
            }
            if self.process.exited() {
                return Exchange::Exited;
            }
            if let Some(events) = events {
                watch.send_progress(Instant::now(), events);
            }
            let answering = matches!(expect, Expect::Answer { .. });
            if answering && !out.pending() {
                self.take_ahead();
            }
            let ahead_pending = self.pipeline.ahead_pending();
            let can_write = self.process.stdin.is_some() && !self.process.input_closed();
            let mut want = Want {
                write: (out.pending() || ahead_pending) && can_write,
                also: Vec::new(),
                until: pipe_ended_at.map(|t| t + watch.grace()),
            };
            if let Some(wake) = self.pipeline.wake_fd().filter(|_| answering) {
                want.also.push((Source::Slot, wake));
            }
            let Ok(ready) = self.process.wait(Some(&mut *watch), &want) else {
                // The poll failed: the worker was stopped and killed.
                self.end();
                return Exchange::Exited;
            };
            if ready.has(Source::Input) {
                if want.write {
                    self.write(out);
                } else {
                    // It closed its stdin after the request was written: did it read it
                    // whole? (What it did not read stays countable in the pipe.)
                    let unread = self
                        .process
                        .stdin
                        .as_ref()
                        .and_then(|stdin| unread_bytes(stdin.as_raw_fd()))
                        .unwrap_or(0);
                    if unread > 0 {
                        out.refused = true;
                    }
                }
            }
            if ready.has(Source::Slot) {
                self.pipeline.clear_wake();
            }
            if ready.has(Source::Output) || self.process.exited() {
                // After the exit too: its last frames are in the pipe already.
                self.frames.read(&mut self.process.stdout);
            }
            if watch.stopped().is_none()
                && !self.process.exited()
                && !matches!(expect, Expect::Exit)
            {
                if let Some(exchange) = self.frames.take(expect, watch) {
                    return exchange;
                }
                // Whatever it still says, it can never take this request, or answer. (A pipe
                // also ends when the worker dies: then its exit decides, once it is seen.)
                if (out.refused || self.frames.ended) && self.lives_on() {
                    let since = *pipe_ended_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= watch.grace() {
                        return if out.refused {
                            Exchange::Refused
                        } else {
                            Exchange::StdoutClosed
                        };
                    }
                }
            }
        }
    }

    /// Writes what the pipe takes of `out`, then of the request sent ahead; EPIPE: the worker
    /// closed its stdin before it had the request whole (a worker that exited is judged by its
    /// exit).
    fn write(&mut self, out: &mut Outgoing) {
        let Some(stdin) = self.process.stdin.as_ref() else {
            return;
        };
        let fd = stdin.as_raw_fd();
        if out.write_to(fd).is_err() {
            out.refused = true;
        }
        if !out.pending() {
            self.pipeline.write_ahead(fd);
        }
    }

    /// Whether the worker lives on, not exiting: a pipe of a dying process ends (the kernel
    /// closes its files) a moment before its exit can be seen, and an OOM kill must read as
    /// the kill it is, not as a worker that closed its stdout.
    fn lives_on(&self) -> bool {
        !self.process.exited() && super::super::child::lives_on(self.process.guarded.processor)
    }
}

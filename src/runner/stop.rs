//! What a runner watches while a job runs, whichever way it runs (a process of its own, or a
//! persistent worker): the timeout, cancel requests, the memory limit, the grace period between
//! SIGTERM and SIGKILL, and the pace of progress events. And how a stop, a signal or an exit
//! code becomes a classified failure.

use std::time::{Duration, Instant};

use offload_sdk::protocol::ProgressItem;

use super::child::{resident_bytes, Guarded};
use super::exit::Ending;
use super::remote::{Delivery, STOP_COMMAND_TIMEOUT};
use super::{Control, RunnerEvent};
use crate::job::{JobId, RunLimits};

/// Why the runner stopped a job itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    TimedOut,
    OutputTooLarge,
    /// Resident memory reached this many bytes, over the limit.
    MemoryLimit(u64),
}

/// How often resident memory is sampled when a job has a memory limit.
const MEMORY_SAMPLE: Duration = Duration::from_millis(20);
/// The least time between two progress events of one job.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(30);
/// How often a runner looks whether a remote stop has arrived (the grace period then runs
/// from its arrival, not from the look).
const DELIVERY_CHECK: Duration = Duration::from_millis(50);

/// The deadlines and stop requests of one running job.
pub(super) struct Watch<'a> {
    id: JobId,
    process: Guarded,
    limits: RunLimits,
    control: &'a Control,
    deadline: Option<Instant>,
    stop: Option<Stop>,
    kill_at: Option<Instant>,
    /// A graceful stop still on its way to a remote processor: the grace period starts when
    /// it arrives, so that a slow connection or a loaded host does not use it up.
    delivery: Option<Delivery>,
    next_delivery_check: Instant,
    escalated: bool,
    next_memory_sample: Instant,
    progress: Option<ProgressItem>,
    last_progress: Option<Instant>,
    /// A `Started` event held back until `.1` (see [`Watch::announce_at`]).
    announcement: Option<(RunnerEvent, Instant)>,
}

impl<'a> Watch<'a> {
    /// Starts watching job `id`, run by `job`, from `started`.
    pub(super) fn new(
        id: JobId,
        process: Guarded,
        limits: RunLimits,
        control: &'a Control,
        started: Instant,
    ) -> Self {
        let mut watch = Self {
            id,
            process,
            limits,
            control,
            deadline: limits.timeout.map(|t| started + t),
            stop: None,
            kill_at: None,
            delivery: None,
            next_delivery_check: started,
            escalated: false,
            next_memory_sample: started,
            progress: None,
            last_progress: None,
            announcement: None,
        };
        if control.is_cancelled() {
            watch.cancel();
        }
        watch
    }

    /// Stops the job for `reason` (the first reason wins): SIGKILL at once when output or
    /// memory ran over, else SIGTERM and SIGKILL after the grace period.
    pub(super) fn stop(&mut self, reason: Stop) {
        if self.stop.is_some() {
            return;
        }
        self.stop = Some(reason);
        if matches!(reason, Stop::OutputTooLarge | Stop::MemoryLimit(_)) {
            self.process.kill();
        } else {
            let now = Instant::now();
            self.delivery = self.process.terminate();
            self.kill_at = Some(match self.delivery {
                None => now + self.limits.grace,
                // Until it arrives (see tick): the stop command gives up by then.
                Some(_) => now + STOP_COMMAND_TIMEOUT + DELIVERY_CHECK + self.limits.grace,
            });
            self.next_delivery_check = now + DELIVERY_CHECK;
        }
    }

    /// The queue asked to cancel (or to kill at once).
    pub(super) fn cancel(&mut self) {
        self.stop(Stop::Cancelled);
        if self.control.is_hard() {
            self.process.kill();
        }
    }

    /// The descriptor to poll for cancel requests.
    pub(super) fn control_fd(&self) -> std::os::fd::RawFd {
        self.control.wake_fd()
    }

    /// The control's eventfd was readable.
    pub(super) fn on_control(&mut self) {
        self.control.clear();
        self.cancel();
    }

    /// Acts on the deadlines that have passed while the processor lives.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.stop(Stop::TimedOut);
        }
        if let Some(delivery) = &self.delivery {
            if let Some(arrived) = delivery.settled_at() {
                self.delivery = None;
                if self.kill_at.is_some() {
                    self.kill_at = Some(arrived + self.limits.grace);
                }
            } else if now >= self.next_delivery_check {
                self.next_delivery_check = now + DELIVERY_CHECK;
            }
        }
        if self.kill_at.is_some_and(|t| now >= t) {
            self.process.kill();
            self.escalated = true;
            self.kill_at = None;
        }
        if let Some(limit) = self.limits.max_memory_bytes {
            if now >= self.next_memory_sample {
                self.next_memory_sample = now + MEMORY_SAMPLE;
                if let Some(rss) = resident_bytes(self.process.processor).filter(|rss| *rss > limit)
                {
                    self.stop(Stop::MemoryLimit(rss));
                }
            }
        }
    }

    /// Holds `started` back until `at`, or until the job ends or reports progress, whichever
    /// comes first. A job that ends sooner then costs the main loop one wake-up instead of
    /// two: its `Started` and `Finished` arrive together.
    pub(super) fn announce_at(&mut self, started: RunnerEvent, at: Instant) {
        self.announcement = Some((started, at));
    }

    /// Sends the held-back `Started` event now, if there is one.
    pub(super) fn announce(&mut self, events: &async_channel::Sender<RunnerEvent>) {
        if let Some((started, _)) = self.announcement.take() {
            let _ = events.try_send(started);
        }
    }

    /// When the loop must wake next for a deadline while the processor lives.
    /// The limits it watches.
    pub(super) fn limits(&self) -> RunLimits {
        self.limits
    }

    /// How long a process has between SIGTERM and SIGKILL; also how long a worker that
    /// closed a pipe has to end by itself before it is taken to live on without it.
    pub(super) fn grace(&self) -> Duration {
        self.limits.grace
    }

    pub(super) fn wake_at(&self) -> Option<Instant> {
        [
            self.announcement.as_ref().map(|(_, at)| *at),
            self.deadline.filter(|_| self.stop.is_none()),
            self.kill_at,
            self.delivery.as_ref().map(|_| self.next_delivery_check),
            self.limits
                .max_memory_bytes
                .map(|_| self.next_memory_sample),
            self.progress
                .as_ref()
                .and(self.last_progress)
                .map(|t| t + PROGRESS_INTERVAL),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A progress item arrived; only the latest of a burst is reported.
    pub(super) fn progress(&mut self, item: ProgressItem) {
        self.progress = Some(item);
    }

    /// Reports the latest progress, at most one event per [`PROGRESS_INTERVAL`].
    pub(super) fn send_progress(
        &mut self,
        now: Instant,
        events: &async_channel::Sender<RunnerEvent>,
    ) {
        if self.announcement.as_ref().is_some_and(|(_, at)| now >= *at) {
            self.announce(events);
        }
        if self.progress.is_none()
            || self
                .last_progress
                .is_some_and(|t| now < t + PROGRESS_INTERVAL)
        {
            return;
        }
        if let Some(item) = self.progress.take() {
            self.announce(events);
            self.last_progress = Some(now);
            let _ = events.try_send(RunnerEvent::Progress { id: self.id, item });
        }
    }

    /// Why the runner stopped the job, if it did.
    pub(super) fn stopped(&self) -> Option<Stop> {
        self.stop
    }

    /// How the job ended, for [`Ending::failure`].
    pub(super) fn ending(
        &self,
        exit_code: Option<i32>,
        signal: Option<i32>,
        cpu: Duration,
    ) -> Ending {
        Ending {
            stop: self.stop,
            escalated: self.escalated,
            exit_code,
            signal,
            cpu,
        }
    }
}

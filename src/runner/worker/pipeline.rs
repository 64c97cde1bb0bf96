//! Pipelining, for a worker behind a launcher: while a job runs, the job on deck at the
//! worker's slot is taken and its request written behind the running one's, so that the
//! worker finds it in its stdin when it answers, instead of waiting for a round trip through
//! srun or ssh. The worker still runs one job at a time, in order.

use std::os::fd::RawFd;

use offload_sdk::frame;

use super::super::process::Outgoing;
use super::super::RunRequest;
use super::WorkerProcess;
use crate::job::JobId;

/// Where a pipelining worker takes its next job from.
pub(in crate::runner) struct Pipeline {
    /// Readable when a job was put on deck.
    pub wake: RawFd,
    /// Empties `wake`.
    pub clear: Box<dyn Fn() + Send>,
    /// Takes the job on deck, if any.
    pub take: Box<dyn Fn() -> Option<RunRequest> + Send>,
    /// No job goes ahead once the worker has run this many (it retires after them).
    pub max_jobs: u64,
}

/// A job whose request went (or is going) out ahead of its turn.
pub(super) struct Ahead {
    pub id: JobId,
    pub out: Outgoing,
    /// Until the worker thread takes it, to run it next.
    request: Option<RunRequest>,
}

/// A worker's pipelining: none, or where its jobs come from and the one sent ahead.
#[derive(Default)]
pub(super) struct Pipelining {
    pipeline: Option<Pipeline>,
    pub ahead: Option<Ahead>,
}

impl Pipelining {
    /// The slot's eventfd to watch while a job runs and none is ahead yet.
    pub(super) fn wake_fd(&self) -> Option<RawFd> {
        self.pipeline
            .as_ref()
            .filter(|_| self.ahead.is_none())
            .map(|p| p.wake)
    }

    pub(super) fn clear_wake(&self) {
        if let Some(pipeline) = &self.pipeline {
            (pipeline.clear)();
        }
    }

    /// Whether a request ahead still has bytes to write.
    pub(super) fn ahead_pending(&self) -> bool {
        self.ahead.as_ref().is_some_and(|a| a.out.pending())
    }

    /// Whether the worker could not take the request written ahead (it closed its stdin).
    pub(super) fn ahead_refused(&self) -> bool {
        self.ahead.as_ref().is_some_and(|a| a.out.refused)
    }

    /// How many bytes of the request ahead were written.
    pub(super) fn ahead_sent(&self) -> usize {
        self.ahead.as_ref().map_or(0, |a| a.out.sent)
    }

    /// Writes what the pipe takes of the request ahead.
    pub(super) fn write_ahead(&mut self, fd: RawFd) {
        if let Some(ahead) = self.ahead.as_mut() {
            if ahead.out.write_to(fd).is_err() {
                ahead.out.refused = true;
            }
        }
    }

    /// The request already written for job `id`, if it went ahead (it runs whatever happens).
    pub(super) fn sent_ahead(&mut self, id: JobId) -> Option<Outgoing> {
        match self.ahead.take() {
            Some(ahead) if ahead.id == id => Some(ahead.out),
            other => {
                self.ahead = other;
                None
            }
        }
    }
}

impl WorkerProcess {
    /// Lets this worker take the job on deck while a job runs.
    pub(in crate::runner) fn set_pipeline(&mut self, pipeline: Pipeline) {
        self.pipeline.pipeline = Some(pipeline);
    }

    /// Takes the job on deck to write its request ahead, unless one is ahead already or the
    /// worker retires after the running job.
    pub(super) fn take_ahead(&mut self) {
        let Some(pipeline) = self.pipeline.pipeline.as_ref() else {
            return;
        };
        if self.pipeline.ahead.is_some() || self.process.exited() || self.jobs >= pipeline.max_jobs
        {
            return;
        }
        if let Some(request) = (pipeline.take)() {
            self.pipeline.ahead = Some(Ahead {
                id: request.id,
                out: Outgoing::new(frame::job_head(request.id.0), Some(request.input.clone())),
                request: Some(request),
            });
        }
    }

    /// The job whose request went ahead, to run next (its request stays with this worker).
    pub(in crate::runner) fn next_ahead(&mut self) -> Option<RunRequest> {
        self.pipeline.ahead.as_mut().and_then(|a| a.request.take())
    }

    /// Whether it may take jobs ahead.
    pub(in crate::runner) fn pipelines(&self) -> bool {
        self.pipeline.pipeline.is_some()
    }

    /// Whether a job's request went ahead to this worker.
    pub(in crate::runner) fn has_ahead(&self) -> bool {
        self.pipeline.ahead.is_some()
    }
}

//! One supervised process, whichever way it runs (a one-shot job, or a persistent worker):
//! its descriptors by name, the one `poll(2)` over them (which also keeps the job's
//! deadlines: see [`Supervised::wait`]), its life (running, exited, reaped) and how it ended.
//!
//! Both modes' loops are this loop: they say what they want (to write, which extra
//! descriptors, until when), get back what is ready by name, and handle only what is theirs
//! (one-shot: the input and the result's bytes; a worker: frames). Stderr, the guard's
//! reports (the process's end), the cancel eventfd and the deadlines are handled here, once.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::{Guarded, Spawned, Tail};
use super::guard::{Ended, Report};
use super::stop::{Stop, Watch};

/// An eventfd: one thread signals, another's poll wakes. Owns its descriptor.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes it readable. Never blocks.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }

    /// Makes it unreadable again.
    pub(crate) fn clear(&self) {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our nonblocking eventfd into a live buffer.
        unsafe { libc::read(self.fd(), counter.as_mut_ptr().cast(), 8) };
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// What a loop waits on, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The process's stdin: room to write, or (not writing) its end closed.
    Input,
    /// Its stdout.
    Output,
    /// The progress pipe (one-shot).
    Progress,
    /// The worker's slot: a job on deck, or a request to retire.
    Slot,
}

/// What is ready after [`Supervised::wait`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Ready(u8);

impl Ready {
    fn bit(source: Source) -> u8 {
        1 << source as u8
    }

    pub(super) fn has(self, source: Source) -> bool {
        self.0 & Self::bit(source) != 0
    }

    fn add(&mut self, source: Source) {
        self.0 |= Self::bit(source);
    }
}

/// What a loop wants of one wait.
#[derive(Default)]
pub(super) struct Want {
    /// Room to write to stdin (else stdin is watched only for its end closing).
    pub write: bool,
    /// More descriptors, by name.
    pub also: Vec<(Source, RawFd)>,
    /// Wake by then even if nothing happens (a drain's end, an idle worker's time).
    pub until: Option<Instant>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exit {
    /// The exit code, unless a signal killed it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// CPU time over its whole life (and of the descendants it waited for).
    pub cpu: Duration,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    /// Its guard reported its end (the process and all below it are gone).
    Exited(Ended),
    /// Its end was taken ([`Supervised::end`]).
    Reaped(Exit, Ended),
}

/// The pipes' bytes read per wake-up at most, so that a flood on one cannot starve the rest.
const READ_ROUNDS: usize = 16;

/// A started process, supervised.
pub(super) struct Supervised {
    pub guarded: Guarded,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    stderr: Option<File>,
    /// The worker closed its stdin (POLLERR on our end): not watched any more.
    input_closed: bool,
    /// The tail of stderr kept for messages.
    pub tail: Tail,
    life: Life,
    scratch: Vec<u8>,
}

impl Supervised {
    /// Supervises `spawned`, keeping `tail_bytes` of its stderr.
    pub(super) fn new(spawned: Spawned, tail_bytes: usize) -> (Self, Option<File>) {
        let guarded = spawned.guarded;
        let progress = spawned.progress.map(File::from);
        let supervised = Self {
            stdin: Some(File::from(spawned.stdin)),
            stdout: Some(File::from(spawned.stdout)),
            stderr: Some(File::from(spawned.stderr)),
            input_closed: false,
            tail: Tail::of(&guarded, tail_bytes),
            guarded,
            life: Life::Running,
            scratch: vec![0u8; 64 * 1024],
        };
        (supervised, progress)
    }

    /// Whether its guard reported its end (it and everything below it are gone).
    pub(super) fn exited(&self) -> bool {
        self.life != Life::Running
    }

    /// Whether it closed its stdin.
    pub(super) fn input_closed(&self) -> bool {
        self.input_closed
    }

    /// Whether stderr has ended (one-shot: all of its output is in).
    pub(super) fn quiet(&self) -> bool {
        self.stderr.is_none()
    }

    /// Waits for what `want` says, for the process's exit, for a cancel, or for the next of
    /// `watch`'s deadlines (the running job's, if there is one), whichever comes first; acts on
    /// what is the same in every mode (stderr into the tail, the guard's report of the end, a
    /// cancel, the deadlines: `watch` is ticked here, so that no loop can forget a timeout);
    /// gives what is ready for the mode. An error means the poll itself failed: the process
    /// was stopped and killed.
    pub(super) fn wait(
        &mut self,
        mut watch: Option<&mut Watch<'_>>,
        want: &Want,
    ) -> io::Result<Ready> {
        let now = Instant::now();
        let running = self.life == Life::Running;
        if let Some(watch) = watch.as_deref_mut().filter(|_| running) {
            watch.tick(now);
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6 + want.also.len());
        let mut names: Vec<Option<Source>> = Vec::with_capacity(6 + want.also.len());
        // Adds `fd` (if any) and gives its index in `fds`.
        let mut add = |name: Option<Source>, fd: RawFd, events: libc::c_short| {
            (fd >= 0).then(|| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                names.push(name);
                fds.len() - 1
            })
        };
        if let Some(stdin) = self.stdin.as_ref().filter(|_| !self.input_closed) {
            // Not writing: nothing asked, so only POLLERR (its end closed) can come.
            let events = if want.write { libc::POLLOUT } else { 0 };
            add(Some(Source::Input), stdin.as_raw_fd(), events);
        }
        add(
            Some(Source::Output),
            raw(self.stdout.as_ref()),
            libc::POLLIN,
        );
        let errors = add(None, raw(self.stderr.as_ref()), libc::POLLIN);
        let guard = if running { self.guarded.guard.fd() } else { -1 };
        let exit = add(None, guard, libc::POLLIN);
        let control_fd = watch
            .as_deref()
            .filter(|_| running)
            .map_or(-1, Watch::control_fd);
        let control = add(None, control_fd, libc::POLLIN);
        for (name, fd) in &want.also {
            add(Some(*name), *fd, libc::POLLIN);
        }
        let wake_at = [
            watch
                .as_deref()
                .and_then(Watch::wake_at)
                .filter(|_| running),
            want.until,
        ]
        .into_iter()
        .flatten()
        .min();
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout(wake_at, now),
            )
        };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Ready::default());
            }
            // poll itself failing is not recoverable: stop the job.
            if let Some(watch) = watch {
                watch.stop(Stop::Cancelled);
            }
            self.guarded.kill();
            return Err(err);
        }
        let has = |at: Option<usize>| at.is_some_and(|at| fds[at].revents != 0);
        if has(errors) {
            self.read_stderr();
        }
        if running && has(exit) {
            match self.guarded.guard.report() {
                Some(Report::Ended(ended)) => self.life = Life::Exited(ended),
                Some(_) => {}
                // Nothing more will come from this guard (it broke): the job has ended as
                // killed, or the loop would poll its closed socket for ever.
                None => self.life = Life::Exited(Ended::killed()),
            }
        }
        if let Some(watch) = watch.filter(|_| has(control) && self.life == Life::Running) {
            watch.on_control();
        }
        let mut out = Ready::default();
        for (pollfd, name) in fds.iter().zip(&names) {
            if let (Some(name), true) = (name, pollfd.revents != 0) {
                out.add(*name);
            }
        }
        if out.has(Source::Input) && !want.write {
            // Its end of stdin is closed: the kernel keeps saying so; look no more.
            self.input_closed = true;
        }
        Ok(out)
    }

    /// Reads what stderr has now into the tail.
    pub(super) fn read_stderr(&mut self) {
        let (tail, scratch) = (&mut self.tail, &mut self.scratch);
        if drain(&mut self.stderr, scratch, |chunk| tail.push(chunk)) {
            self.stderr = None;
        }
    }

    /// The peak memory the guard reported at its end, in bytes: of the processor and every
    /// descendant reaped (one-shot runs; a worker measures per job).
    pub(super) fn peak_bytes(&self) -> u64 {
        match self.life {
            Life::Exited(ended) | Life::Reaped(_, ended) => ended.peak_bytes,
            Life::Running => 0,
        }
    }

    /// Waits for its end (killing it first unless it ended by itself) and gives how it ended;
    /// what its group left on stderr is kept, without waiting for leftover writers.
    /// Idempotent.
    pub(super) fn end(&mut self) -> Exit {
        let ended = match self.life {
            Life::Reaped(exit, _) => return exit,
            Life::Exited(ended) => ended,
            Life::Running => {
                // The guard kills the group and whatever was left behind, reaps them, then
                // reports the end (or, if it died, its own end is the job's).
                self.guarded.kill();
                self.guarded.guard.wait_end().unwrap_or_else(Ended::killed)
            }
        };
        let (code, signal) = self.guarded.ending(ended.status);
        let exit = Exit {
            code,
            signal,
            cpu: ended.cpu,
        };
        self.life = Life::Reaped(exit, ended);
        self.stdin = None;
        self.read_stderr();
        self.stdout = None;
        self.stderr = None;
        exit
    }
}

/// Bytes being written to a process's stdin as the pipe takes them: a head of our own, then a
/// job's input as the queue holds it (shared, never copied), with one `writev`. A one-shot
/// job's input has no head; a worker's request has the frame's.
pub(super) struct Outgoing {
    head: Vec<u8>,
    body: Option<Arc<Vec<u8>>>,
    pub sent: usize,
    /// The process closed its stdin (EPIPE): nothing more can be sent.
    pub refused: bool,
}

impl Outgoing {
    pub(super) fn new(head: Vec<u8>, body: Option<Arc<Vec<u8>>>) -> Self {
        Self {
            head,
            body,
            sent: 0,
            refused: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, |b| b.len())
    }

    pub(super) fn pending(&self) -> bool {
        !self.refused && self.sent < self.len()
    }

    /// Writes what the pipe takes; an error means the worker closed its stdin.
    pub(super) fn write_to(&mut self, fd: RawFd) -> io::Result<()> {
        while self.pending() {
            let body: &[u8] = self.body.as_deref().map_or(&[], Vec::as_slice);
            let (head, body) = if self.sent < self.head.len() {
                (&self.head[self.sent..], body)
            } else {
                (&[][..], &body[self.sent - self.head.len()..])
            };
            let slices = [
                libc::iovec {
                    iov_base: head.as_ptr() as *mut libc::c_void,
                    iov_len: head.len(),
                },
                libc::iovec {
                    iov_base: body.as_ptr() as *mut libc::c_void,
                    iov_len: body.len(),
                },
            ];
            // SAFETY: both iovecs point into live buffers of the stated lengths.
            let n = unsafe { libc::writev(fd, slices.as_ptr(), 2) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            self.sent += n as usize;
        }
        self.body = None;
        Ok(())
    }
}

fn raw(file: Option<&File>) -> RawFd {
    file.map_or(-1, AsRawFd::as_raw_fd)
}

/// The `poll(2)` timeout that wakes at `wake_at` (rounded up, so that the loop does not spin
/// just before a deadline); -1, no timeout, without one.
pub(super) fn timeout(wake_at: Option<Instant>, now: Instant) -> libc::c_int {
    wake_at.map_or(-1, |t| {
        let wait = t.saturating_duration_since(now) + Duration::from_micros(500);
        libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX)
    })
}

/// Reads what `file` has now, in at most [`READ_ROUNDS`] reads, into `sink`; true at the end
/// of the pipe (or an error, which ends it too).
pub(super) fn drain(
    file: &mut Option<File>,
    scratch: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> bool {
    let Some(f) = file.as_mut() else {
        return false;
    };
    for _ in 0..READ_ROUNDS {
        match f.read(scratch) {
            Ok(0) => return true,
            Ok(n) => sink(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

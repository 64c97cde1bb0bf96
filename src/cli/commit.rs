//! Where `offload run`'s lines and job log entries go, and in what order.
//!
//! Without a job log, lines go straight to stdout. With `--joblog`, a job is done when its
//! line is on stdout *and* its entry is in the log, and these are two writes to two files:
//! a `kill -9` between them would leave a job printed but not logged (printed again by
//! `--resume`) or logged but not printed (lost). So both are written by the **log writer**,
//! a small process of its own (`offload __log-writer`, this binary again) that the run
//! starts: the run sends it each job as one frame on a pipe (the line and the entry), and it
//! writes the line to stdout, then the entry to the log with one `write(2)`. A frame is
//! acted on only once it has arrived whole. When the run is killed, the pipe ends: the
//! writer finishes the frames it has whole, drops a frame cut short, and exits. So after a
//! `kill -9` of `offload run`, every job is either printed and logged, or neither.
//!
//! The writer ignores SIGINT, SIGTERM, SIGHUP and SIGQUIT (the terminal sends them to the
//! whole process group; the run stops in order and then closes the pipe). It shares the
//! log's open file, and with it the log's lock, so a `--resume` can read the log only once
//! the writer is done. What it does not survive is a kill of both processes at once (of the
//! process group with SIGKILL, or of a cgroup): then the instant between a line and its
//! entry could leave a job printed and not logged, which `--resume` prints again.
//!
//! A `--files` job also sends the entry that names its output before the output is given
//! that name (`joblog::writing_entry`), through the same pipe, so it reaches the log before
//! anything later the run sends.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};

use anyhow::Context as _;

/// The hidden subcommand that runs the log writer.
pub const SUBCOMMAND: &str = "__log-writer";

/// The descriptor the writer finds the log on.
const LOG_FD: i32 = 3;

/// The writer's exit status when stdout is closed (nobody reads the lines any more).
const EXIT_STDOUT_CLOSED: u8 = 3;

/// Where a run's lines and log entries go.
pub enum Sink {
    /// No job log: lines straight to stdout.
    Stdout(std::io::Stdout),
    /// A job log: both through the log writer.
    Writer { child: Child, pipe: ChildStdin },
}

impl Sink {
    /// Lines to stdout, no log.
    pub fn stdout() -> Self {
        Sink::Stdout(std::io::stdout())
    }

    /// Starts the log writer on `log` (an open, locked job log) and this process's stdout.
    pub fn writer(log: &File) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let fd = log.as_raw_fd();
        // This very executable, even if a newer one was installed over it since.
        let exe = std::path::Path::new("/proc/self/exe");
        let mut command = Command::new(if exe.exists() {
            exe.to_path_buf()
        } else {
            std::env::current_exe().context("cannot find offload's own executable")?
        });
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the hook calls only dup2 and fcntl, which are
        // async-signal-safe, on descriptors that exist.
        unsafe {
            command.pre_exec(move || {
                if fd == LOG_FD {
                    // dup2 onto itself would keep close-on-exec.
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, LOG_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = command
            .spawn()
            .context("cannot start the job log's writer")?;
        let pipe = child
            .stdin
            .take()
            .context("the job log's writer has no stdin")?;
        Ok(Sink::Writer { child, pipe })
    }

    /// Prints a job's `line` (a JSON line, newline included) and logs its `entry`, if any,
    /// together. An error means stdout is closed.
    pub fn commit(&mut self, line: &[u8], entry: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                stdout.write_all(line)?;
                stdout.flush()
            }
            Sink::Writer { pipe, .. } => {
                let mut frame = Vec::with_capacity(8 + line.len() + entry.len());
                frame.extend_from_slice(&frame_len(line)?.to_le_bytes());
                frame.extend_from_slice(&frame_len(entry)?.to_le_bytes());
                frame.extend_from_slice(line);
                frame.extend_from_slice(entry);
                pipe.write_all(&frame)
            }
        }
    }

    /// Whether entries go to a job log.
    pub fn logs(&self) -> bool {
        matches!(self, Sink::Writer { .. })
    }

    /// Logs `entry` alone, before anything the run commits after it.
    pub fn log(&mut self, entry: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::Writer { .. } => self.commit(b"", entry),
        }
    }

    /// Waits for everything committed to be written (the writer's end).
    pub fn finish(self) {
        if let Sink::Writer { mut child, pipe } = self {
            drop(pipe);
            let _ = child.wait();
        }
    }
}

fn frame_len(part: &[u8]) -> std::io::Result<u32> {
    u32::try_from(part.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a line of 4 GiB or more cannot be logged",
        )
    })
}

/// The log writer: frames from stdin to stdout and the log (descriptor 3) until stdin ends.
pub fn serve() -> anyhow::Result<ExitCode> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to "ignore".
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(LOG_FD, libc::F_GETFD) } == -1 {
        anyhow::bail!("{SUBCOMMAND} is offload run's own: it needs the job log on descriptor 3");
    }
    // SAFETY: descriptor 3 is open (checked) and this process's to own from now on.
    let log = unsafe { File::from_raw_fd(LOG_FD) };
    // Stdout unbuffered: each line goes out in one write, as soon as it comes.
    // SAFETY: descriptor 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut stdin = std::io::stdin().lock();
    let mut warned = false;
    loop {
        let mut head = [0u8; 8];
        // The end of the pipe, or a frame cut short by the run's death: nothing more to do.
        if stdin.read_exact(&mut head).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        let [a, b, c, d, e, f, g, h] = head;
        let line_len = u32::from_le_bytes([a, b, c, d]) as usize;
        let entry_len = u32::from_le_bytes([e, f, g, h]) as usize;
        let mut frame = Vec::new();
        let whole = (&mut stdin)
            .take((line_len + entry_len) as u64)
            .read_to_end(&mut frame)
            .is_ok_and(|n| n == line_len + entry_len);
        if !whole {
            return Ok(ExitCode::SUCCESS);
        }
        let (line, entry) = frame.split_at(line_len);
        if !line.is_empty() && stdout.write_all(line).is_err() {
            // Nobody reads the lines: the run hears of it when its next frame finds the pipe
            // closed, and stops. This job is neither printed nor logged.
            return Ok(ExitCode::from(EXIT_STDOUT_CLOSED));
        }
        if entry.is_empty() {
            continue;
        }
        // Best effort: a full disk must not stop the jobs (the job is printed; a --resume
        // runs it again).
        if let Err(err) = super::joblog::append_to(&log, entry) {
            if !warned {
                eprintln!("offload: cannot write the job log: {err}");
                warned = true;
            }
        }
    }
}

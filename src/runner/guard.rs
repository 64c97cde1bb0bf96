//! The guard (`guard.c`) on the host's side: the embedded executable, kept in a sealed memfd so
//! that an embedder needs nothing installed, and the status lines it writes.
//!
//! Every processor process, one-shot or persistent, runs below a guard of its own: the host's
//! child is the guard, which forks the processor from its few pages (so the processor's peak
//! memory is its own, not the host's), forwards SIGTERM to the processor's group, takes
//! SIGUSR2 as "kill the job now", and as a child subreaper kills whatever the processor left
//! behind (a `setsid` daemon included) before it exits as the processor did.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The guard executable, built by build.rs from `guard.c`.
static GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/offload-guard"));

/// The signal that tells a guard to kill its job now (it is also the guard's parent-death
/// signal, so that the job goes with the host). SIGTERM is forwarded as it is.
pub(crate) const KILL_JOB: libc::c_int = libc::SIGUSR2;

/// `memfd_create`'s flag for an executable memfd (Linux 6.3; older kernels refuse the flag,
/// and their memfds are executable anyway).
const MFD_EXEC: libc::c_uint = 0x0010;

/// A descriptor of the guard executable for `execveat(fd, "", .., AT_EMPTY_PATH)`, created at
/// the first call; an error says why it could not be.
pub(crate) fn executable() -> io::Result<RawFd> {
    static FD: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    match FD.get_or_init(|| load().map_err(|err| err.to_string())) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(why) => Err(io::Error::other(format!(
            "cannot prepare offload's guard process: {why}"
        ))),
    }
}

fn load() -> io::Result<OwnedFd> {
    let name: &CStr = c"offload-guard";
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name returns a new descriptor or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(GUARD)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// What a guard said on its status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The processor runs, with this pid (its process group too).
    Running(u32),
    /// The processor could not be executed: this errno.
    Failed(i32),
    /// The processor could not join its cgroup: this errno.
    NoCgroup(i32),
}

/// Waits (up to `timeout`) for a guard's first status line on `pipe`, a blocking descriptor:
/// the processor's pid, or why it could not start. `None`: the guard said nothing (it died).
pub(crate) fn first_status(pipe: &mut File, timeout: Duration) -> Option<Status> {
    let until = Instant::now() + timeout;
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let left = until.saturating_duration_since(Instant::now());
        let mut pollfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pollfd, 1, ms) } <= 0 {
            return None;
        }
        match pipe.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    let (word, number) = parse(&line)?;
    match word {
        "pid" => Some(Status::Running(u32::try_from(number).ok()?)),
        "error" => Some(Status::Failed(i32::try_from(number).ok()?)),
        "cgroup" => Some(Status::NoCgroup(i32::try_from(number).ok()?)),
        _ => None,
    }
}

/// The peak resident memory in the guard's last status line (`end K`, K in KiB) among the
/// bytes read from its status pipe after the first line, in bytes.
pub(crate) fn peak_bytes(rest: &[u8]) -> Option<u64> {
    rest.split(|b| *b == b'\n')
        .filter_map(parse)
        .find(|(word, _)| *word == "end")
        .map(|(_, kib)| kib.saturating_mul(1024))
}

fn parse(line: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let (word, number) = text.split_once(' ')?;
    Some((word, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse(b"pid 123\n"), Some(("pid", 123)));
        assert_eq!(peak_bytes(b"end 2048\n"), Some(2 << 20));
        assert_eq!(peak_bytes(b""), None);
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn the_embedded_guard_is_loaded_once() {
        let first = executable().expect("a memfd");
        assert_eq!(executable().expect("the same"), first);
    }
}

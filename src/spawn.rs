//! Starting a processor without `fork`: `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does,
//! plus what `posix_spawn` cannot do: `PR_SET_PDEATHSIG`, passing exactly the descriptors
//! wanted, and executing the guard from memory. The child executes the guard
//! (`runner/guard.c`), which forks the processor itself: a `CLONE_VM` child inherits the
//! host's peak resident memory into its own at `execve`, and a processor forked from the
//! guard's few pages does not.
//!
//! Why not `std::process::Command` with `pre_exec`: a `pre_exec` hook forces a real `fork`, which
//! copies the page tables of the whole host. In a GTK app that is hundreds of megabytes of
//! mappings: each spawn then costs milliseconds, holds the host's memory-map lock while it
//! copies, and leaves every page copy-on-write, so the main thread takes page faults on whatever
//! it touches next. Measured with the app's stall probe, that alone turned a smooth demo into
//! one with 100 ms stalls. A `CLONE_VFORK` child shares the host's memory until it calls
//! `execve`, so nothing is copied and the parent's pages stay its own.
//!
//! The child runs on its own small stack, touches only data prepared before the clone, and
//! calls only async-signal-safe functions; it reports an `execve` failure by writing the error
//! number into that shared data, which the parent reads once the child has exited.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes of stack for the child until `execve`.
const CHILD_STACK: usize = 64 * 1024;

/// Descriptors the child gets: its stdio, the guard's status pipe and, if any, the progress
/// pipe (both keep their numbers).
pub(crate) struct ChildFds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub status: RawFd,
    pub progress: Option<RawFd>,
    /// More descriptors that keep their numbers: bwrap's `--info-fd` and system-call filter,
    /// for a sandboxed processor.
    pub pass: Vec<RawFd>,
}

/// How the child runs, besides its descriptors.
pub(crate) struct ChildSettings {
    /// Added to the child's nice value (0: as the host).
    pub nice: i32,
    /// `RLIMIT_CPU` in seconds: SIGXCPU at this many, SIGKILL a second later.
    pub cpu_limit_secs: Option<u64>,
    /// `RLIMIT_DATA` in bytes.
    pub data_limit_bytes: Option<u64>,
    /// A `cgroup.procs` file the processor joins before it runs (the guard's `--cgroup`).
    pub cgroup_procs: Option<std::path::PathBuf>,
}

/// Everything the child reads, prepared before the clone.
struct ChildPlan {
    /// The guard executable (a memfd), run with `execveat`.
    guard: RawFd,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    fds: ChildFds,
    nice: i32,
    cpu_limit_secs: Option<u64>,
    data_limit_bytes: Option<u64>,
    host: libc::pid_t,
    /// Written by the child when it fails before or at `execve`.
    error: i32,
}

/// Starts `program` with `args` and exactly the environment `env` below a guard of its own:
/// the guard leads a new process group and gets `KILL_JOB` when the calling thread exits; the
/// processor leads a group of its own. Returns the guard's pid; the guard reports the
/// processor's on the status pipe.
pub(crate) fn spawn(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    env: &[(impl AsRef<OsStr>, impl AsRef<OsStr>)],
    fds: ChildFds,
    settings: &ChildSettings,
) -> io::Result<libc::pid_t> {
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let guard = crate::runner::guard::executable()?;
    let program_c = cstring(program.as_os_str().as_bytes())?;
    let mut strings = vec![
        cstring(b"offload-guard")?,
        cstring(fds.status.to_string().as_bytes())?,
    ];
    if let Some(procs) = &settings.cgroup_procs {
        strings.push(cstring(b"--cgroup")?);
        strings.push(cstring(procs.as_os_str().as_bytes())?);
    }
    strings.push(program_c);
    for arg in args {
        strings.push(cstring(arg.as_ref().as_bytes())?);
    }
    let argc = strings.len();
    for (key, value) in env {
        let mut entry = key.as_ref().as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_ref().as_bytes());
        strings.push(cstring(&entry)?);
    }
    let pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    let mut argv = pointers[..argc].to_vec();
    argv.push(std::ptr::null());
    let mut envp = pointers[argc..].to_vec();
    envp.push(std::ptr::null());

    let mut plan = ChildPlan {
        guard,
        argv,
        envp,
        fds,
        nice: settings.nice,
        cpu_limit_secs: settings.cpu_limit_secs,
        data_limit_bytes: settings.data_limit_bytes,
        // SAFETY: getpid cannot fail.
        host: unsafe { libc::getpid() },
        error: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down on every Linux architecture we run on; keep its top 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;

    // SAFETY: all signals are blocked around the clone so that no handler of the host runs in
    // the child, which shares the host's memory; the mask is restored right after.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut plan).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_error);
        }
        pid
    };
    // With CLONE_VFORK we resume only once the child has called execve or exited, so `plan`
    // and `stack` are no longer in use.
    drop(stack);
    // SAFETY: the child has stopped using `plan`; read the error it may have left.
    let error = unsafe { std::ptr::read_volatile(&raw const plan.error) };
    drop(strings);
    if error != 0 {
        // Reap the child that failed to exec.
        // SAFETY: waiting for our own child.
        unsafe {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(pid)
}

/// The child's side, between clone and exec. Async-signal-safe calls only; no allocation.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildPlan, alive and untouched until we exec or exit.
    let plan = unsafe { &mut *arg.cast::<ChildPlan>() };
    // SAFETY: each call below is async-signal-safe and works on this process's own state.
    unsafe {
        let fail = |plan: &mut ChildPlan| -> ! {
            std::ptr::write_volatile(&raw mut plan.error, *libc::__errno_location());
            libc::_exit(127)
        };
        // Handlers installed by the host would point into its code: reset them to the default.
        // SIGPIPE too, which Rust programs ignore but processors should not inherit ignored.
        for signal in 1..libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && (current.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
                && current.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) == -1 {
            fail(plan);
        }
        if let Some(secs) = plan.cpu_limit_secs {
            let limit = libc::rlimit {
                rlim_cur: secs as libc::rlim_t,
                rlim_max: secs.saturating_add(1) as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &limit) == -1 {
                fail(plan);
            }
        }
        if let Some(bytes) = plan.data_limit_bytes {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) == -1 {
                fail(plan);
            }
        }
        if plan.nice != 0 {
            // Best effort: a lower priority is a courtesy, not a requirement.
            libc::nice(plan.nice);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, crate::runner::guard::KILL_JOB) == -1 {
            fail(plan);
        }
        // The host may have died before prctl took effect.
        if libc::getppid() != plan.host {
            libc::_exit(127);
        }
        let fds = &plan.fds;
        for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            if libc::dup2(from, to) == -1 {
                fail(plan);
            }
        }
        // Every descriptor from 3 up closes at exec, except the status and progress pipes.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
        if libc::fcntl(plan.fds.status, libc::F_SETFD, 0) == -1 {
            fail(plan);
        }
        for keep in plan.fds.progress.iter().chain(&plan.fds.pass).copied() {
            if libc::fcntl(keep, libc::F_SETFD, 0) == -1 {
                fail(plan);
            }
        }
        let empty: libc::sigset_t = {
            let mut set = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            set
        };
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_execveat,
            plan.guard,
            c"".as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(plan)
    }
}

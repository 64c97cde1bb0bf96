//! Starting a guard (`runner/guard.c`) without `fork`: `clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn` does, plus what `posix_spawn` cannot do: `PR_SET_PDEATHSIG`, passing exactly the
//! one descriptor wanted, and executing the guard from memory. A thread starts a guard once
//! and keeps it (`runner/guard.rs`); the guard forks the thread's processors from its own few
//! pages: a `CLONE_VM` child inherits the host's peak resident memory into its own at
//! `execve`, and a processor forked from the guard does not.
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

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

/// Bytes of stack for the child until `execve`.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child reads, prepared before the clone.
struct ChildPlan {
    /// The guard executable (a memfd), run with `execveat`.
    guard: RawFd,
    /// The guard's end of its socket, which it keeps (under the same number).
    socket: RawFd,
    /// `/dev/null`, the guard's stdio.
    null: RawFd,
    argv: [*const libc::c_char; 4],
    envp: [*const libc::c_char; 1],
    host: libc::pid_t,
    /// Written by the child when it fails before or at `execve`.
    error: i32,
}

/// `/dev/null`, opened once (close-on-exec).
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<Result<std::fs::File, String>> = OnceLock::new();
    match NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|err| err.to_string())
    }) {
        Ok(file) => Ok(file.as_raw_fd()),
        Err(why) => Err(io::Error::other(format!("cannot open /dev/null: {why}"))),
    }
}

/// Starts the guard executable `guard` as `offload-guard --serve SOCKET`, serving the calling
/// thread on `socket` (which it gets under that number): it leads a new process group, has
/// /dev/null for stdio and an empty environment, and gets `KILL_JOB` when the calling thread
/// exits. Returns its pid.
pub(crate) fn start_guard(guard: RawFd, socket: RawFd) -> io::Result<libc::pid_t> {
    let number = std::ffi::CString::new(socket.to_string()).map_err(io::Error::other)?;
    let mut plan = ChildPlan {
        guard,
        socket,
        null: dev_null()?,
        argv: [
            c"offload-guard".as_ptr(),
            c"--serve".as_ptr(),
            number.as_ptr(),
            std::ptr::null(),
        ],
        envp: [std::ptr::null()],
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
    drop(number);
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
        if libc::prctl(libc::PR_SET_PDEATHSIG, crate::runner::guard::KILL_JOB) == -1 {
            fail(plan);
        }
        // The host may have died before prctl took effect.
        if libc::getppid() != plan.host {
            libc::_exit(127);
        }
        for to in 0..3 {
            if libc::dup2(plan.null, to) == -1 {
                fail(plan);
            }
        }
        // Every descriptor from 3 up closes at exec, except the guard's socket.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
        if libc::fcntl(plan.socket, libc::F_SETFD, 0) == -1 {
            fail(plan);
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

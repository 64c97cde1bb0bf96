//! `offload-diag`: a diagnostic processor for tests and benchmarks.
//!
//! It echoes its input's `echo` field, sleeps, burns CPU, reports progress, records when it
//! started and finished, and misbehaves on request (`fail`), so that every outcome the host
//! must classify can be produced by a real process.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use offload_sdk::{Context, Error, Processor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DiagInput {
    /// Returned unchanged in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    echo: Option<Value>,
    /// Sleep this long.
    #[serde(default)]
    sleep_ms: u64,
    /// Then keep one core busy until the process has used this much CPU time.
    #[serde(default)]
    burn_ms: u64,
    /// Report this many progress items, spread over the sleep and the burn.
    #[serde(default)]
    progress_steps: u32,
    /// Write this text to stderr first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<String>,
    /// Print this line with `println!` (to stdout, where a careless processor prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    print: Option<String>,
    /// Add a byte string of this many bytes to the result (field `filler`).
    #[serde(default)]
    output_bytes: usize,
    /// Allocate and touch this many bytes, then free them and answer: a known peak.
    #[serde(default)]
    hold_bytes: usize,
    /// Try each of these and say how it went, in `probes` (for sandbox tests): "ok", or the
    /// error. `connect:HOST:PORT`, `read:PATH`, `write:PATH`; escapes: `remount:PATH`
    /// (read-write), `mount:PATH` (a tmpfs there), `kill:PID` (SIGKILL), `signal:PID` (signal
    /// 0: can it reach it), `cmdline:PID` (read its command line), `keyctl` (its session key
    /// ring), `unshare` (a user namespace); and `status:NAME` (the line of
    /// /proc/self/status, as "NAME:\tVALUE"), `processes` (how many it can see).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    probe: Vec<String>,
    /// Start a daemon (a `sleep 3600` that left the job's session with `setsid`, after a
    /// double fork) and answer with its pid (`daemon_pid`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    daemon: bool,
    /// Misbehave after the sleep and burn: see [`fault`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fail: Option<String>,
    /// Report the open file descriptors and the environment in the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    inspect: bool,
}

#[derive(Debug, Default, Serialize)]
struct DiagOutput {
    echo: Option<Value>,
    pid: u32,
    /// When the work began and ended, in nanoseconds since the Unix epoch.
    started_ns: u64,
    finished_ns: u64,
    /// With `inspect`: the descriptors open when the work began.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_fds: Option<Vec<i32>>,
    /// With `inspect`: the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<std::collections::BTreeMap<String, String>>,
    /// With `output_bytes`: that many bytes.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    filler: Option<Vec<u8>>,
    /// With `daemon`: the daemon's pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon_pid: Option<u32>,
    /// With `probe`: "ok", or the error, for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    probes: Vec<String>,
}

/// The open file descriptors, found without opening any (so none is counted by mistake).
fn open_fds() -> Vec<i32> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    (0..4096)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// CPU time used by this process so far.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn diag(input: DiagInput, ctx: &mut Context) -> Result<DiagOutput, Error> {
    let started_ns = now_ns();
    let open_fds = input.inspect.then(open_fds);
    let env = input.inspect.then(|| std::env::vars().collect());
    if let Some(text) = &input.stderr {
        eprint!("{text}");
    }
    if let Some(text) = &input.print {
        println!("{text}");
    }
    if input.hold_bytes > 0 {
        hold(input.hold_bytes)?;
    }
    let daemon_pid = if input.daemon {
        let pid = start_daemon()?;
        // Also on stderr, for a job that then fails (its stderr tail says it).
        eprintln!("offload-diag: daemon {pid}");
        Some(pid)
    } else {
        None
    };
    let steps = input.progress_steps.max(1);
    let sleep_step = Duration::from_millis(input.sleep_ms) / steps;
    let burn_step = Duration::from_millis(input.burn_ms) / steps;
    let burn_start = cpu_time();
    // A job that neither sleeps nor burns does not watch for cancellation: SIGTERM kills it
    // at once, as it kills any processor that never asks.
    let watches = input.sleep_ms > 0 || input.burn_ms > 0;
    for step in 0..steps {
        if watches {
            ctx.check_cancelled()?;
        }
        std::thread::sleep(sleep_step);
        let until = burn_start + burn_step * (step + 1);
        let mut x = 0u64;
        while cpu_time() < until {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if input.progress_steps > 0 {
            let fraction = f64::from(step + 1) / f64::from(steps);
            ctx.progress_message(fraction, format!("step {} of {steps}", step + 1));
        }
    }
    if let Some(how) = &input.fail {
        fault(how)?;
    }
    Ok(DiagOutput {
        echo: input.echo,
        pid: std::process::id(),
        started_ns,
        finished_ns: now_ns(),
        open_fds,
        env,
        filler: (input.output_bytes > 0).then(|| vec![b'f'; input.output_bytes]),
        daemon_pid,
        probes: input.probe.iter().map(|p| probe(p)).collect(),
    })
}

/// Tries what `what` says: "ok", or why not.
fn probe(what: &str) -> String {
    let (action, target) = what.split_once(':').unwrap_or((what, ""));
    let outcome = match action {
        "connect" => target
            .parse::<std::net::SocketAddr>()
            .map_err(|err| err.to_string())
            .and_then(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map(drop)
                    .map_err(|err| err.to_string())
            }),
        "read" => std::fs::read(target).map(drop).map_err(|e| e.to_string()),
        "write" => std::fs::write(target, b"diag").map_err(|e| e.to_string()),
        "status" => {
            return std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find(|l| l.split(':').next() == Some(target))
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| format!("error: no {target} in /proc/self/status"))
        }
        "processes" => {
            return std::fs::read_dir("/proc")
                .map(|dir| {
                    dir.flatten()
                        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                        .count()
                        .to_string()
                })
                .unwrap_or_else(|e| format!("error: {e}"))
        }
        "cmdline" => std::fs::read(format!("/proc/{target}/cmdline"))
            .map(drop)
            .map_err(|e| e.to_string()),
        "kill" | "signal" => target
            .parse::<libc::pid_t>()
            .map_err(|e| e.to_string())
            .and_then(|pid| {
                let signal = if action == "kill" { libc::SIGKILL } else { 0 };
                // SAFETY: kill has no memory preconditions; what it may reach is the test.
                os_result(unsafe { libc::kill(pid, signal) })
            }),
        "remount" | "mount" => std::ffi::CString::new(target)
            .map_err(|e| e.to_string())
            .and_then(|path| {
                let (source, kind, flags) = if action == "remount" {
                    (c"none", std::ptr::null(), libc::MS_REMOUNT)
                } else {
                    (c"tmpfs", c"tmpfs".as_ptr(), 0)
                };
                // SAFETY: valid C strings (or null) for the duration of the call.
                os_result(unsafe {
                    libc::mount(
                        source.as_ptr(),
                        path.as_ptr(),
                        kind,
                        flags,
                        std::ptr::null(),
                    )
                })
            }),
        "keyctl" => {
            const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
            const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
            // SAFETY: a plain system call with integer arguments.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_GET_KEYRING_ID,
                    KEY_SPEC_SESSION_KEYRING,
                    1,
                )
            };
            os_result(if r < 0 { -1 } else { 0 })
        }
        // SAFETY: unshare has no memory preconditions.
        "unshare" => os_result(unsafe { libc::unshare(libc::CLONE_NEWUSER) }),
        other => Err(format!("unknown probe {other:?}")),
    };
    outcome.map_or_else(|err| format!("error: {err}"), |()| "ok".to_owned())
}

/// A system call's -1 as its error.
fn os_result(r: libc::c_int) -> Result<(), String> {
    if r == -1 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(())
    }
}

/// Allocates and touches `size` bytes, then frees them.
fn hold(size: usize) -> Result<(), Error> {
    let mut block: Vec<u8> = Vec::new();
    block
        .try_reserve_exact(size)
        .map_err(|err| Error::failed(format!("cannot allocate {size} bytes: {err}")))?;
    block.resize(size, 1);
    std::hint::black_box(&block);
    Ok(())
}

/// Starts `sleep 3600` in a session of its own, its parent (a shell) gone: a daemon, as a
/// double fork makes one. Returns its pid.
fn start_daemon() -> Result<u32, Error> {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!",
        ])
        .output()
        .map_err(|err| Error::failed(format!("cannot start sh: {err}")))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::failed("the daemon's pid did not come back"))
}

/// Misbehaves as asked. Returns only for faults that are not recognised.
fn fault(how: &str) -> Result<(), Error> {
    let (name, arg) = how.split_once(':').unwrap_or((how, ""));
    let number = |default: u64| arg.parse::<u64>().unwrap_or(default);
    let mut out = std::io::stdout().lock();
    match name {
        // A structured error through the SDK: exit 1 with an error report.
        "error" => Err(Error::failed(if arg.is_empty() {
            "asked to fail"
        } else {
            arg
        })),
        "exit" => {
            eprintln!("offload-diag: exiting with code {}", number(3));
            std::process::exit(i32::try_from(number(3)).unwrap_or(3))
        }
        "panic" => panic!("asked to panic"),
        // SAFETY: raising a signal on ourselves; the default action ends the process.
        "abort" => unsafe {
            libc::raise(libc::SIGABRT);
            unreachable!("SIGABRT returned")
        },
        "segv" => unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
            unreachable!("SIGSEGV returned")
        },
        "not_cbor" => raw_exit(&mut out, b"\xff\xfe this is not CBOR"),
        // The start of a 10-byte text with only 3 bytes of it.
        "truncated" => raw_exit(&mut out, &[0x6a, b'a', b'b', b'c']),
        "two_items" => raw_exit(&mut out, &[0x01, 0x02]),
        "trailing" => raw_exit(&mut out, &[0x01, b'x', b'y', b'z']),
        "flood_stdout" => flood(&mut out, number(1 << 30)),
        "flood_stderr" => flood(&mut std::io::stderr().lock(), number(1 << 30)),
        // Allocate and touch N bytes, then wait: for memory limits.
        "alloc" => {
            let size = usize::try_from(number(1 << 30)).unwrap_or(usize::MAX);
            let mut block: Vec<u8> = Vec::new();
            block
                .try_reserve_exact(size)
                .map_err(|err| Error::failed(format!("cannot allocate {size} bytes: {err}")))?;
            // SAFETY: `size` bytes were reserved above; every one is written before set_len.
            unsafe {
                std::ptr::write_bytes(block.as_mut_ptr(), 1, size);
                block.set_len(size);
            }
            std::hint::black_box(&block);
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        // Keep a core busy forever: for CPU-time limits.
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "ignore_term" => {
            // SAFETY: replacing a signal disposition with SIG_IGN.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "grandchild" => {
            // A child that outlives us and holds our stdout and stderr open.
            std::process::Command::new("sleep")
                .arg("3600")
                .spawn()
                .map_err(|err| Error::failed(format!("cannot start sleep: {err}")))?;
            Ok(())
        }
        other => Err(Error::invalid_input(format!(
            "unknown fault {other:?}: use error, exit:N, panic, abort, segv, not_cbor, truncated, \
             two_items, trailing, flood_stdout:N, flood_stderr:N, alloc:N, spin, hang, \
             ignore_term or grandchild"
        ))),
    }
}

fn raw_exit(out: &mut impl Write, bytes: &[u8]) -> ! {
    let _ = out.write_all(bytes).and_then(|()| out.flush());
    std::process::exit(0)
}

fn flood(out: &mut impl Write, bytes: u64) -> ! {
    let chunk = vec![b'x'; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        if out.write_all(&chunk[..n]).is_err() {
            std::process::exit(1);
        }
        left -= n as u64;
    }
    std::process::exit(0)
}

fn main() -> ExitCode {
    Processor::new(
        "diag",
        "Diagnostics: echoes, sleeps, burns CPU, reports progress and fails on request",
    )
    .version(env!("CARGO_PKG_VERSION"))
    .example(&DiagInput {
        echo: Some(Value::Text("hello".into())),
        sleep_ms: 100,
        progress_steps: 4,
        ..DiagInput::default()
    })
    // What that example gives (the pid and the times vary from run to run).
    .example_output(&DiagOutput {
        echo: Some(Value::Text("hello".into())),
        pid: 4242,
        started_ns: 1_795_000_000_000_000_000,
        finished_ns: 1_795_000_000_100_000_000,
        ..DiagOutput::default()
    })
    .run(diag)
}

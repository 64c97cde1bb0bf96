//! Shared helpers for the integration tests: where the binaries are, a main context per test,
//! and a look at the process table.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

use offload::{Job, Processor};

/// The directory cargo built the binaries into (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let offload = PathBuf::from(env!("CARGO_BIN_EXE_offload"));
    offload
        .parent()
        .expect("offload has a parent directory")
        .to_path_buf()
}

/// A built processor executable, e.g. `bin("offload-diag")`.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build every crate first with `cargo build --workspace` (dev/test does)",
        path.display()
    );
    path
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A job for the diagnostic processor.
pub fn diag_job() -> Job {
    Job::new(Processor::at(bin("offload-diag")))
}

/// Runs `make_future` to completion on a fresh main context that is this thread's default, so
/// that tests running in parallel threads do not share one.
pub fn on_main_context<F: Future>(make_future: impl FnOnce() -> F) -> F::Output {
    let context = glib::MainContext::new();
    context
        .with_thread_default(|| context.block_on(make_future()))
        .expect("the new context can be made this thread's default")
}

/// Runs `inputs` as jobs of `job` on a fresh queue of `parallel` slots (with `settings` for
/// its workers, if given), all submitted at once; gives every outcome in input order.
pub fn run_jobs(
    job: &Job,
    inputs: &[serde_json::Value],
    parallel: usize,
    settings: Option<offload::WorkerSettings>,
) -> Vec<offload::Finished<ciborium::Value>> {
    on_main_context(|| async {
        let queue = offload::Queue::with_max_running(parallel);
        if let Some(settings) = settings {
            queue.set_worker_settings(settings);
        }
        let handles: Vec<_> = inputs
            .iter()
            .map(|input| {
                queue
                    .submit::<_, ciborium::Value>(job, input)
                    .expect("submit")
            })
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.finished().await);
        }
        out
    })
}

/// [`run_jobs`] on a thread of its own, waited for at most `bound`: `None` if the jobs did not
/// all end by then (a hang detector with a generous bound, not a timing).
pub fn run_jobs_within(
    bound: std::time::Duration,
    job: &Job,
    inputs: &[serde_json::Value],
    parallel: usize,
) -> Option<Vec<offload::Finished<ciborium::Value>>> {
    let (job, inputs) = (job.clone(), inputs.to_vec());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(run_jobs(&job, &inputs, parallel, None));
    });
    finished.recv_timeout(bound).ok()
}

/// Waits on the main context for `duration`.
pub async fn sleep(duration: std::time::Duration) {
    glib::timeout_future(duration).await;
}

/// One row of the process table.
#[derive(Debug, Clone, Copy)]
pub struct ProcessInfo {
    pub pid: u32,
    /// R, S, D, Z (zombie: dead, not yet reaped by its parent), ...
    pub state: char,
    pub parent: u32,
    pub group: u32,
}

/// Every live process (zombies included), read from /proc.
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            stat(pid).map(|(info, _)| info)
        })
        .collect()
}

/// A process's row and its command name, read together from one /proc/PID/stat: a name read
/// apart from its row may be of a later moment (a guard's child that has since executed its
/// processor and left the guard's process group).
pub fn stat(pid: u32) -> Option<(ProcessInfo, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // state, parent, process group, ...
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        ProcessInfo {
            pid,
            state: fields.first()?.chars().next()?,
            parent: fields.get(1)?.parse().ok()?,
            group: fields.get(2)?.parse().ok()?,
        },
        comm,
    ))
}

/// Every live process below `pid` (its children, theirs, and so on).
pub fn descendants(pid: u32) -> Vec<ProcessInfo> {
    let all = processes();
    let mut found: Vec<ProcessInfo> = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.parent == parent && p.state != 'Z') {
            found.push(*p);
            parents.push(p.pid);
        }
    }
    found
}

/// The processors running below `host` (its descendants, guards left out), as a name prefix
/// of their command says.
pub fn processors_below(host: u32, comm_prefix: &str) -> Vec<ProcessInfo> {
    descendants(host)
        .into_iter()
        .filter_map(|p| stat(p.pid))
        .filter(|(_, comm)| comm.starts_with(comm_prefix) && !comm.starts_with("offload-guard"))
        .map(|(info, _)| info)
        .collect()
}

/// Every running process whose process group is `pgid`. Zombies are left out: they are dead,
/// and an orphaned grandchild's zombie is for init to reap, not for offload.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.group == pgid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// The direct children of this process (the test binary) that are zombies: dead but not reaped.
///
/// Zombies that stay: a child another test of this binary runs at the same time may be a
/// zombie for the moment between its end and its reaping, so only those that are zombies in
/// every look over `SETTLE` count (a leaked one stays for ever); it returns as soon as none is.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let now = || -> Vec<u32> {
        processes()
            .into_iter()
            .filter(|p| p.parent == me && p.state == 'Z')
            .map(|p| p.pid)
            .collect()
    };
    let until = std::time::Instant::now() + SETTLE;
    let mut lasting = now();
    while !lasting.is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let seen = now();
        lasting.retain(|pid| seen.contains(pid));
    }
    lasting
}

/// How long a test waits for what should already have happened or is about to (a process
/// group gone after its job ended, a process dead after its host): a margin for a loaded
/// machine, not a figure that offload promises. Waits end as soon as the thing happens.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Polls until `pgid` has no process left, up to `timeout`; returns what is left.
pub fn wait_group_gone(pgid: u32, timeout: std::time::Duration) -> Vec<u32> {
    let until = std::time::Instant::now() + timeout;
    loop {
        let left = processes_in_group(pgid);
        if left.is_empty() || std::time::Instant::now() > until {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `offload` with the built processors first on PATH.
pub fn offload() -> Command {
    let mut command = Command::new(bin("offload"));
    command.env("PATH", path_with_bins());
    command
}

/// PATH with the build directory in front.
pub fn path_with_bins() -> std::ffi::OsString {
    let mut dirs = vec![bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries are valid")
}

/// Starts `command` with piped stdio and writes `input` to its stdin from another thread (so a
/// large output cannot deadlock the pipes), then closes stdin.
pub fn spawn_with_input(mut command: Command, input: &[u8]) -> std::process::Child {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        use std::io::Write;
        // A processor may exit without reading all of it.
        let _ = pipe.write_all(&input);
    });
    child
}

/// Runs `command` with `input` on stdin to the end.
pub fn run_with_input(command: Command, input: &[u8]) -> std::process::Output {
    spawn_with_input(command, input)
        .wait_with_output()
        .expect("wait")
}

/// Waits for `child` to end, sampling its peak resident memory (VmHWM) meanwhile.
pub fn wait_sampling_peak_rss(child: std::process::Child) -> (std::process::Output, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let pid = child.id();
    let peak = std::sync::Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let hwm_kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
                peak.fetch_max(hwm_kib * 1024, Ordering::Relaxed);
                if status.contains("State:\tZ") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let output = child.wait_with_output().expect("wait");
    let _ = sampler.join();
    (output, peak.load(Ordering::Relaxed))
}

/// A PNG's width, height, samples per pixel and pixels.
pub fn read_png(path: &Path) -> (u32, u32, usize, Vec<u8>) {
    let file = std::fs::File::open(path).expect("the PNG exists");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("a PNG frame");
    pixels.truncate(info.buffer_size());
    (info.width, info.height, info.color_type.samples(), pixels)
}

/// The value of `key` in a CBOR map.
pub fn field<'a>(value: &'a ciborium::Value, key: &str) -> Option<&'a ciborium::Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// (width, height) from a PNG's IHDR; `None` if the bytes are not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.len() < 24 {
        return None;
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((word(16), word(20)))
}

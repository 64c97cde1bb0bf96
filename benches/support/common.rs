//! What every suite shares: where the release binaries are, the engine and floor runners, the
//! measurement of one run (wall time, CPU time, what else the machine was doing), statistics,
//! memory figures from /proc, and Markdown tables.

use std::ffi::OsString;
use std::fmt::{self, Display};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use offload::sdk::decode::{decode_one, DecodeLimits};
use offload::{Job, Queue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Ends the bench with a message on stderr: for what cannot go on (a missing binary, a job that
/// failed where it must not), so that the reason is one clear line rather than a panic.
pub fn die(message: impl Display) -> ! {
    eprintln!("bench: {message}");
    std::process::exit(1)
}

/// `result.or_die("what was being done")`: the value, or [`die`] with the context and error.
pub trait OrDie<T> {
    fn or_die(self, context: &str) -> T;
}

impl<T, E: Display> OrDie<T> for Result<T, E> {
    fn or_die(self, context: &str) -> T {
        self.unwrap_or_else(|err| die(format!("{context}: {err}")))
    }
}

/// Where the release builds are, and the machine's core count.
#[derive(Debug, Clone)]
pub struct Env {
    /// `target/release` (or `--bin-dir`).
    pub bin_dir: PathBuf,
    /// The repository root.
    pub root: PathBuf,
    /// `std::thread::available_parallelism`.
    pub cores: usize,
}

impl Env {
    /// The release directory is where cargo built this bench's own `offload` binary
    /// (`cargo bench` uses the release profile), unless `bin_dir` says otherwise.
    pub fn new(bin_dir: Option<PathBuf>) -> Self {
        let bin_dir = bin_dir.unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_offload"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| die("the offload binary has no parent directory"))
        });
        if cfg!(debug_assertions) {
            progress(format!(
                "warning: a debug build of the bench, running the binaries in {}; `cargo bench` \
                 or dev/bench measure the release builds",
                bin_dir.display()
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            bin_dir,
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            cores,
        }
    }

    /// A release binary, e.g. `exe("offload-diag")`; dies with a hint when it is missing.
    pub fn exe(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            die(format!(
                "{} is missing: build the release binaries first with \
                 `cargo build --release --workspace` (dev/bench does)",
                path.display()
            ));
        }
        path
    }

    /// The Python processor in the source tree.
    pub fn histogram(&self) -> PathBuf {
        let path = self.root.join("processors/python/offload-histogram");
        if !path.is_file() {
            die(format!("{} is missing", path.display()));
        }
        path
    }

    /// 1 and the core count (just 1 on a one-core machine).
    pub fn default_parallelism(&self) -> Vec<usize> {
        if self.cores > 1 {
            vec![1, self.cores]
        } else {
            vec![1]
        }
    }
}

/// The input of `offload-diag` with a byte string to echo.
#[derive(Debug, Serialize)]
pub struct EchoIn<'a> {
    #[serde(with = "serde_bytes")]
    pub echo: &'a [u8],
}

/// The part of `offload-diag`'s result the benchmarks read (the rest is ignored).
#[derive(Debug, Deserialize)]
pub struct EchoOut {
    #[serde(with = "serde_bytes")]
    pub echo: Vec<u8>,
}

/// A payload that is not all zeros (so every page of it is really written and resident).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Whether `bytes` is [`payload`]`(len)`.
pub fn is_payload(bytes: &[u8], len: usize) -> bool {
    bytes.len() == len && bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8)
}

/// What one measured run cost.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall time.
    pub wall: Duration,
    /// CPU time (user + system) of this process, all threads.
    pub host_cpu: Duration,
    /// CPU time of the children reaped during the run (the processors).
    pub child_cpu: Duration,
    /// Cores' worth of CPU that processes outside this run used meanwhile, on average: busy
    /// time from /proc/stat minus ours and our children's, over the wall time. On a shared
    /// machine this says how noisy the figure is.
    pub other_load: f64,
}

impl Sample {
    pub fn secs(&self) -> f64 {
        self.wall.as_secs_f64()
    }
}

/// How long [`measure`] waits, at most, for the rest of the machine to go quiet (seconds).
static QUIET_WAIT_SECS: AtomicU64 = AtomicU64::new(0);
/// Other load (cores) under which the machine counts as quiet.
const QUIET_LOAD: f64 = 0.3;

/// Makes every [`measure`] first wait up to `max_wait` for the machine to be quiet.
pub fn set_quiet_wait(max_wait: Duration) {
    QUIET_WAIT_SECS.store(max_wait.as_secs(), Ordering::Relaxed);
}

/// Waits, up to the time set by [`set_quiet_wait`], until processes outside this run use less
/// than [`QUIET_LOAD`] cores over a second.
pub fn settle() {
    let max_wait = Duration::from_secs(QUIET_WAIT_SECS.load(Ordering::Relaxed));
    if max_wait.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut told = false;
    loop {
        let ((), sample) = measure_now(|| std::thread::sleep(Duration::from_secs(1)));
        if sample.other_load < QUIET_LOAD {
            return;
        }
        if start.elapsed() >= max_wait {
            progress(format!(
                "the machine is still busy ({:.2} cores used elsewhere); measuring anyway",
                sample.other_load
            ));
            return;
        }
        if !told {
            progress(format!(
                "waiting for the machine to be quiet ({:.2} cores used elsewhere)",
                sample.other_load
            ));
            told = true;
        }
    }
}

/// Runs `f` once and measures it, after waiting for the machine to be quiet if asked to (see
/// [`set_quiet_wait`]).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Sample) {
    settle();
    measure_now(f)
}

fn measure_now<R>(f: impl FnOnce() -> R) -> (R, Sample) {
    let busy = busy_cpu();
    let host = rusage_cpu(libc::RUSAGE_SELF);
    let children = rusage_cpu(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let result = f();
    let wall = start.elapsed();
    let host_cpu = rusage_cpu(libc::RUSAGE_SELF).saturating_sub(host);
    let child_cpu = rusage_cpu(libc::RUSAGE_CHILDREN).saturating_sub(children);
    let other = busy_cpu().saturating_sub(busy).as_secs_f64()
        - host_cpu.as_secs_f64()
        - child_cpu.as_secs_f64();
    let sample = Sample {
        wall,
        host_cpu,
        child_cpu,
        other_load: (other / wall.as_secs_f64().max(1e-9)).max(0.0),
    };
    (result, sample)
}

/// User + system CPU time from `getrusage`.
pub fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills a zeroed rusage, which is plain data.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Busy CPU time of the whole machine (every core) since boot, from /proc/stat.
pub fn busy_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().next() else {
        return Duration::ZERO;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(busy as f64 / hz)
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").or_die("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| die(format!("no {field} in /proc/self/status")))
}

/// Runs `future` to completion on a fresh main context that is this thread's default, as the
/// engine's tests do: each run starts with no leftover sources or state.
pub fn on_fresh_context<F: std::future::Future>(make_future: impl FnOnce() -> F) -> F::Output {
    let context = glib::MainContext::new();
    context
        .with_thread_default(|| context.block_on(make_future()))
        .or_die("making a new main context this thread's default")
}

/// The engine: `count` jobs on a fresh queue with `parallel` slots; submits all, then awaits
/// every result in order and hands each to `check`.
pub fn run_engine<I, O>(
    job: &Job,
    count: usize,
    parallel: usize,
    input_for: impl Fn(usize) -> I,
    check: impl Fn(usize, O) -> Result<(), String>,
) -> Result<(), String>
where
    I: Serialize,
    O: DeserializeOwned + Send + 'static,
{
    on_fresh_context(|| async {
        let queue = Queue::with_max_running(parallel);
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let handle = queue
                .submit::<I, O>(job, &input_for(i))
                .map_err(|err| format!("submitting job {i}: {err}"))?;
            handles.push(handle);
        }
        for (i, handle) in handles.into_iter().enumerate() {
            let output = handle
                .result()
                .await
                .map_err(|err| format!("job {i} failed: {err}"))?;
            check(i, output)?;
        }
        Ok(())
    })
}

/// Inputs up to this size are written before waiting (the pipe buffer takes them whole);
/// larger ones are written by a thread while the output is read.
const WRITE_INLINE_MAX: usize = 16 * 1024;

/// The floor: the least a host can do to run `count` jobs with `parallel` at once. `parallel`
/// threads take job numbers from a counter; each encodes its job's input, spawns the processor
/// with `std::process::Command` (stdin, stdout and stderr piped, the first two enlarged to
/// 1 MiB as the engine does), writes the input, waits for the output, and decodes it with the
/// same bounded decoder as the engine.
pub fn run_floor<I, O>(
    program: &Path,
    args: &[OsString],
    count: usize,
    parallel: usize,
    input_for: impl Fn(usize) -> I + Sync,
    check: impl Fn(usize, O) -> Result<(), String> + Sync,
) -> Result<(), String>
where
    I: Serialize,
    O: DeserializeOwned,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let result = floor_one::<I, O>(program, args, &input_for(i), BIG_PIPE)
                        .and_then(|output| check(i, output))
                        .map_err(|err| format!("floor job {i}: {err}"));
                    if let Err(err) = result {
                        stop.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .get_or_insert(err);
                        return;
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The pipe size the engine asks for (`F_SETPIPE_SZ`) on a processor's stdin and stdout.
pub const BIG_PIPE: Option<usize> = Some(1 << 20);

/// One job of the floor; `pipe_size` enlarges its stdin and stdout pipes (`None`: the
/// system's default, 64 KiB on Linux).
pub fn floor_one<I: Serialize + ?Sized, O: DeserializeOwned>(
    program: &Path,
    args: &[OsString],
    input: &I,
    pipe_size: Option<usize>,
) -> Result<O, String> {
    let mut bytes = Vec::new();
    ciborium::into_writer(input, &mut bytes).map_err(|err| format!("encoding: {err}"))?;
    floor_one_cbor(program, args, bytes, pipe_size)
}

/// One job of the floor, with its input already encoded (and dropped once written).
pub fn floor_one_cbor<O: DeserializeOwned>(
    program: &Path,
    args: &[OsString],
    input: Vec<u8>,
    pipe_size: Option<usize>,
) -> Result<O, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", program.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or("the child has no stdin pipe (asked for one)")?;
    if let Some(size) = pipe_size {
        let stdout = child
            .stdout
            .as_ref()
            .ok_or("the child has no stdout pipe (asked for one)")?;
        for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
            // SAFETY: fcntl on pipe descriptors we own; best effort, as in the engine.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) };
        }
    }
    let writer = if input.len() <= WRITE_INLINE_MAX {
        stdin
            .write_all(&input)
            .map_err(|err| format!("writing the input: {err}"))?;
        drop(stdin);
        None
    } else {
        Some(std::thread::spawn(move || {
            let written = stdin.write_all(&input);
            drop(input);
            written
        }))
    };
    let output = child
        .wait_with_output()
        .map_err(|err| format!("waiting for {}: {err}", program.display()))?;
    if let Some(writer) = writer {
        writer
            .join()
            .map_err(|_| "the writer thread panicked".to_owned())?
            .map_err(|err| format!("writing the input: {err}"))?;
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{}: {}", output.status, stderr.trim()));
    }
    decode_one::<O>(&output.stdout, DecodeLimits::default())
        .map_err(|err| format!("decoding the result: {err:?}"))
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Smallest and largest.
pub fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// `"1.23"` style: `digits` decimals.
pub fn num(value: f64, digits: usize) -> String {
    format!("{value:.digits$}")
}

/// A ratio with its spread over the rounds: `0.97 (0.95-0.99)`.
pub fn ratio_cell(ratios: &[f64]) -> String {
    let (lo, hi) = range(ratios);
    if ratios.len() > 1 {
        format!("{:.2} ({:.2}-{:.2})", median(ratios), lo, hi)
    } else {
        format!("{:.2}", median(ratios))
    }
}

/// Met or missed, with the margin: `met (+7%)` or `MISSED by 12%`.
pub fn verdict(value: f64, target: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        value >= target
    } else {
        value < target
    };
    let margin = (value - target).abs() / target * 100.0;
    if met {
        format!("met (margin {margin:.0}%)")
    } else {
        format!("MISSED by {margin:.0}%")
    }
}

/// A Markdown table, printed with aligned columns.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            write!(f, "|")?;
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                write!(f, " {cell:<width$} |")?;
            }
            writeln!(f)
        };
        line(f, &self.headers)?;
        write!(f, "|")?;
        for width in &widths {
            write!(f, "{}|", "-".repeat(width + 2))?;
        }
        writeln!(f)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// A suite's heading and what it runs.
pub fn heading(title: &str, what: &str) {
    println!("\n## {title}\n\n{what}\n");
    let _ = std::io::stdout().flush();
}

/// A line of progress on stderr (the tables go to stdout).
pub fn progress(message: impl Display) {
    eprintln!("bench: {message}");
}

/// Quotes a word for `sh`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Machine load averages, from /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

//! Suite `pipeline`: `offload run` as a whole process in a pipeline (JSON Lines in, JSON lines
//! out), as scripts call it.
//!
//! - Per-job overhead: `--jobs` tiny jobs (`offload-diag` echoing a 16-character string) at
//!   -j <cores>: `offload run` with a process per job against the floor (the in-process spawn
//!   loop of the `overhead` suite) and against GNU parallel (`parallel --keep-order "printf
//!   '%s' {} | offload-diag --json" :::: inputs.jsonl`: the same lines in, the same JSON lines
//!   out, in order); and `offload run` on persistent workers (`--persistent-jobs` jobs).
//! - Memory: `--pipeline-inputs` (10,000, 100,000 and 1,000,000) tiny inputs written to
//!   `offload run diag --inputs -` as fast as it reads them: its peak RSS (VmHWM, sampled
//!   every 20 ms; it only grows) for each N, and the run's jobs/s. Target: independent of N,
//!   under 64 MB.
//! - Latency: with `offload run diag --inputs -` started and idle, one input line is written
//!   and the time to its result line is taken (a fresh worker starts for it), then a second
//!   one to the warm worker.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    die, heading, measure, median, num, progress, ratio_cell, run_floor, shell_quote, verdict, Env,
    OrDie, Sample, Table,
};

pub struct Options {
    /// Jobs per run with a process per job.
    pub spawn_jobs: usize,
    /// Jobs per run on persistent workers.
    pub jobs: usize,
    /// Input counts of the memory runs.
    pub inputs: Vec<usize>,
    pub rounds: usize,
    pub parallel: usize,
}

const ECHO: &str = "0123456789abcdef";

fn input_line(_: usize) -> serde_json::Value {
    serde_json::json!({ "echo": ECHO })
}

pub fn run(env: &Env, options: &Options) {
    let p = options.parallel;
    heading(
        "Pipeline: offload run as a whole process",
        &format!(
            "`offload-diag` echoing a 16-character string at -j {p}, {r} rounds, each method \
             in turn. \"offload run\" is the whole command: it starts, reads the JSON Lines \
             file, encodes, runs, decodes and prints one JSON line per job in input order \
             (stdout to /dev/null). The floor is the in-process spawn loop of the overhead \
             suite (no JSON, no process of its own). GNU parallel runs `printf '%s' {{}} | \
             offload-diag --json` per line with --keep-order: the same lines in and out.",
            r = options.rounds
        ),
    );
    let dir = tempfile::tempdir().or_die("a temporary directory");
    let write_inputs = |count: usize| {
        let path = dir.path().join(format!("in-{count}.jsonl"));
        let mut text = String::new();
        for i in 0..count {
            text.push_str(&input_line(i).to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).or_die("writing the inputs");
        path
    };
    let spawn_inputs = write_inputs(options.spawn_jobs);
    let worker_inputs = write_inputs(options.jobs);
    let diag = env.exe("offload-diag");
    let offload = env.exe("offload");
    let parallel_ok = gnu_parallel_available();

    let mut floor = Vec::new();
    let mut oneshot = Vec::new();
    let mut gnu = Vec::new();
    let mut workers = Vec::new();
    for round in 0..options.rounds {
        let (result, sample) = measure(|| {
            run_floor(
                &diag,
                &[],
                options.spawn_jobs,
                p,
                input_line,
                |_, out: ciborium::Value| {
                    out.as_map()
                        .is_some()
                        .then_some(())
                        .ok_or_else(|| "not a map".to_owned())
                },
            )
        });
        result.unwrap_or_else(|err| die(format!("pipeline floor: {err}")));
        floor.push(sample);
        let sample = offload_run(
            &offload,
            &spawn_inputs,
            p,
            &["--no-persistent"],
            options.spawn_jobs,
        );
        oneshot.push(sample);
        if parallel_ok {
            gnu.push(gnu_parallel(&diag, &spawn_inputs, p, options.spawn_jobs));
        }
        workers.push(offload_run(&offload, &worker_inputs, p, &[], options.jobs));
        progress(format!(
            "pipeline round {round}: floor {:.0}, offload run {:.0}, GNU parallel {}, \
             offload run on workers {:.0} jobs/s",
            options.spawn_jobs as f64 / floor[round].secs(),
            options.spawn_jobs as f64 / oneshot[round].secs(),
            gnu.get(round).map_or("-".to_owned(), |s| format!(
                "{:.0}",
                options.spawn_jobs as f64 / s.secs()
            )),
            options.jobs as f64 / workers[round].secs(),
        ));
    }
    let rates = |samples: &[Sample], jobs: usize| -> Vec<f64> {
        samples.iter().map(|s| jobs as f64 / s.secs()).collect()
    };
    let floor_rates = rates(&floor, options.spawn_jobs);
    let per_round = |other: &[f64]| -> Vec<f64> {
        other.iter().zip(&floor_rates).map(|(o, f)| o / f).collect()
    };
    let mut table = Table::new(&[
        "method",
        "jobs",
        "jobs/s (median)",
        "ms/job (wall x j)",
        "CPU µs/job (host + processors)",
        "vs floor (per round)",
    ]);
    let mut add = |name: &str, samples: &[Sample], jobs: usize| {
        let r = rates(samples, jobs);
        let cpu = median(
            &samples
                .iter()
                .map(|s| (s.host_cpu + s.child_cpu).as_secs_f64() * 1e6 / jobs as f64)
                .collect::<Vec<_>>(),
        );
        table.row(vec![
            name.to_owned(),
            jobs.to_string(),
            num(median(&r), 0),
            num(p as f64 * 1e3 / median(&r), 3),
            num(cpu, 0),
            ratio_cell(&per_round(&r)),
        ]);
    };
    add("floor (process per job)", &floor, options.spawn_jobs);
    add("offload run --no-persistent", &oneshot, options.spawn_jobs);
    if parallel_ok {
        add("GNU parallel", &gnu, options.spawn_jobs);
    }
    add("offload run (persistent workers)", &workers, options.jobs);
    println!("{table}");
    let run_rate = median(&rates(&oneshot, options.spawn_jobs));
    println!(
        "- Per-job overhead of the whole command over the floor: {:.3} ms of wall time per \
         job per slot ({:.0}% of the floor's rate).",
        (p as f64 / run_rate - p as f64 / median(&floor_rates)) * 1e3,
        run_rate / median(&floor_rates) * 100.0
    );
    if parallel_ok {
        println!(
            "- offload run against GNU parallel, a process per job both: {:.1}x; on \
             persistent workers: {:.0}x.",
            run_rate / median(&rates(&gnu, options.spawn_jobs)),
            median(&rates(&workers, options.jobs)) / median(&rates(&gnu, options.spawn_jobs)),
        );
    } else {
        println!("- GNU parallel is not installed: no reference (dev/bench installs it).");
    }
    println!();

    memory(&offload, options);
    latency(&offload, options.rounds);
}

fn gnu_parallel_available() -> bool {
    Command::new("parallel")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("GNU parallel"))
}

/// `offload run diag --inputs FILE` with `extra` arguments, stdout to /dev/null.
fn offload_run(
    offload: &Path,
    inputs: &Path,
    parallel: usize,
    extra: &[&str],
    jobs: usize,
) -> Sample {
    let (status, sample) = measure(|| {
        Command::new(offload)
            .args(["run", "diag", "-j", &parallel.to_string()])
            .args(extra)
            .arg("--inputs")
            .arg(inputs)
            .stdout(Stdio::null())
            .status()
            .or_die("running offload run")
    });
    if !status.success() {
        die(format!(
            "pipeline: offload run of {jobs} jobs failed: {status}"
        ));
    }
    sample
}

fn gnu_parallel(diag: &Path, inputs: &Path, parallel: usize, jobs: usize) -> Sample {
    let (status, sample) = measure(|| {
        Command::new("parallel")
            .args(["--will-cite", "--keep-order", "-j", &parallel.to_string()])
            .arg(format!(
                "printf '%s' {{}} | {} --json",
                shell_quote(&diag.to_string_lossy())
            ))
            .arg("::::")
            .arg(inputs)
            .stdout(Stdio::null())
            .status()
            .or_die("running GNU parallel")
    });
    if !status.success() {
        die(format!(
            "pipeline: GNU parallel over {jobs} jobs failed: {status}"
        ));
    }
    sample
}

/// Peak RSS of `offload run diag --inputs -` fed N lines as fast as it reads them.
fn memory(offload: &Path, options: &Options) {
    heading(
        "Pipeline: memory against the number of inputs",
        "`offload run diag --inputs -` at -j <cores> on persistent workers, fed N tiny lines \
         through a pipe as fast as it reads them, output (in order) to /dev/null. Peak RSS is \
         the host's VmHWM (sampled every 20 ms; it only grows). Target: independent of N, \
         under 64 MB.",
    );
    let mut table = Table::new(&["inputs", "peak RSS (MB)", "jobs/s", "wall (s)"]);
    let mut peaks = Vec::new();
    for &count in &options.inputs {
        let mut child = Command::new(offload)
            .args([
                "run",
                "diag",
                "-j",
                &options.parallel.to_string(),
                "--inputs",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .or_die("starting offload run");
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap_or_else(|| die("no stdin pipe"));
        let started = Instant::now();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let line = format!("{}\n", input_line(0));
            let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
            for _ in 0..count {
                out.write_all(line.as_bytes())?;
            }
            out.flush()
        });
        let mut peak_kib = 0u64;
        let status = loop {
            if let Some(status) = child.try_wait().or_die("waiting for offload run") {
                break status;
            }
            if let Some(kib) = vm_hwm_kib(pid) {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall = started.elapsed().as_secs_f64();
        let _ = writer.join();
        if !status.success() {
            die(format!(
                "pipeline: offload run over {count} inputs failed: {status}"
            ));
        }
        let mb = peak_kib as f64 * 1024.0 / 1e6;
        progress(format!(
            "pipeline memory: {count} inputs, peak {mb:.1} MB, {wall:.1} s"
        ));
        peaks.push(mb);
        table.row(vec![
            count.to_string(),
            num(mb, 1),
            num(count as f64 / wall, 0),
            num(wall, 1),
        ]);
    }
    println!("{table}");
    let most = peaks.iter().copied().fold(0.0, f64::max);
    let least = peaks.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "- Largest peak {most:.1} MB (target under 64 MB: {}); largest over smallest: {:.2}x.\n",
        verdict(most, 64.0, false),
        most / least
    );
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmHWM:")?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Time from an input line written to its result line read, with `offload run` already
/// started: the first job (which starts a worker) and a second one (a warm worker).
fn latency(offload: &Path, rounds: usize) {
    heading(
        "Pipeline: first result latency",
        "`offload run diag --inputs -`, started 300 ms before the first line is written (so its \
         own start-up is over): time from writing a line to reading its result line. The first \
         job starts the worker; the second, 100 ms later, finds it warm.",
    );
    let mut first = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..rounds.max(3) {
        let mut child = Command::new(offload)
            .args(["run", "diag", "--inputs", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .or_die("starting offload run");
        let mut stdin = child.stdin.take().unwrap_or_else(|| die("no stdin pipe"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| die("no stdout")));
        std::thread::sleep(Duration::from_millis(300));
        let mut time_one = |i: usize| {
            let start = Instant::now();
            writeln!(stdin, "{}", input_line(i)).or_die("writing a line");
            stdin.flush().or_die("flushing");
            let mut line = String::new();
            stdout.read_line(&mut line).or_die("reading a result line");
            if !line.contains("\"ok\"") {
                die(format!("pipeline latency: unexpected line {line:?}"));
            }
            start.elapsed().as_secs_f64() * 1e3
        };
        first.push(time_one(0));
        std::thread::sleep(Duration::from_millis(100));
        warm.push(time_one(1));
        drop(stdin);
        let _ = child.wait();
    }
    let mut table = Table::new(&["job", "ms from line in to line out (median)", "min-max"]);
    for (name, values) in [
        ("first (starts the worker)", &first),
        ("second (warm worker)", &warm),
    ] {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            name.to_owned(),
            num(median(values), 2),
            format!("{lo:.2}-{hi:.2}"),
        ]);
    }
    println!("{table}");
    println!();
}

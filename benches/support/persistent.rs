//! Suite `persistent`: trivial jobs on persistent workers (PROTOCOL.md, section 18) against a
//! process per job, and against Python's own pools.
//!
//! - Python: the same trivial function (it returns its argument) at the same parallelism:
//!   offload's persistent workers (through the engine, and through `offload run` as a whole
//!   process reading JSON Lines), offload with a process per job, `ProcessPoolExecutor.map`
//!   and `multiprocessing.Pool.map` (its default chunking). Target: offload persistent at 1.0x
//!   `ProcessPoolExecutor` or better; the ratio to `Pool` is reported.
//! - Rust: `offload-diag` echoing 16 bytes, persistent against a process per job. Target: 10x.
//! - The host's CPU per job in persistent mode, and the first (cold) job of a fresh worker
//!   against the warm ones.
//!
//! Every timed run includes starting its workers (and, for the engine, ending them), as each
//! Python pool's run includes starting its processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use offload::{Job, Persistence, Processor, Queue};
use serde_json::json;

use crate::common::{
    heading, measure, median, num, on_fresh_context, progress, ratio_cell, verdict, EchoIn, Env,
    OrDie, Sample, Table,
};

pub struct Options {
    /// Jobs per run on workers and in the Python pools.
    pub jobs: usize,
    /// Jobs per run with a process per job (each costs a start-up).
    pub spawn_jobs: usize,
    pub rounds: usize,
    /// Jobs at once (default: the core count).
    pub parallel: usize,
}

/// The trivial processor: the SDK and a function that returns its argument.
const TRIVIAL: &str = r#"
from offload_sdk import Processor


def identity(value, ctx):
    return value


Processor("trivial", "Returns its input", example=1).run(identity)
"#;

/// Python's pools over the same function; prints the seconds the batch took.
const POOLS: &str = r#"
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool


def identity(value):
    return value


if __name__ == "__main__":
    kind, jobs, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    began = time.perf_counter()
    if kind == "executor":
        with ProcessPoolExecutor(parallel) as executor:
            results = list(executor.map(identity, range(jobs)))
    elif kind == "pool-chunk-1":
        with Pool(parallel) as pool:
            results = pool.map(identity, range(jobs), chunksize=1)
    else:
        with Pool(parallel) as pool:
            results = pool.map(identity, range(jobs))
    took = time.perf_counter() - began
    assert results == list(range(jobs))
    print(took)
"#;

/// One way of running a batch, measured each round.
pub struct Case {
    pub name: String,
    pub jobs: usize,
    pub run: Box<dyn Fn() -> Sample>,
    pub samples: Vec<Sample>,
}

impl Case {
    pub fn rates(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| self.jobs as f64 / s.secs())
            .collect()
    }

    pub fn rate(&self) -> f64 {
        median(&self.rates())
    }
}

pub fn run(env: &Env, options: &Options) {
    let python = crate::startup::real_python();
    let dir = tempfile::tempdir().or_die("a temporary directory");
    let trivial = dir.path().join("offload-trivial");
    std::fs::write(&trivial, format!("#!{}\n{TRIVIAL}", python.display()))
        .or_die("writing the trivial processor");
    make_executable(&trivial);
    let pools = dir.path().join("pools.py");
    std::fs::write(&pools, POOLS).or_die("writing the pools script");
    let sdk = env.root.join("processors/python/offload-sdk/src");
    let trivial_job = |persistence| {
        Job::new(Processor::at(&trivial))
            .env("PYTHONPATH", &sdk)
            .persistence(persistence)
    };
    let (jobs, spawn_jobs, parallel) = (options.jobs, options.spawn_jobs, options.parallel);
    let lines = dir.path().join("inputs.jsonl");
    std::fs::write(
        &lines,
        (0..jobs).map(|i| format!("{i}\n")).collect::<String>(),
    )
    .or_die("writing the inputs");

    heading(
        "Persistent workers",
        &format!(
            "Trivial jobs at -j {parallel}, {} rounds (cases alternate within a round); \
             jobs/s are medians, ratios are per round (median, range). Each run starts and \
             ends its own workers or pool. Python is {}.",
            options.rounds,
            python.display()
        ),
    );

    // Python.
    let mut cases = vec![
        Case {
            name: "offload, persistent workers (engine)".into(),
            jobs,
            run: Box::new({
                let job = trivial_job(Persistence::Always);
                move || engine_batch(&job, jobs, parallel, |i| json!(i))
            }),
            samples: Vec::new(),
        },
        Case {
            name: "offload run, persistent workers (whole process, JSON Lines)".into(),
            jobs,
            run: Box::new({
                let offload = env.exe("offload");
                let (trivial, lines, sdk) = (trivial.clone(), lines.clone(), sdk.clone());
                move || cli_batch(&offload, &trivial, &lines, &sdk, jobs, parallel)
            }),
            samples: Vec::new(),
        },
        Case {
            name: "concurrent.futures.ProcessPoolExecutor.map".into(),
            jobs,
            run: Box::new({
                let (python, pools) = (python.clone(), pools.clone());
                move || pool_batch(&python, &pools, "executor", jobs, parallel)
            }),
            samples: Vec::new(),
        },
        Case {
            name: "multiprocessing.Pool.map (default chunks)".into(),
            jobs,
            run: Box::new({
                let (python, pools) = (python.clone(), pools.clone());
                move || pool_batch(&python, &pools, "pool", jobs, parallel)
            }),
            samples: Vec::new(),
        },
        Case {
            name: "multiprocessing.Pool.map (chunksize=1)".into(),
            jobs,
            run: Box::new({
                let (python, pools) = (python.clone(), pools.clone());
                move || pool_batch(&python, &pools, "pool-chunk-1", jobs, parallel)
            }),
            samples: Vec::new(),
        },
        Case {
            name: "offload, a process per job (engine)".into(),
            jobs: spawn_jobs,
            run: Box::new({
                let job = trivial_job(Persistence::Never);
                move || engine_batch(&job, spawn_jobs, parallel, |i| json!(i))
            }),
            samples: Vec::new(),
        },
    ];
    run_rounds(&mut cases, options.rounds, "Python");
    let executor = cases[2].rates();
    let pool = cases[3].rates();
    let mut table = Table::new(&[
        "Python, trivial function",
        "jobs",
        "jobs/s",
        "vs ProcessPoolExecutor",
        "vs Pool",
    ]);
    for case in &cases {
        let rates = case.rates();
        let per_round = |other: &[f64]| {
            let ratios: Vec<f64> = rates.iter().zip(other).map(|(a, b)| a / b).collect();
            ratio_cell(&ratios)
        };
        table.row(vec![
            case.name.clone(),
            case.jobs.to_string(),
            num(case.rate(), 0),
            per_round(&executor),
            per_round(&pool),
        ]);
    }
    println!("{table}");
    let target = cases[0].rate() / median(&executor);
    println!(
        "Target, offload persistent (engine) >= 1.0x ProcessPoolExecutor: {:.2}x, {}. Through \
         `offload run`: {:.2}x. Persistent against a process per job: {:.0}x.\n",
        target,
        verdict(target, 1.0, true),
        cases[1].rate() / median(&executor),
        cases[0].rate() / cases[5].rate()
    );

    // Rust.
    let diag = env.exe("offload-diag");
    let diag_job = |persistence| Job::new(Processor::at(&diag)).persistence(persistence);
    let echo = || {
        serde_json::to_value(EchoIn {
            echo: b"0123456789abcdef",
        })
        .or_die("encoding the echo input")
    };
    let mut cases = vec![
        Case {
            name: "offload-diag, persistent workers (engine)".into(),
            jobs,
            run: Box::new({
                let job = diag_job(Persistence::Always);
                move || engine_batch(&job, jobs, parallel, |_| echo())
            }),
            samples: Vec::new(),
        },
        Case {
            name: "offload-diag, a process per job (engine)".into(),
            jobs: spawn_jobs,
            run: Box::new({
                let job = diag_job(Persistence::Never);
                move || engine_batch(&job, spawn_jobs, parallel, |_| echo())
            }),
            samples: Vec::new(),
        },
    ];
    run_rounds(&mut cases, options.rounds, "Rust");
    let ratios: Vec<f64> = cases[0]
        .rates()
        .iter()
        .zip(cases[1].rates())
        .map(|(a, b)| a / b)
        .collect();
    let mut table = Table::new(&[
        "Rust, echo 16 bytes",
        "jobs",
        "jobs/s",
        "host CPU per job",
        "processor CPU per job",
    ]);
    for case in &cases {
        let per_job = |cpu: fn(&Sample) -> Duration| {
            let values: Vec<f64> = case
                .samples
                .iter()
                .map(|s| cpu(s).as_secs_f64() * 1e6 / case.jobs as f64)
                .collect();
            format!("{} µs", num(median(&values), 1))
        };
        table.row(vec![
            case.name.clone(),
            case.jobs.to_string(),
            num(case.rate(), 0),
            per_job(|s| s.host_cpu),
            per_job(|s| s.child_cpu),
        ]);
    }
    println!("{table}");
    let ratio = median(&ratios);
    println!(
        "Target, persistent >= 10x a process per job: {} ({}).\n",
        ratio_cell(&ratios),
        verdict(ratio, 10.0, true)
    );

    // Cold and warm.
    let mut table = Table::new(&[
        "first job of a worker",
        "cold: wall",
        "of which start",
        "warm: wall (median)",
    ]);
    for (name, job, input) in [
        ("offload-diag", diag_job(Persistence::Always), echo()),
        (
            "Python trivial (SDK)",
            trivial_job(Persistence::Always),
            json!(1),
        ),
    ] {
        let (cold, start, warm) = cold_and_warm(&job, &input, options.rounds.max(3));
        table.row(vec![
            name.into(),
            format!("{} ms", num(cold * 1e3, 2)),
            format!("{} ms", num(start * 1e3, 2)),
            format!("{} ms", num(warm * 1e3, 3)),
        ]);
    }
    println!("{table}");
}

/// Runs every case once per round, rotating which goes first.
pub fn run_rounds(cases: &mut [Case], rounds: usize, what: &str) {
    for round in 0..rounds {
        for k in 0..cases.len() {
            let case = &mut cases[(round + k) % cases.len()];
            progress(format!(
                "persistent: {what} round {}: {}",
                round + 1,
                case.name
            ));
            let sample = (case.run)();
            case.samples.push(sample);
        }
    }
}

/// `jobs` jobs through a fresh queue; the workers are ended and reaped within the sample, so
/// their CPU time counts as the children's.
pub fn engine_batch(
    job: &Job,
    jobs: usize,
    parallel: usize,
    input_for: impl Fn(usize) -> serde_json::Value,
) -> Sample {
    let (result, sample) = measure(|| {
        on_fresh_context(|| async {
            let queue = Queue::with_max_running(parallel);
            let handles: Vec<_> = (0..jobs)
                .map(|i| queue.submit::<_, ciborium::Value>(job, &input_for(i)))
                .collect::<Result<_, _>>()
                .map_err(|err| err.to_string())?;
            for (i, handle) in handles.into_iter().enumerate() {
                handle
                    .result()
                    .await
                    .map_err(|err| format!("job {i} failed: {err}"))?;
            }
            queue.shutdown();
            while queue.live_workers() > 0 {
                glib::timeout_future(Duration::from_millis(2)).await;
            }
            Ok::<(), String>(())
        })
    });
    result.or_die("the engine batch");
    sample
}

/// `offload run` over the JSON Lines file, output discarded but counted.
fn cli_batch(
    offload: &Path,
    trivial: &Path,
    lines: &Path,
    sdk: &Path,
    jobs: usize,
    parallel: usize,
) -> Sample {
    let (output, sample) = measure(|| {
        Command::new(offload)
            .arg("run")
            .arg(trivial)
            .arg("--inputs")
            .arg(lines)
            .args(["-j", &parallel.to_string(), "--persistent"])
            .env("PYTHONPATH", sdk)
            .output()
            .or_die("running offload run")
    });
    let ok = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("\"status\":\"ok\""))
        .count();
    if ok != jobs {
        crate::common::die(format!(
            "offload run: {ok} of {jobs} jobs succeeded: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    sample
}

/// One of Python's pools; its own clock (the batch, pool start included, interpreter start
/// not) is the wall time.
fn pool_batch(python: &Path, script: &Path, kind: &str, jobs: usize, parallel: usize) -> Sample {
    let (output, mut sample) = measure(|| {
        Command::new(python)
            .arg(script)
            .args([kind, &jobs.to_string(), &parallel.to_string()])
            .output()
            .or_die("running the Python pool")
    });
    if !output.status.success() {
        crate::common::die(format!(
            "the {kind} pool failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let secs: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .or_die("the pool's time");
    sample.wall = Duration::from_secs_f64(secs);
    sample
}

/// The first job of a fresh worker (its wall time and the worker's start within it) and the
/// median wall time of the 50 jobs after it, over `rounds` fresh queues.
fn cold_and_warm(job: &Job, input: &serde_json::Value, rounds: usize) -> (f64, f64, f64) {
    let (mut cold, mut start, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let ((), _) = measure(|| {
            on_fresh_context(|| async {
                let queue = Queue::with_max_running(1);
                for i in 0..51 {
                    let finished = queue
                        .submit::<_, ciborium::Value>(job, input)
                        .or_die("submit")
                        .finished()
                        .await;
                    finished.result.or_die("a cold/warm job");
                    let wall = finished.stats.wall.as_secs_f64();
                    match finished.stats.worker.and_then(|w| w.startup) {
                        Some(startup) if i == 0 => {
                            cold.push(wall);
                            start.push(startup.as_secs_f64());
                        }
                        _ => warm.push(wall),
                    }
                }
                queue.shutdown();
            })
        });
    }
    (median(&cold), median(&start), median(&warm))
}

fn make_executable(path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .or_die("making the processor executable");
}

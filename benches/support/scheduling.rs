//! Suite `scheduling`: the makespan of batches of jobs of mixed durations against the greedy
//! list schedule of the same jobs in submission order (each job, in order, to the slot that
//! frees first), on persistent workers and one-shot. Jobs sleep (`offload-diag`'s
//! `sleep_ms`), so the figures measure the scheduler, not the CPU. The schedule's bound adds
//! a worker's start (measured in the run) to it.

use std::time::{Duration, Instant};

use offload::{Job, Persistence, Processor, Queue};
use serde_json::json;

use crate::common::{heading, median, num, on_fresh_context, progress, verdict, Env, Table};

pub struct Options {
    pub rounds: usize,
    pub parallel: usize,
}

/// A batch: its name and each job's sleep in milliseconds, in submission order.
fn batches() -> Vec<(&'static str, Vec<u64>)> {
    // A fixed pseudo-random sequence, the same every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo + 1)
    };
    let alternating: Vec<u64> = (0..16)
        .map(|i| {
            if i % 2 == 0 {
                next(800, 1200)
            } else {
                next(30, 60)
            }
        })
        .collect();
    let random: Vec<u64> = (0..24).map(|_| next(20, 1500)).collect();
    vec![
        ("3000/100/3000", vec![3000, 100, 3000]),
        ("alternating long and short (16)", alternating),
        ("random 20-1500 ms (24)", random),
    ]
}

/// The greedy list schedule's makespan: each job, in order, to the slot that frees first.
fn greedy(durations: &[u64], slots: usize) -> Duration {
    let mut free = vec![0u64; slots.max(1)];
    for d in durations {
        if let Some(slot) = free.iter_mut().min() {
            *slot += d;
        }
    }
    Duration::from_millis(free.into_iter().max().unwrap_or(0))
}

/// One run: the makespan, and the longest worker start among the jobs (0 one-shot).
fn run_batch(job: &Job, durations: &[u64], parallel: usize) -> (Duration, Duration) {
    on_fresh_context(|| async {
        let queue = Queue::with_max_running(parallel);
        let began = Instant::now();
        let handles: Vec<_> = durations
            .iter()
            .map(|ms| {
                queue
                    .submit::<_, ciborium::Value>(job, &json!({"sleep_ms": ms}))
                    .unwrap_or_else(|err| crate::common::die(format!("submit: {err}")))
            })
            .collect();
        let mut startup = Duration::ZERO;
        for handle in handles {
            let finished = handle.finished().await;
            if let Err(err) = &finished.result {
                crate::common::die(format!("a sleep failed: {err}"));
            }
            if let Some(worker) = finished.stats.worker.and_then(|w| w.startup) {
                startup = startup.max(worker);
            }
        }
        (began.elapsed(), startup)
    })
}

pub fn run(env: &Env, options: &Options) {
    heading(
        "Scheduling",
        &format!(
            "Batches of `offload-diag` jobs that sleep for mixed durations, at -j {}, through \
             the engine on persistent workers and one-shot. Ratio = makespan / (greedy list \
             schedule in submission order + the longest worker start measured in the run). \
             Target: at most 1.05 for every batch; the 3000/100/3000 batch within 10% of 3.1 s. \
             Median of {} rounds.",
            options.parallel, options.rounds
        ),
    );
    let diag = env.exe("offload-diag");
    let mut table = Table::new(&[
        "batch",
        "mode",
        "greedy (s)",
        "makespan (s)",
        "ratio",
        "target 1.05",
    ]);
    for (name, durations) in batches() {
        let bound = greedy(&durations, options.parallel);
        for (mode, persistence) in [
            ("workers", Persistence::Always),
            ("one-shot", Persistence::Never),
        ] {
            let job = Job::new(Processor::at(&diag)).persistence(persistence);
            let mut ratios = Vec::new();
            let mut makespans = Vec::new();
            for _ in 0..options.rounds {
                let (makespan, startup) = run_batch(&job, &durations, options.parallel);
                ratios.push(makespan.as_secs_f64() / (bound + startup).as_secs_f64());
                makespans.push(makespan.as_secs_f64());
                progress(format!("scheduling: {name}, {mode}: {makespan:?}"));
            }
            let ratio = median(&ratios);
            table.row(vec![
                name.to_owned(),
                mode.to_owned(),
                num(bound.as_secs_f64(), 2),
                num(median(&makespans), 2),
                num(ratio, 3),
                verdict(ratio, 1.05, false),
            ]);
        }
    }
    println!("{table}");
}

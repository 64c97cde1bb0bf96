//! Suite `containment`: what the guard, a memory limit and the sandbox cost per job.
//!
//! `offload-diag` echoing 16 bytes at -j <cores>, a process per job and on persistent
//! workers: plainly (every job already runs below a guard), with a 256 MiB memory limit (a
//! cgroup per job or per worker where the system allows one, else RLIMIT_DATA) and in the
//! sandbox (bubblewrap). Ratios are against the plain case of the same mode, per round.

use offload::{Job, Persistence, Processor, RunLimits, Sandbox};

use crate::common::{heading, median, num, ratio_cell, EchoIn, Env, OrDie, Table};
use crate::persistent::{engine_batch, run_rounds, Case};

pub struct Options {
    /// Jobs per run with a process per job.
    pub spawn_jobs: usize,
    /// Jobs per run on workers.
    pub jobs: usize,
    pub rounds: usize,
    pub parallel: usize,
}

pub fn run(env: &Env, options: &Options) {
    let diag = env.exe("offload-diag");
    heading(
        "Containment costs",
        &format!(
            "`offload-diag` echoing 16 bytes at -j {}, {} rounds; jobs/s are medians, ratios \
             per round against the plain case of the same mode. Memory limits here are \
             enforced by {}.",
            options.parallel,
            options.rounds,
            offload::MemoryLimitKind::detected().describe()
        ),
    );
    let echo = || {
        serde_json::to_value(EchoIn {
            echo: b"0123456789abcdef",
        })
        .or_die("encoding the echo input")
    };
    let limited = RunLimits {
        max_memory_bytes: Some(256 << 20),
        ..RunLimits::default()
    };
    let mut table = Table::new(&[
        "mode",
        "variant",
        "jobs",
        "jobs/s",
        "vs plain",
        "extra ms per job",
    ]);
    for (mode, persistence, jobs) in [
        ("a process per job", Persistence::Never, options.spawn_jobs),
        ("persistent workers", Persistence::Always, options.jobs),
    ] {
        let base = Job::new(Processor::at(&diag)).persistence(persistence);
        let variants = [
            ("plain (below the guard)", base.clone()),
            ("256 MiB memory limit", base.clone().limits(limited)),
            ("sandboxed", base.sandbox(Sandbox::new())),
        ];
        let parallel = options.parallel;
        let mut cases: Vec<Case> = variants
            .into_iter()
            .map(|(name, job)| Case {
                name: name.to_owned(),
                jobs,
                run: Box::new(move || engine_batch(&job, jobs, parallel, |_| echo())),
                samples: Vec::new(),
            })
            .collect();
        run_rounds(&mut cases, options.rounds, mode);
        let plain = cases[0].rates();
        for case in &cases {
            let rates = case.rates();
            let ratios: Vec<f64> = rates.iter().zip(&plain).map(|(a, b)| a / b).collect();
            // Extra wall time per job, over the plain case, across `parallel` slots.
            let extra = (1.0 / case.rate() - 1.0 / median(&plain)) * parallel as f64 * 1e3;
            table.row(vec![
                mode.to_owned(),
                case.name.clone(),
                jobs.to_string(),
                num(case.rate(), 0),
                ratio_cell(&ratios),
                num(extra, 3),
            ]);
        }
    }
    println!("{table}");
}

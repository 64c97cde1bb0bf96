//! Suite `oversubscribed`: the app's main-loop stalls while CPU-bound jobs oversubscribe the
//! cores (issue 24.3): `offload gui --batch offload-diag FILE -j <2 x cores>` with jobs that
//! burn CPU (`burn_ms`), the cairo renderer, under Xvfb; `--rounds` runs (3), and an idle run
//! (one job sleeping 3 s) in the same run as the probe's floor on this machine. The figures
//! are the probe's after the first second (the first layout of the batch's rows is start-up,
//! not the load), with the whole run's beside them; the median over the runs and each run's.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::{heading, median, num, range, verdict, Env, OrDie, Table};
use crate::gui::{have_xvfb, GuiRun};
use crate::smoothness::{run_workload, write_jsonl, Workload};

pub struct Options {
    pub rounds: usize,
    /// CPU-bound jobs per run.
    pub jobs: usize,
    /// Each job's CPU time, ms.
    pub burn_ms: u64,
    /// Jobs at once (twice the cores by default: the oversubscription).
    pub parallel: usize,
    pub renderer: String,
}

pub fn run(env: &Env, options: &Options) {
    if !have_xvfb() {
        println!("\n## Oversubscribed\n\nnot run: xvfb-run is missing (dev/setup installs it)");
        return;
    }
    heading(
        "Oversubscribed",
        &format!(
            "`offload gui --batch offload-diag FILE --exit-when-done --stall-report -j {}` on \
             {} cores, {} jobs each burning {} ms of CPU (a progress report every quarter), \
             `GSK_RENDERER={}`, under `xvfb-run -a -s \"-screen 0 1920x1080x24\"`; the \
             processors at the app's nice (10, Preferences) in their own autogroup or cgroup \
             weight as RELIABILITY.md says. `{}` runs, then one idle run (one job sleeping \
             3 s). \"Settled\" counts the gaps that ended a second or more into the run. \
             Targets: settled max under 16 ms and p99 under 4 ms (medians).",
            options.parallel,
            env.cores,
            options.jobs,
            options.burn_ms,
            options.renderer,
            options.rounds
        ),
    );
    let dir = tempfile::tempdir().or_die("creating a temporary directory");
    let burn = burn(env, dir.path(), options.jobs, options.burn_ms);
    let idle = Workload {
        name: "idle".to_owned(),
        processor: env.exe("offload-diag"),
        file: write_jsonl(dir.path(), "idle", 1, |_| {
            json!({"sleep_ms": 3000}).to_string()
        }),
        jobs: 1,
        result_bytes: 0,
    };
    let mut table = Table::new(&[
        "run",
        "wall s",
        "settled max ms",
        "settled p99 ms",
        "whole max ms",
        "whole p99 ms",
        "other load",
        "exit",
    ]);
    let (mut maxes, mut p99s) = (Vec::new(), Vec::new());
    let timeout = Duration::from_secs(600);
    let mut measure = |name: String, workload: &Workload, parallel: usize| -> Option<GuiRun> {
        match run_workload(
            env,
            "oversubscribed",
            workload,
            &options.renderer,
            parallel,
            timeout,
        ) {
            Ok(run) => {
                table.row(vec![
                    name,
                    num(run.sample.secs(), 1),
                    num(run.settled_max_ms, 1),
                    num(run.settled_p99_ms, 2),
                    num(run.max_ms, 1),
                    num(run.p99_ms, 2),
                    num(run.sample.other_load, 2),
                    run.status.to_string(),
                ]);
                Some(run)
            }
            Err(err) => {
                table.row(vec![name, format!("failed: {err}")]);
                None
            }
        }
    };
    for round in 1..=options.rounds {
        if let Some(run) = measure(format!("burn {round}"), &burn, options.parallel) {
            maxes.push(run.settled_max_ms);
            p99s.push(run.settled_p99_ms);
        }
    }
    measure("idle".to_owned(), &idle, 1);
    println!("{table}");
    if !maxes.is_empty() {
        let ((max_lo, max_hi), (p99_lo, p99_hi)) = (range(&maxes), range(&p99s));
        let (max, p99) = (median(&maxes), median(&p99s));
        println!(
            "- settled max, median of {}: {} ms (runs {}-{}), target under 16 ms: {}",
            maxes.len(),
            num(max, 1),
            num(max_lo, 1),
            num(max_hi, 1),
            verdict(max, 16.0, false)
        );
        println!(
            "- settled p99, median of {}: {} ms (runs {}-{}), target under 4 ms: {}",
            p99s.len(),
            num(p99, 2),
            num(p99_lo, 2),
            num(p99_hi, 2),
            verdict(p99, 4.0, false)
        );
    }
}

/// `jobs` diag jobs burning `burn_ms` of CPU each, with four progress reports.
fn burn(env: &Env, dir: &Path, jobs: usize, burn_ms: u64) -> Workload {
    let line = json!({"burn_ms": burn_ms, "progress_steps": 4}).to_string();
    Workload {
        name: "burn".to_owned(),
        processor: env.exe("offload-diag"),
        file: write_jsonl(dir, "burn", jobs, |_| line.clone()),
        jobs,
        result_bytes: 0,
    }
}

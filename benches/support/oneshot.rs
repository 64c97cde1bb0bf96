//! Suite `oneshot`: one-shot jobs as a user runs them (issue 24.4). `--oneshot-jobs` (3,000)
//! trivial jobs at -j <cores>, a process per job, for each of `--oneshot-processors`
//! (`diag`: `offload-diag`, a Rust SDK processor; `cat`: `/bin/cat`, a foreign tool that gives
//! its input item back, the cheapest processor there is):
//!
//! - the floor: the in-process spawn loop of the `overhead` suite, same processor, same input;
//! - `offload run PROCESSOR --no-persistent -j N --inputs FILE` as a whole process (it starts,
//!   reads and encodes the JSON Lines, runs, decodes and prints one JSON line per job in
//!   order, stdout to /dev/null), with its defaults (nice 10 included);
//! - the engine alone (`Queue`, `Persistence::Never`, submit all, await all), in this process.
//!
//! `--oneshot-nice N` runs `offload run` and the engine's processors at nice N instead of
//! offload's default 10 (the floor's run at the bench's own nice, 0): on a machine that others
//! load, nice 10 makes offload's processors yield to them and the floor's not, so the
//! default's ratio measures that courtesy as well as offload's own cost.
//!
//! The three alternate within each round (the order turns every round), so that the machine's
//! noise hits all of them; ratios are per round against that round's floor. Target: `offload
//! run` at 0.90x the floor or more.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use offload::{Job, Persistence, Processor};

use crate::common::{
    die, heading, measure, median, num, progress, ratio_cell, run_engine, run_floor, verdict, Env,
    OrDie, Sample, Table,
};

pub struct Options {
    pub jobs: usize,
    pub rounds: usize,
    pub parallel: usize,
    /// `diag`, `cat`.
    pub processors: Vec<String>,
    /// The processors' nice value for `offload run` and the engine (`None`: offload's default,
    /// 10; the floor's processors run at the bench's own, 0).
    pub nice: Option<i32>,
}

const ECHO: &str = "0123456789abcdef";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Floor,
    Run,
    Engine,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor (in-process spawn loop)",
            Self::Run => "offload run --no-persistent",
            Self::Engine => "engine (Queue, one-shot)",
        }
    }
}

pub fn run(env: &Env, options: &Options) {
    let p = options.parallel;
    heading(
        "One-shot jobs as a user runs them",
        &format!(
            "{} trivial jobs at -j {p}, a process per job, {} rounds; floor, `offload run` and \
             the engine alternate within each round (the order turns every round); ratios are \
             per round against that round's floor (median, and the range over rounds). The \
             input is `{{\"echo\": \"{ECHO}\"}}`. Target: offload run at 0.90x the floor or \
             more.",
            options.jobs, options.rounds
        ),
    );
    let dir = tempfile::tempdir().or_die("a temporary directory");
    let inputs = dir.path().join("inputs.jsonl");
    let line = format!("{{\"echo\":\"{ECHO}\"}}\n");
    std::fs::write(&inputs, line.repeat(options.jobs)).or_die("writing the inputs");
    let offload = env.exe("offload");
    let mut table = Table::new(&[
        "processor",
        "method",
        "jobs/s (median)",
        "ms/job (wall x j)",
        "host CPU µs/job",
        "other load",
        "vs floor (per round)",
    ]);
    let mut verdicts = Vec::new();
    for name in &options.processors {
        let program = processor(env, name);
        let mut samples: Vec<(Method, Sample)> = Vec::new();
        let methods = [Method::Floor, Method::Run, Method::Engine];
        for round in 0..options.rounds {
            for k in 0..methods.len() {
                let method = methods[(k + round) % methods.len()];
                let sample = match method {
                    Method::Floor => floor(&program, options.jobs, p),
                    Method::Run => offload_run(&offload, &program, &inputs, p, options.nice),
                    Method::Engine => engine(&program, options.jobs, p, options.nice),
                };
                progress(format!(
                    "oneshot {name} round {}: {:?} {:.0} jobs/s",
                    round + 1,
                    method,
                    options.jobs as f64 / sample.secs()
                ));
                samples.push((method, sample));
            }
        }
        let of = |m: Method| -> Vec<Sample> {
            samples
                .iter()
                .filter(|(method, _)| *method == m)
                .map(|(_, s)| *s)
                .collect()
        };
        let rates = |m: Method| -> Vec<f64> {
            of(m)
                .iter()
                .map(|s| options.jobs as f64 / s.secs())
                .collect()
        };
        let floor_rates = rates(Method::Floor);
        for method in methods {
            let r = rates(method);
            let per_round: Vec<f64> = r.iter().zip(&floor_rates).map(|(x, f)| x / f).collect();
            let host_us = median(
                &of(method)
                    .iter()
                    .map(|s| s.host_cpu.as_secs_f64() * 1e6 / options.jobs as f64)
                    .collect::<Vec<_>>(),
            );
            let other = median(&of(method).iter().map(|s| s.other_load).collect::<Vec<_>>());
            table.row(vec![
                name.clone(),
                method.name().to_owned(),
                num(median(&r), 0),
                num(p as f64 * 1e3 / median(&r), 3),
                // offload run is a child process: its CPU is not this process's.
                if method == Method::Run {
                    "-".to_owned()
                } else {
                    num(host_us, 0)
                },
                num(other, 2),
                ratio_cell(&per_round),
            ]);
            if method == Method::Run {
                let ratio = median(&per_round);
                verdicts.push(format!(
                    "{name}: offload run at {ratio:.2}x the floor (target 0.90x or more): {}",
                    verdict(ratio, 0.9, true)
                ));
            }
        }
    }
    println!("{table}");
    for line in verdicts {
        println!("- {line}");
    }
    let nice = options
        .nice
        .map(|n| format!(" --oneshot-nice {n}"))
        .unwrap_or_default();
    println!(
        "- Command: `cargo bench --bench bench -- oneshot --oneshot-jobs {} --rounds {} -j \
         {p}{nice}`.",
        options.jobs, options.rounds
    );
    println!();
}

/// The executable behind a processor's name in this suite.
fn processor(env: &Env, name: &str) -> PathBuf {
    match name {
        "diag" => env.exe("offload-diag"),
        "cat" => which_cat(),
        other => die(format!(
            "oneshot: unknown processor {other:?} (diag or cat)"
        )),
    }
}

fn which_cat() -> PathBuf {
    ["/usr/bin/cat", "/bin/cat"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| die("oneshot: no cat in /usr/bin or /bin"))
}

fn input(_: usize) -> serde_json::Value {
    serde_json::json!({ "echo": ECHO })
}

fn check(_: usize, out: ciborium::Value) -> Result<(), String> {
    let echoed = out
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("echo")))
        .and_then(|(_, v)| v.as_text());
    match echoed {
        Some(ECHO) => Ok(()),
        _ => Err("the result does not echo the input".to_owned()),
    }
}

fn floor(program: &Path, jobs: usize, parallel: usize) -> Sample {
    let (result, sample) = measure(|| run_floor(program, &[], jobs, parallel, input, check));
    result.unwrap_or_else(|err| die(format!("oneshot floor: {err}")));
    sample
}

fn engine(program: &Path, jobs: usize, parallel: usize, nice: Option<i32>) -> Sample {
    let mut job = Job::new(Processor::at(program)).persistence(Persistence::Never);
    if let Some(nice) = nice {
        job = job.nice(nice);
    }
    let (result, sample) = measure(|| run_engine(&job, jobs, parallel, input, check));
    result.unwrap_or_else(|err| die(format!("oneshot engine: {err}")));
    sample
}

fn offload_run(
    offload: &Path,
    program: &Path,
    inputs: &Path,
    parallel: usize,
    nice: Option<i32>,
) -> Sample {
    let (status, sample) = measure(|| {
        Command::new(offload)
            .arg("run")
            .arg(program)
            .args(["--no-persistent", "-j", &parallel.to_string(), "--inputs"])
            .arg(inputs)
            .args(
                nice.map(|n| ["--nice".to_owned(), n.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .stdout(Stdio::null())
            .status()
            .or_die("running offload run")
    });
    if !status.success() {
        die(format!("oneshot: offload run failed: {status}"));
    }
    sample
}

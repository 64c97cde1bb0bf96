//! Suite `launchers`: the per-job rate through each launcher, against local persistent workers.
//!
//! `offload-diag` echoing 16 bytes at -j <cores>, on persistent workers and with a process per
//! job, locally, as Slurm job steps (inside a real `salloc -n <cores>` allocation of the
//! single-node Slurm that `dev/cluster` starts) and over ssh (the loopback sshd of
//! `dev/cluster`). Each run is a child process of its own (this binary, re-executed, under
//! `salloc` for Slurm): it warms the workers up with 4 jobs per slot, then times the batch,
//! so the rate is the steady per-job rate; worker start-up is reported apart. Ratios are per
//! round against the local persistent run. Remote workers run pipelined (the next request
//! written while a job runs) and, for comparison, not.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload::{Job, Launcher, Persistence, Processor, Queue};

use crate::common::{
    busy_cpu, die, heading, median, num, on_fresh_context, progress, ratio_cell, EchoIn, Env,
    OrDie, Table,
};

pub struct Options {
    /// Jobs per run on workers.
    pub jobs: usize,
    /// Jobs per run with a process per job.
    pub spawn_jobs: usize,
    pub rounds: usize,
    pub parallel: usize,
}

/// Where the cluster keeps its ssh config (dev/cluster).
fn cluster_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("OFFLOAD_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/offload-cluster".into()),
    )
}

struct Case {
    launcher: &'static str,
    mode: &'static str,
    jobs: usize,
    rates: Vec<f64>,
    warmups: Vec<f64>,
    /// Busy CPU of the whole machine per job, µs.
    cpus: Vec<f64>,
}

pub fn run(env: &Env, options: &Options) {
    let started = Command::new(env.root.join("dev/cluster"))
        .arg("start")
        .output()
        .or_die("running dev/cluster");
    if !started.status.success() {
        die(format!(
            "launchers: dev/cluster start failed (root, slurm-wlm, munge and openssh-server are \
             needed; dev/setup installs them): {}",
            String::from_utf8_lossy(&started.stderr)
        ));
    }
    heading(
        "Launchers",
        &format!(
            "`offload-diag` echoing 16 bytes at -j {p}, {r} rounds: locally, as Slurm job steps \
             (`srun --exact -N1 -n1` inside `salloc -n {p}` on the single-node Slurm of \
             dev/cluster) and over ssh (`ssh -T` to the loopback sshd of dev/cluster). jobs/s \
             are steady rates (after 4 warm-up jobs per slot, which start the workers), \
             medians; ratios per round against local persistent workers. \"warm-up\" is the \
             wall time of those first jobs, worker start included; \"machine CPU\" is the \
             busy time of every core per job (/proc/stat), srun, slurmstepd, ssh and sshd \
             included, which on one machine compete with the host and the processors.",
            p = options.parallel,
            r = options.rounds
        ),
    );
    let mut cases = Vec::new();
    for launcher in ["local", "slurm", "ssh"] {
        cases.push(Case {
            launcher,
            mode: "persistent",
            jobs: options.jobs,
            rates: Vec::new(),
            warmups: Vec::new(),
            cpus: Vec::new(),
        });
    }
    for launcher in ["slurm", "ssh"] {
        cases.push(Case {
            launcher,
            mode: "persistent, not pipelined",
            jobs: options.jobs,
            rates: Vec::new(),
            warmups: Vec::new(),
            cpus: Vec::new(),
        });
    }
    for launcher in ["local", "slurm", "ssh"] {
        cases.push(Case {
            launcher,
            mode: "one-shot",
            jobs: options.spawn_jobs,
            rates: Vec::new(),
            warmups: Vec::new(),
            cpus: Vec::new(),
        });
    }
    let count = cases.len();
    for round in 0..options.rounds {
        for k in 0..count {
            let case = &mut cases[(round + k) % count];
            progress(format!(
                "launchers: round {}: {} {}",
                round + 1,
                case.launcher,
                case.mode
            ));
            let (rate, warmup, cpu) = child_run(env, case.launcher, case.mode, case.jobs, options);
            case.rates.push(rate);
            case.warmups.push(warmup);
            case.cpus.push(cpu);
        }
    }
    let base = cases[0].rates.clone();
    let mut table = Table::new(&[
        "launcher",
        "mode",
        "jobs",
        "jobs/s",
        "vs local persistent",
        "ms per job per slot",
        "machine CPU µs per job",
        "warm-up s",
    ]);
    for case in &cases {
        let ratios: Vec<f64> = case.rates.iter().zip(&base).map(|(a, b)| a / b).collect();
        let rate = median(&case.rates);
        table.row(vec![
            case.launcher.to_owned(),
            case.mode.to_owned(),
            case.jobs.to_string(),
            num(rate, 0),
            ratio_cell(&ratios),
            num(options.parallel as f64 / rate * 1e3, 3),
            num(median(&case.cpus), 0),
            num(median(&case.warmups), 3),
        ]);
    }
    println!("{table}");
}

/// One measured run in a child process; gives jobs/s, the warm-up's seconds and the machine's
/// busy CPU per job (µs).
fn child_run(
    env: &Env,
    launcher: &str,
    mode: &str,
    jobs: usize,
    options: &Options,
) -> (f64, f64, f64) {
    let me = std::env::current_exe().or_die("this bench's path");
    let mode_word = match mode {
        "persistent" => "persistent",
        "one-shot" => "one-shot",
        _ => "serial",
    };
    let spec = format!(
        "launchers:{launcher}:{mode_word}:{jobs}:{}",
        options.parallel
    );
    let mut command = if launcher == "slurm" {
        let mut c = Command::new("salloc");
        c.args(["-n", &options.parallel.to_string(), "--quiet"])
            .arg(&me);
        c
    } else {
        Command::new(&me)
    };
    command
        .args(["--child", &spec, "--bin-dir"])
        .arg(&env.bin_dir)
        .env_remove("SLURM_JOB_ID");
    let out = command.output().or_die("running a launchers child");
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Option<(f64, f64, f64)> = text.lines().find_map(|l| {
        let mut words = l.strip_prefix("launchers-child ")?.split(' ');
        let mut next = || words.next()?.parse::<f64>().ok();
        Some((next()?, next()?, next()?))
    });
    figures.unwrap_or_else(|| {
        die(format!(
            "launchers: the {launcher} {mode} run failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// The child: `launchers:LAUNCHER:MODE:JOBS:PARALLEL`.
pub fn child(env: &Env, spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [launcher, mode, jobs, parallel] = parts[..] else {
        die(format!("bad launchers child spec {spec:?}"));
    };
    let jobs: usize = jobs.parse().or_die("the job count");
    let parallel: usize = parallel.parse().or_die("the parallelism");
    let launcher = match launcher {
        "local" => Launcher::local(),
        "slurm" => Launcher::slurm(Vec::new()).or_die("the slurm launcher"),
        "ssh" => Launcher::parse(
            &format!("ssh:{parallel}/offload-a"),
            vec![format!("-F{}", cluster_dir().join("ssh_config").display()).into()],
        )
        .or_die("the ssh launcher"),
        other => die(format!("unknown launcher {other:?}")),
    };
    let persistence = if mode == "one-shot" {
        Persistence::Never
    } else {
        Persistence::Always
    };
    let job = Job::new(Processor::at(env.exe("offload-diag")))
        .persistence(persistence)
        .launcher(Arc::new(launcher));
    let input = serde_json::to_value(EchoIn {
        echo: b"0123456789abcdef",
    })
    .or_die("encoding the echo input");
    let result = on_fresh_context(|| async {
        let queue = Queue::with_max_running(parallel);
        let mut settings = queue.worker_settings();
        // "serial": one request in flight per worker, as before pipelining.
        settings.pipeline = mode != "serial";
        queue.set_worker_settings(settings);
        let batch = |n: usize| {
            let handles: Result<Vec<_>, _> = (0..n)
                .map(|_| queue.submit::<_, ciborium::Value>(&job, &input))
                .collect();
            async move {
                for (i, handle) in handles.map_err(|e| e.to_string())?.into_iter().enumerate() {
                    handle
                        .result()
                        .await
                        .map_err(|err| format!("job {i} failed: {err}"))?;
                }
                Ok::<(), String>(())
            }
        };
        let began = Instant::now();
        batch(4 * parallel).await?;
        let warmup = began.elapsed();
        let began = Instant::now();
        let busy = busy_cpu();
        batch(jobs).await?;
        let wall = began.elapsed();
        let cpu = (busy_cpu().saturating_sub(busy)).as_secs_f64() * 1e6 / jobs as f64;
        queue.shutdown();
        while queue.live_workers() > 0 {
            glib::timeout_future(Duration::from_millis(2)).await;
        }
        Ok::<(f64, f64, f64), String>((jobs as f64 / wall.as_secs_f64(), warmup.as_secs_f64(), cpu))
    });
    let (rate, warmup, cpu) = result.or_die("the launchers run");
    println!("launchers-child {rate} {warmup} {cpu}");
}

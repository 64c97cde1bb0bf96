//! offload's benchmarks (the issue "Benchmarks"): `cargo bench --bench bench -- SUITE...`, or
//! `dev/bench SUITE...`, which builds the release binaries first. They run the RELEASE builds
//! in `target/release` (`offload`, `offload-diag`, `offload-mandelbrot`, `offload-jitter`) and
//! `processors/python/offload-histogram`.
//!
//! Every figure is measured side by side with its baseline in the same run, the two
//! alternating (floor, engine, engine, floor, ...) so that machine noise hits both; tables give
//! medians, the ratio, and the absolute numbers. They are printed as Markdown on stdout
//! (progress goes to stderr). "other load" columns are the cores' worth of CPU that processes
//! outside the run used meanwhile (from /proc/stat): on a shared machine, a high value flags a
//! noisy figure.
//!
//! Suites (`all` runs every one; the defaults finish in about 15 minutes on 2 cores):
//!
//! - `overhead`: per-job overhead. `--jobs` (5,000) tiny jobs (a 16-byte byte string echoed by
//!   `offload-diag`) at -j 1 and -j <cores> (`-j 1,2` to choose): jobs/s of the engine (fresh
//!   main context, `Queue::with_max_running(n)`, submit all, await all) and of the floor (n
//!   threads, each spawning the processor with `std::process::Command`, writing the input,
//!   reading and decoding the result), plus `xargs -P` and GNU parallel as references
//!   (`--no-reference` skips them). Target: the engine at 90% or more of the floor.
//! - `throughput`: one job echoing a `--payload-mib` (256) MiB byte string, engine against
//!   the floor (1 MiB pipes, as the engine) and the floor with default 64 KiB pipes, each run
//!   in a fresh child process (this binary, re-executed) so that its peak RSS is its own; with
//!   `offload-diag` and with `cat` (which returns the input item unchanged: the host's data
//!   path alone), see `--throughput-processors`. Targets: 80% or more of the floor's MB/s;
//!   peak RSS within 3x the payload.
//! - `scaling`: the Mandelbrot mosaic of the demo (80 tiles) at -j 1 to <cores>, engine and
//!   floor; speedup against -j 1. Target on 2 cores: 1.9x or more at -j 2.
//! - `smoothness`: the app (`offload gui --batch ... --exit-when-done --stall-report`) under
//!   Xvfb with `--gui-jobs` (10,000) jobs whose results total `--gui-total-mib` (1,024) MiB,
//!   for each of `--renderers` (cairo,default) and `--gui-variants` (echo: diag echoing
//!   ~107 KB, so as much goes in; tiles: Mandelbrot tiles of ~107 KB from tiny inputs), plus
//!   an idle run for comparison. Targets: longest stall under 16 ms, p99 under 4 ms.
//! - `oversubscribed`: the app's stalls while `--burn-jobs` (48) diag jobs burning
//!   `--burn-ms` (500) of CPU each run at -j <2 x cores>, cairo renderer, `--rounds` runs and
//!   an idle one; figures after the first second, median and range. Targets: max under 16 ms,
//!   p99 under 4 ms.
//! - `scale`: `--scale-jobs` (100,000) tiny jobs submitted to a paused queue in a child
//!   process: time to submit, VmRSS per queued job, then the drain rate against a 5,000-job
//!   run (`--skip-drain` skips both), and `--scale-callback-jobs` (10,000) jobs whose results
//!   go to `on_finished` callbacks against the same awaited in one future; then the app
//!   draining `--scale-gui-jobs` tiny jobs, with its stall figures and memory per job, for each
//!   of `--scale-renderers` (cairo). That default is 20,000, to keep `all` short; 100,000
//!   takes about two minutes more.
//! - `startup`: `--startup-jobs` (50) jobs at -j 1 of the Python processor against the Rust
//!   ones (diag, jitter), tiny inputs: per-job time, i.e. what start-up costs each job. All
//!   one-shot (a process per job), as are `overhead`, `throughput`, `scaling` and the engine
//!   runs of `scale`; the app in `smoothness` and `scale` uses workers where it can.
//! - `persistent`: `--persistent-jobs` (20,000) trivial jobs on persistent workers at -j
//!   <cores> (`-j N`): a Python function through offload (engine and `offload run`) against
//!   `ProcessPoolExecutor` and `multiprocessing.Pool`, and against a process per job
//!   (`--persistent-spawn-jobs`, 300); `offload-diag` echo, persistent against a process per
//!   job; host CPU per job; the cold first job of a worker against warm ones. Targets: 1.0x
//!   `ProcessPoolExecutor`, 10x a process per job.
//! - `containment`: what a 256 MiB memory limit (a cgroup where the system allows one) and the
//!   sandbox (bubblewrap) add per job, a process per job (`3 x --persistent-spawn-jobs`) and
//!   on workers (`--persistent-jobs / 2`), against the plain case (which already runs below
//!   the guard).
//! - `launchers`: `offload-diag` echoing 16 bytes at -j <cores> through each launcher: local,
//!   Slurm job steps inside a real `salloc` of the single-node Slurm of `dev/cluster`, and ssh
//!   to its loopback sshd; on persistent workers (`--persistent-jobs / 2`) and a process per
//!   job (`--persistent-spawn-jobs`), against local persistent workers. Needs root (it runs
//!   `dev/cluster start`). Target: persistent workers through srun and ssh at 0.8x or more.
//! - `pipeline`: `offload run` as a whole process (JSON Lines in, JSON lines out): per-job
//!   overhead with a process per job (`--jobs / 2`) against the floor and GNU parallel, and on
//!   persistent workers (`--persistent-jobs`); peak RSS for `--pipeline-inputs` (10,000 to
//!   1,000,000) inputs streamed through a pipe (target: independent of N, under 64 MB); the
//!   latency from an input line to its result line.
//! - `thumbnails`: `--photos` (60) 1920x1080 JPEGs to 256 px PNGs at -j <cores>: `offload run
//!   thumbnail --files` against GNU parallel + ImageMagick `convert` and GNU parallel +
//!   `vipsthumbnail`, and per CPU second against `vipsthumbnail`'s batch mode. Targets: 2x
//!   parallel + convert, 1.0x parallel + vipsthumbnail.
//! - `scheduling`: batches of jobs of mixed durations (3000/100/3000 ms; alternating 800-1200
//!   and 30-60 ms; random 20-1500 ms) at -j <cores>, on workers and one-shot: the makespan
//!   against the greedy list schedule of the same jobs in submission order plus a worker's
//!   start. Target: at most 1.05x; 3000/100/3000 within 10% of 3.1 s.
//!
//! - `oneshot`: one-shot jobs as a user runs them (issue 24.4): `--oneshot-jobs` (3,000)
//!   trivial jobs at -j <cores> through `offload-diag` and `/bin/cat`
//!   (`--oneshot-processors`): `offload run --no-persistent` as a whole process and the engine
//!   alone, each against the in-process floor with the same processor, the three alternating
//!   within each round. Target: `offload run` at 0.90x the floor or more.
//!
//! `--rounds` (3) sets how many times each engine/floor pair runs (`--overhead-rounds`, 5, for
//! `overhead`); `--wait-quiet SECS` makes every run first wait for the rest of the machine to
//! be idle. Run with `--help` for the options. Without a suite and outside `cargo bench` (e.g.
//! under `cargo test --benches`), it only says how to run it.

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, ValueEnum};

#[path = "support/common.rs"]
mod common;
#[path = "support/containment.rs"]
mod containment;
#[path = "support/gui.rs"]
mod gui;
#[path = "support/launchers.rs"]
mod launchers;
#[path = "support/oneshot.rs"]
mod oneshot;
#[path = "support/overhead.rs"]
mod overhead;
#[path = "support/oversubscribed.rs"]
mod oversubscribed;
#[path = "support/persistent.rs"]
mod persistent;
#[path = "support/pipeline.rs"]
mod pipeline;
#[path = "support/scale.rs"]
mod scale;
#[path = "support/scaling.rs"]
mod scaling;
#[path = "support/scheduling.rs"]
mod scheduling;
#[path = "support/smoothness.rs"]
mod smoothness;
#[path = "support/startup.rs"]
mod startup;
#[path = "support/throughput.rs"]
mod throughput;
#[path = "support/thumbnails.rs"]
mod thumbnails;

use common::{die, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Overhead,
    Throughput,
    Scaling,
    Smoothness,
    Scale,
    Startup,
    Persistent,
    Containment,
    Launchers,
    Pipeline,
    Thumbnails,
    Scheduling,
    Oversubscribed,
    Oneshot,
    All,
}

/// offload's benchmarks; see the top of benches/bench.rs for what each suite measures.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Which suites to run.
    #[arg(value_enum)]
    suites: Vec<Suite>,
    /// How many times each measured case runs (alternating with its baseline); medians are
    /// reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// overhead: rounds (its figures are close to the target and noisy, hence more than
    /// `--rounds`).
    #[arg(long, default_value_t = 5)]
    overhead_rounds: usize,
    /// overhead: tiny jobs per run.
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    /// overhead: parallelism levels, comma-separated (default: 1 and the core count).
    #[arg(short = 'j', long = "parallel", value_delimiter = ',')]
    parallel: Vec<usize>,
    /// overhead: skip xargs and GNU parallel.
    #[arg(long)]
    no_reference: bool,
    /// throughput: payload size in MiB.
    #[arg(long, default_value_t = 256)]
    payload_mib: usize,
    /// throughput: processors, comma-separated (diag: offload-diag; cat: the `cat` command,
    /// which returns its input item unchanged).
    #[arg(long, value_delimiter = ',', default_value = "diag,cat")]
    throughput_processors: Vec<String>,
    /// oversubscribed: CPU-bound jobs per run of the app.
    #[arg(long, default_value_t = 48)]
    burn_jobs: usize,
    /// oversubscribed: each job's CPU time, ms.
    #[arg(long, default_value_t = 500)]
    burn_ms: u64,
    /// smoothness: jobs per run of the app.
    #[arg(long, default_value_t = 10_000)]
    gui_jobs: usize,
    /// smoothness: the results of one run total at least this many MiB.
    #[arg(long, default_value_t = 1024)]
    gui_total_mib: usize,
    /// smoothness: workloads, comma-separated (echo, tiles).
    #[arg(long, value_delimiter = ',', default_value = "echo,tiles")]
    gui_variants: Vec<String>,
    /// smoothness: GTK renderers, comma-separated (cairo, gl, ngl, vulkan, or default: unset).
    #[arg(long, value_delimiter = ',', default_value = "cairo,default")]
    renderers: Vec<String>,
    /// scale: jobs queued in the engine.
    #[arg(long, default_value_t = 100_000)]
    scale_jobs: usize,
    /// scale: jobs the app drains (0: skip the app).
    #[arg(long, default_value_t = 20_000)]
    scale_gui_jobs: usize,
    /// scale: GTK renderers for the app, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "cairo")]
    scale_renderers: Vec<String>,
    /// scale: jobs of the run with `on_finished` callbacks, and of the awaited run it is
    /// compared with (0: skip both).
    #[arg(long, default_value_t = 10_000)]
    scale_callback_jobs: usize,
    /// scale: only submit (no drain, no reference run).
    #[arg(long)]
    skip_drain: bool,
    /// startup: jobs per run.
    #[arg(long, default_value_t = 50)]
    startup_jobs: usize,
    /// persistent: jobs per run on workers and in Python's pools.
    #[arg(long, default_value_t = 20_000)]
    persistent_jobs: usize,
    /// persistent: jobs per run with a process per job.
    #[arg(long, default_value_t = 300)]
    persistent_spawn_jobs: usize,
    /// pipeline: input counts of the memory runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pipeline_inputs: Vec<usize>,
    /// oneshot: jobs per run.
    #[arg(long, default_value_t = 3000)]
    oneshot_jobs: usize,
    /// oneshot: processors, comma-separated (diag: offload-diag; cat: /bin/cat, which gives
    /// its input item back).
    #[arg(long, value_delimiter = ',', default_value = "diag,cat")]
    oneshot_processors: Vec<String>,
    /// oneshot: the processors' nice value for offload run and the engine (default: offload's,
    /// 10; the floor's processors run at the bench's own).
    #[arg(long)]
    oneshot_nice: Option<i32>,
    /// thumbnails: how many 1920x1080 photos.
    #[arg(long, default_value_t = 60)]
    photos: usize,
    /// Before each measured run, wait up to this many seconds for the rest of the machine to
    /// be quiet (under 0.3 cores busy); 0: do not wait.
    #[arg(long, default_value_t = 0)]
    wait_quiet: u64,
    /// Where the release binaries are (default: where cargo built this bench's `offload`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: one measured run in a child process (throughput:METHOD:PROCESSOR,
    /// scale-engine).
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() {
    let args = Args::parse();
    let env = Env::new(args.bin_dir.clone());
    let parallel = args.parallel.first().copied().unwrap_or(env.cores);
    if let Some(child) = &args.child {
        if let Some(spec) = child.strip_prefix("launchers:") {
            launchers::child(&env, spec);
            return;
        }
        if let Some(spec) = child.strip_prefix("throughput:") {
            throughput::child(&env, spec, args.payload_mib);
            return;
        }
        match child.as_str() {
            "scale-engine" => scale::child(
                &env,
                args.scale_jobs,
                args.scale_callback_jobs,
                parallel,
                !args.skip_drain,
            ),
            other => die(format!("unknown child run {other:?}")),
        }
        return;
    }
    let mut suites = args.suites.clone();
    if suites.is_empty() {
        if !args.bench {
            println!(
                "bench: no suite named; run `dev/bench all` or `cargo bench --bench bench -- \
                 SUITE` (overhead, throughput, scaling, smoothness, scale, startup, persistent, containment, \
                 launchers, pipeline, thumbnails, scheduling, oversubscribed, oneshot, all)"
            );
            return;
        }
        suites.push(Suite::All);
    }
    common::set_quiet_wait(std::time::Duration::from_secs(args.wait_quiet));
    let wants = |suite: Suite| suites.contains(&suite) || suites.contains(&Suite::All);
    let rounds = args.rounds.max(1);
    println!("# offload benchmarks\n");
    machine(&env);
    if wants(Suite::Overhead) {
        let parallel = if args.parallel.is_empty() {
            env.default_parallelism()
        } else {
            args.parallel.clone()
        };
        overhead::run(
            &env,
            &overhead::Options {
                jobs: args.jobs,
                rounds: args.overhead_rounds.max(1),
                parallel,
                reference: !args.no_reference,
            },
        );
    }
    if wants(Suite::Throughput) {
        throughput::run(
            &env,
            &throughput::Options {
                payload_mib: args.payload_mib,
                rounds,
                processors: args.throughput_processors.clone(),
            },
        );
    }
    if wants(Suite::Scaling) {
        scaling::run(&env, &scaling::Options { rounds });
    }
    if wants(Suite::Smoothness) {
        smoothness::run(
            &env,
            &smoothness::Options {
                jobs: args.gui_jobs,
                total_mib: args.gui_total_mib,
                variants: args.gui_variants.clone(),
                renderers: args.renderers.clone(),
                parallel: env.cores,
            },
        );
    }
    if wants(Suite::Scale) {
        scale::run(
            &env,
            &scale::Options {
                jobs: args.scale_jobs,
                gui_jobs: args.scale_gui_jobs,
                drain: !args.skip_drain,
                callback_jobs: args.scale_callback_jobs,
                renderers: args.scale_renderers.clone(),
                parallel: env.cores,
            },
        );
    }
    if wants(Suite::Scheduling) {
        scheduling::run(
            &env,
            &scheduling::Options {
                rounds,
                parallel: parallel.max(2),
            },
        );
    }
    if wants(Suite::Oversubscribed) {
        oversubscribed::run(
            &env,
            &oversubscribed::Options {
                rounds,
                jobs: args.burn_jobs,
                burn_ms: args.burn_ms,
                parallel: 2 * env.cores,
                renderer: "cairo".to_owned(),
            },
        );
    }
    if wants(Suite::Startup) {
        startup::run(
            &env,
            &startup::Options {
                jobs: args.startup_jobs,
                rounds,
            },
        );
    }
    if wants(Suite::Containment) {
        containment::run(
            &env,
            &containment::Options {
                spawn_jobs: args.persistent_spawn_jobs * 3,
                jobs: args.persistent_jobs / 2,
                rounds,
                parallel,
            },
        );
    }
    if wants(Suite::Launchers) {
        launchers::run(
            &env,
            &launchers::Options {
                jobs: args.persistent_jobs / 2,
                spawn_jobs: args.persistent_spawn_jobs,
                rounds,
                parallel,
            },
        );
    }
    if wants(Suite::Pipeline) {
        pipeline::run(
            &env,
            &pipeline::Options {
                spawn_jobs: args.jobs / 2,
                jobs: args.persistent_jobs,
                inputs: args.pipeline_inputs.clone(),
                rounds,
                parallel,
            },
        );
    }
    if wants(Suite::Oneshot) {
        oneshot::run(
            &env,
            &oneshot::Options {
                jobs: args.oneshot_jobs,
                rounds,
                parallel,
                processors: args.oneshot_processors.clone(),
                nice: args.oneshot_nice,
            },
        );
    }
    if wants(Suite::Thumbnails) {
        thumbnails::run(
            &env,
            &thumbnails::Options {
                photos: args.photos,
                rounds,
                parallel,
            },
        );
    }
    if wants(Suite::Persistent) {
        persistent::run(
            &env,
            &persistent::Options {
                jobs: args.persistent_jobs,
                spawn_jobs: args.persistent_spawn_jobs,
                rounds,
                parallel,
            },
        );
    }
}

/// The machine, as the issue asks: cores, memory, CPU, and what else is running.
fn machine(env: &Env) {
    println!("## Machine\n");
    println!("```");
    for (label, program, args) in [
        ("$ nproc", "nproc", &[][..]),
        ("$ free -h", "free", &["-h"][..]),
        ("$ uname -r", "uname", &["-r"][..]),
        ("$ rustc -V", "rustc", &["-V"][..]),
        (
            "$ pkg-config --modversion gtk4",
            "pkg-config",
            &["--modversion", "gtk4"][..],
        ),
        (
            "$ git rev-parse --short HEAD",
            "git",
            &["rev-parse", "--short", "HEAD"][..],
        ),
    ] {
        let output = Command::new(program)
            .args(args)
            .current_dir(&env.root)
            .output();
        let text = output.map_or_else(
            |err| format!("({program}: {err})"),
            |o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned(),
        );
        println!("{label}\n{text}");
    }
    let lscpu = Command::new("lscpu").output().map_or_else(
        |err| format!("(lscpu: {err})"),
        |o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    println!("$ lscpu | head\n{lscpu}");
    println!("$ cat /proc/loadavg (at start)\n{}", common::loadavg());
    println!("```");
    println!("\nbinaries: {}", env.bin_dir.display());
}

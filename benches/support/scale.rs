//! Suite `scale`: 100,000 queued jobs. In a fresh child process: time to submit them to a
//! paused queue, host memory per queued job (VmRSS before and after), then the time to drain
//! them, against the rate of a 5,000-job run in the same process; and the same number of jobs
//! with each result going to a `JobHandle::on_finished` callback (as the app does) against
//! results awaited in one future. Then the app under Xvfb draining as many tiny jobs, with its
//! stall figures and memory per job (its peak RSS against a 10-job run's).

use std::cell::Cell;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ciborium::Value;
use offload::{Job, Persistence, Processor, Queue};

use crate::common::{
    die, heading, num, on_fresh_context, progress, run_engine, status_kib, EchoIn, Env, OrDie,
    Table,
};
use crate::gui::have_xvfb;
use crate::smoothness::{self, Workload};

const PAYLOAD: [u8; 16] = *b"0123456789abcdef";
/// The size of the run the drain rate is compared with.
const REFERENCE_JOBS: usize = 5000;

pub struct Options {
    pub jobs: usize,
    pub gui_jobs: usize,
    pub drain: bool,
    pub callback_jobs: usize,
    pub renderers: Vec<String>,
    pub parallel: usize,
}

pub fn run(env: &Env, options: &Options) {
    let mut what = format!(
        "{} tiny jobs (`offload-diag` echoing 16 bytes), -j {}. Engine, in a fresh child \
         process: submitted to a paused queue (handles kept), VmRSS before and after",
        options.jobs, options.parallel
    );
    if options.drain {
        what.push_str(&format!(
            "; then unpaused and drained; then a {REFERENCE_JOBS}-job run for the rate"
        ));
        if options.callback_jobs > 0 {
            what.push_str(&format!(
                "; then {} jobs with results awaited in one future against as many with \
                 results to `on_finished` callbacks",
                options.callback_jobs
            ));
        }
    }
    what.push('.');
    if options.gui_jobs > 0 {
        what.push_str(&format!(
            " App: `offload gui --batch` over {} such jobs, against a 10-job run for memory.",
            options.gui_jobs
        ));
    }
    heading("Scale", &what);
    let report = spawn_child(env, options);
    let field = |name: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| die(format!("the child run printed no {name}: {report:?}")))
    };
    let jobs = options.jobs as f64;
    let submit = field("submit_secs");
    let per_job = (field("rss_after_kib") - field("rss_before_kib")) * 1024.0 / jobs;
    let mut table = Table::new(&["figure", "value"]);
    table.row(vec!["jobs queued".into(), options.jobs.to_string()]);
    table.row(vec![
        "time to submit all (s)".into(),
        format!("{} ({:.1} us per job)", num(submit, 3), submit * 1e6 / jobs),
    ]);
    table.row(vec![
        "host VmRSS before / after (MiB)".into(),
        format!(
            "{} / {}",
            num(field("rss_before_kib") / 1024.0, 1),
            num(field("rss_after_kib") / 1024.0, 1)
        ),
    ]);
    table.row(vec![
        "host memory per queued job (bytes)".into(),
        num(per_job, 0),
    ]);
    if options.drain {
        let drain = jobs / field("drain_secs");
        let reference = REFERENCE_JOBS as f64 / field("reference_secs");
        table.row(vec![
            format!("drain rate, {} jobs (jobs/s)", options.jobs),
            num(drain, 0),
        ]);
        table.row(vec![
            format!("rate of a {REFERENCE_JOBS}-job run (jobs/s)"),
            num(reference, 0),
        ]);
        table.row(vec![
            "drain rate / reference rate".into(),
            num(drain / reference, 2),
        ]);
        if options.callback_jobs > 0 {
            let n = options.callback_jobs as f64;
            let awaited = n / field("awaited_secs");
            let callbacks = n / field("callbacks_secs");
            table.row(vec![
                format!(
                    "{} jobs, results awaited in one future (jobs/s)",
                    options.callback_jobs
                ),
                num(awaited, 0),
            ]);
            table.row(vec![
                format!(
                    "{} jobs, results to `on_finished` callbacks, as the app does (jobs/s)",
                    options.callback_jobs
                ),
                num(callbacks, 0),
            ]);
            table.row(vec![
                "callbacks rate / awaited rate".into(),
                num(callbacks / awaited, 2),
            ]);
        }
    }
    println!("{table}");
    if options.gui_jobs == 0 {
        return;
    }
    if !have_xvfb() {
        println!("app part not run: xvfb-run is missing (dev/setup installs it)");
        return;
    }
    let dir = tempfile::tempdir().or_die("creating a temporary directory");
    let diag = env.exe("offload-diag");
    let line = serde_json::json!({"echo": {"$bytes": "MDEyMzQ1Njc4OWFiY2RlZg=="}}).to_string();
    let small = Workload {
        name: "10 jobs".to_owned(),
        processor: diag.clone(),
        file: smoothness::write_jsonl(dir.path(), "small", 10, |_| line.clone()),
        jobs: 10,
        result_bytes: 160,
    };
    let big = Workload {
        name: format!("{} jobs", options.gui_jobs),
        processor: diag,
        file: smoothness::write_jsonl(dir.path(), "big", options.gui_jobs, |_| line.clone()),
        jobs: options.gui_jobs,
        result_bytes: options.gui_jobs as u64 * 16,
    };
    let mut table = smoothness::header();
    let mut notes = Vec::new();
    for renderer in &options.renderers {
        let mut peaks = Vec::new();
        for workload in [&small, &big] {
            let timeout = Duration::from_secs(3600);
            match smoothness::run_workload(
                env,
                "scale: app",
                workload,
                renderer,
                options.parallel,
                timeout,
            ) {
                Ok(run) => {
                    peaks.push(run.peak_rss_kib as f64);
                    if workload.jobs == options.gui_jobs {
                        notes.push(format!(
                            "app draining {} jobs, {renderer} renderer: {}",
                            options.gui_jobs,
                            smoothness::stall_verdict(&run)
                        ));
                    }
                    table.row(smoothness::row(workload, renderer, &run));
                }
                Err(err) => table.row(vec![
                    workload.name.clone(),
                    renderer.clone(),
                    format!("failed: {err}"),
                ]),
            }
        }
        if let [small_peak, big_peak] = peaks[..] {
            notes.push(format!(
                "app memory per job ({renderer} renderer; rows and records of finished jobs \
                 are kept): {:.0} bytes (peak RSS {:.0} MiB against {:.0} MiB for 10 jobs)",
                (big_peak - small_peak) * 1024.0 / (options.gui_jobs as f64 - 10.0).max(1.0),
                big_peak / 1024.0,
                small_peak / 1024.0
            ));
        }
    }
    println!("{table}");
    for note in notes {
        println!("- {note}");
    }
}

fn spawn_child(env: &Env, options: &Options) -> String {
    let exe = std::env::current_exe().or_die("locating the bench executable");
    let mut command = Command::new(exe);
    command
        .arg("--child")
        .arg("scale-engine")
        .arg("--scale-jobs")
        .arg(options.jobs.to_string())
        .arg("--scale-callback-jobs")
        .arg(options.callback_jobs.to_string())
        .arg("--bin-dir")
        .arg(&env.bin_dir)
        .arg("-j")
        .arg(options.parallel.to_string());
    if !options.drain {
        command.arg("--skip-drain");
    }
    progress(format!(
        "scale: engine, {} jobs in a child process",
        options.jobs
    ));
    let output = command.output().or_die("starting a child run of the bench");
    if !output.status.success() {
        die(format!(
            "the scale run failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// In the child: submit `jobs` to a paused queue, measure, drain; then the reference run and
/// the callback comparison. Prints one line of figures.
pub fn child(env: &Env, jobs: usize, callback_jobs: usize, parallel: usize, drain: bool) {
    let diag = env.exe("offload-diag");
    // A process per job, as when these figures were first taken (suite `persistent` has workers).
    let job = Job::new(Processor::at(&diag)).persistence(Persistence::Never);
    let input = EchoIn { echo: &PAYLOAD };
    let mut line = on_fresh_context(|| async {
        let queue = Queue::with_max_running(parallel);
        queue.set_paused(true);
        let rss_before_kib = status_kib("VmRSS");
        let start = Instant::now();
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                queue
                    .submit::<_, Value>(&job, &input)
                    .or_die("submitting a job")
            })
            .collect();
        let submit_secs = start.elapsed().as_secs_f64();
        let rss_after_kib = status_kib("VmRSS");
        let mut line = format!(
            "submit_secs={submit_secs} rss_before_kib={rss_before_kib} \
             rss_after_kib={rss_after_kib}"
        );
        if drain {
            let start = Instant::now();
            queue.set_paused(false);
            for (i, handle) in handles.into_iter().enumerate() {
                if let Err(err) = handle.result().await {
                    die(format!("job {i} of the drain failed: {err}"));
                }
            }
            line.push_str(&format!(" drain_secs={}", start.elapsed().as_secs_f64()));
        } else {
            queue.cancel_all();
        }
        line
    });
    if !drain {
        println!("{line}");
        return;
    }
    let timed = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let reference = timed(&|| {
        run_engine(
            &job,
            REFERENCE_JOBS,
            parallel,
            |_| &input,
            |_, _: Value| Ok(()),
        )
        .or_die("the reference run")
    });
    line.push_str(&format!(" reference_secs={reference}"));
    if callback_jobs > 0 {
        let awaited = timed(&|| {
            run_engine(
                &job,
                callback_jobs,
                parallel,
                |_| &input,
                |_, _: Value| Ok(()),
            )
            .or_die("the awaited run")
        });
        let callbacks = timed(&|| run_with_callbacks(&job, callback_jobs, parallel, &input));
        line.push_str(&format!(
            " awaited_secs={awaited} callbacks_secs={callbacks}"
        ));
    }
    println!("{line}");
}

/// `count` jobs whose results go to `JobHandle::on_finished` callbacks (as the app does), not
/// to one future awaiting them all.
fn run_with_callbacks(job: &Job, count: usize, parallel: usize, input: &EchoIn<'_>) {
    on_fresh_context(|| async {
        let queue = Queue::with_max_running(parallel);
        let done = Rc::new(Cell::new(0usize));
        let failed = Rc::new(Cell::new(0usize));
        for _ in 0..count {
            let handle = queue
                .submit::<_, Value>(job, input)
                .or_die("submitting a job");
            let (done, failed) = (done.clone(), failed.clone());
            handle.on_finished(move |finished| {
                done.set(done.get() + 1);
                if finished.result.is_err() {
                    failed.set(failed.get() + 1);
                }
            });
        }
        while done.get() < count {
            glib::timeout_future(Duration::from_millis(5)).await;
        }
        if failed.get() > 0 {
            die(format!("{} jobs of the callback run failed", failed.get()));
        }
    });
}

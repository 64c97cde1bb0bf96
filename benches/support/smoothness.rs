//! Suite `smoothness`: the app's stall probe while it runs 10,000 jobs whose results total
//! 1 GiB or more, with GTK's cairo renderer and with its default one, under Xvfb.
//!
//! Two workloads give the same result volume: `echo` (the issue's: `offload-diag` echoes a
//! ~107 KB byte string, so the same volume also goes in, from a ~1.5 GB JSON Lines file of
//! base64) and `tiles` (`offload-mandelbrot` tiles of ~107 KB of pixels each from an input of
//! a few bytes, so only the results are large). The difference tells input-side costs from
//! result-side ones. A third row per renderer, `idle`, is the app running one job that sleeps
//! 3 s: what the probe reads with nothing to do, for comparison.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ciborium::Value;
use offload::sdk::json::cbor_to_json;
use serde_json::json;

use crate::common::{die, heading, num, payload, progress, verdict, Env, OrDie, Table};
use crate::gui::{have_xvfb, run_gui, GuiRun};

pub struct Options {
    pub jobs: usize,
    pub total_mib: usize,
    pub variants: Vec<String>,
    pub renderers: Vec<String>,
    pub parallel: usize,
}

/// One workload: which processor over which file.
pub struct Workload {
    pub name: String,
    pub processor: PathBuf,
    pub file: PathBuf,
    pub jobs: usize,
    /// Result bytes in all (payload only).
    pub result_bytes: u64,
}

pub fn run(env: &Env, options: &Options) {
    if !have_xvfb() {
        println!("\n## Smoothness\n\nnot run: xvfb-run is missing (dev/setup installs it)");
        return;
    }
    let total = (options.total_mib as u64) << 20;
    let per_job = total.div_ceil(options.jobs.max(1) as u64) as usize;
    heading(
        "Smoothness",
        &format!(
            "`offload gui --batch PROCESSOR FILE --exit-when-done --stall-report -j {}` under \
             `xvfb-run -a -s \"-screen 0 1920x1080x24\"`, {} jobs whose results total {} MiB \
             or more ({} bytes each). One run per workload and renderer. The stall probe \
             starts at the window's second frame and stops when it closes. Workloads: `echo` = \
             `offload-diag` echoing a {per_job}-byte byte string (the same volume goes in, as \
             base64 in the JSONL file); `tiles` = `offload-mandelbrot` tiles of {per_job}+ \
             bytes of RGBA from a tiny input; `idle` = one job sleeping 3 s.",
            options.parallel, options.jobs, options.total_mib, per_job
        ),
    );
    let dir = tempfile::tempdir().or_die("creating a temporary directory");
    let mut workloads = vec![idle(env, dir.path())];
    for variant in &options.variants {
        let workload = match variant.as_str() {
            "echo" => echo(env, dir.path(), options.jobs, per_job),
            "tiles" => tiles(env, dir.path(), options.jobs, per_job),
            other => die(format!(
                "unknown smoothness variant {other:?} (echo, tiles)"
            )),
        };
        workloads.push(workload);
    }
    let mut table = header();
    let mut verdicts = Vec::new();
    for renderer in &options.renderers {
        for workload in &workloads {
            let name = &workload.name;
            let timeout = Duration::from_secs(1800);
            match run_workload(
                env,
                "smoothness",
                workload,
                renderer,
                options.parallel,
                timeout,
            ) {
                Ok(run) => {
                    if workload.name != "idle" {
                        verdicts.push(format!(
                            "{name}, {renderer} renderer: {}",
                            stall_verdict(&run)
                        ));
                    }
                    table.row(row(workload, renderer, &run));
                }
                Err(err) => table.row(vec![
                    name.clone(),
                    renderer.clone(),
                    format!("failed: {err}"),
                ]),
            }
        }
    }
    println!("{table}");
    for line in verdicts {
        println!("- {line}");
    }
}

/// Runs `workload` in the app with `renderer`, saying on stderr (prefixed with `suite`) what
/// runs and what its stall probe read.
pub fn run_workload(
    env: &Env,
    suite: &str,
    workload: &Workload,
    renderer: &str,
    parallel: usize,
    timeout: Duration,
) -> Result<GuiRun, String> {
    let name = &workload.name;
    progress(format!("{suite}: {name} with the {renderer} renderer"));
    let ran = run_gui(
        env,
        &workload.processor,
        &workload.file,
        parallel,
        renderer,
        timeout,
    );
    match &ran {
        Ok(run) => progress(format!(
            "{suite}: {name} {renderer}: max {:.1} ms p99 {:.2} ms in {:.1} s",
            run.max_ms,
            run.p99_ms,
            run.sample.secs()
        )),
        Err(err) => progress(format!("{suite}: {name} {renderer}: {err}")),
    }
    ran
}

/// A run's stall figures against the targets (max under 16 ms, p99 under 4 ms).
pub fn stall_verdict(run: &GuiRun) -> String {
    format!(
        "max {:.1} ms (target under 16 ms): {}; p99 {:.2} ms (target under 4 ms): {}",
        run.max_ms,
        verdict(run.max_ms, 16.0, false),
        run.p99_ms,
        verdict(run.p99_ms, 4.0, false)
    )
}

pub fn header() -> Table {
    Table::new(&[
        "workload",
        "renderer",
        "jobs",
        "results MiB",
        "input file MiB",
        "wall s",
        "jobs/s",
        "stall max ms",
        "stall p99 ms",
        "probe samples",
        "app peak RSS MiB",
        "other load",
        "exit",
    ])
}

pub fn row(workload: &Workload, renderer: &str, run: &GuiRun) -> Vec<String> {
    let file_mib = std::fs::metadata(&workload.file).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    vec![
        workload.name.clone(),
        renderer.to_owned(),
        workload.jobs.to_string(),
        num(workload.result_bytes as f64 / 1048576.0, 0),
        num(file_mib, 1),
        num(run.sample.secs(), 1),
        num(workload.jobs as f64 / run.sample.secs(), 0),
        num(run.max_ms, 1),
        num(run.p99_ms, 2),
        run.samples.to_string(),
        num(run.peak_rss_kib as f64 / 1024.0, 0),
        num(run.sample.other_load, 2),
        run.status.to_string(),
    ]
}

/// Writes `line` `count` times to `dir/name.jsonl`.
pub fn write_jsonl(
    dir: &Path,
    name: &str,
    count: usize,
    line: impl Fn(usize) -> String,
) -> PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    let file = File::create(&path).or_die("creating a JSONL file");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for i in 0..count {
        out.write_all(line(i).as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .or_die("writing the JSONL file");
    }
    out.flush().or_die("writing the JSONL file");
    path
}

fn idle(env: &Env, dir: &Path) -> Workload {
    Workload {
        name: "idle".to_owned(),
        processor: env.exe("offload-diag"),
        file: write_jsonl(dir, "idle", 1, |_| json!({"sleep_ms": 3000}).to_string()),
        jobs: 1,
        result_bytes: 0,
    }
}

/// `offload-diag` echoing `bytes` bytes per job.
pub fn echo(env: &Env, dir: &Path, jobs: usize, bytes: usize) -> Workload {
    progress(format!(
        "smoothness: writing {jobs} echo inputs of {bytes} bytes"
    ));
    let line = json!({"echo": cbor_to_json(&Value::Bytes(payload(bytes)))}).to_string();
    Workload {
        name: "echo".to_owned(),
        processor: env.exe("offload-diag"),
        file: write_jsonl(dir, "echo", jobs, |_| line.clone()),
        jobs,
        result_bytes: (jobs * bytes) as u64,
    }
}

/// `offload-mandelbrot` tiles of at least `bytes` bytes of RGBA each, cheap to compute.
fn tiles(env: &Env, dir: &Path, jobs: usize, bytes: usize) -> Workload {
    let side = ((bytes as f64 / 4.0).sqrt().ceil() as u32).max(1);
    let line = json!({
        "x0": -2.4, "y0": -1.2, "x1": 0.8, "y1": 1.2,
        "width": side, "height": side, "max_iter": 32, "samples": 1
    })
    .to_string();
    Workload {
        name: "tiles".to_owned(),
        processor: env.exe("offload-mandelbrot"),
        file: write_jsonl(dir, "tiles", jobs, |_| line.clone()),
        jobs,
        result_bytes: jobs as u64 * u64::from(side) * u64::from(side) * 4,
    }
}

//! Suite `throughput`: one large byte-string job, engine against the floor (with 1 MiB pipes as
//! the engine, and with the default 64 KiB ones), each run in a fresh child process (this bench
//! re-executed) so that its peak RSS (`VmHWM`) is that run's alone.
//!
//! Two processors: `offload-diag`, which echoes its input's `echo` field (the case), and
//! `cat`, which copies the input item to stdout unchanged: the result is the same CBOR map, so
//! it decodes the same, and the processor costs next to nothing. diag's own decoding and
//! encoding bound its rate; `cat` shows what the host's data path can do.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use offload::{Job, Persistence, Processor, Queue};

use crate::common::{
    die, floor_one_cbor, heading, is_payload, median, num, on_fresh_context, payload, progress,
    range, ratio_cell, settle, status_kib, verdict, EchoIn, EchoOut, Env, OrDie, Table, BIG_PIPE,
};

pub struct Options {
    pub payload_mib: usize,
    pub rounds: usize,
    /// `diag` and/or `cat`.
    pub processors: Vec<String>,
}

/// Methods in the order of a round; the order reverses every other round.
const METHODS: [&str; 3] = ["floor", "floor-64k", "engine"];

/// What a child run reports.
struct ChildReport {
    secs: f64,
    /// Peak RSS of the whole child, KiB.
    hwm_kib: u64,
    /// RSS before the payload existed, KiB.
    base_kib: u64,
}

pub fn run(env: &Env, options: &Options) {
    let bytes = options.payload_mib << 20;
    heading(
        "Data throughput",
        &format!(
            "One job whose input is `{{\"echo\": <{} MiB byte string>}}` and whose result is \
             the same, through `offload-diag` (echoes the field) and through `cat` (copies the \
             item; the processor costs next to nothing). {} rounds of floor, floor-64k and \
             engine (the order reverses every other round), each run in a fresh child process. \
             MB/s = payload bytes (10^6) / seconds from encoding the input to the decoded \
             result (the payload crosses twice: in and out); the caller drops its payload once \
             encoded. Peak RSS is the child's VmHWM (the whole process, payload included). \
             floor = 1 MiB pipes (F_SETPIPE_SZ, as the engine sets them); floor-64k = the \
             same with the default pipe size.",
            options.payload_mib, options.rounds
        ),
    );
    let mut table = Table::new(&[
        "processor",
        "method",
        "MB/s (median)",
        "min-max",
        "seconds",
        "peak RSS MiB",
        "peak / payload",
        "RSS before payload MiB",
        "vs floor (per-round range)",
    ]);
    let mut verdicts = Vec::new();
    for processor in &options.processors {
        let mut reports: Vec<Vec<ChildReport>> = METHODS.iter().map(|_| Vec::new()).collect();
        for round in 0..options.rounds {
            let mut order: Vec<usize> = (0..METHODS.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for m in order {
                let method = METHODS[m];
                let report = spawn_child(env, method, processor, options.payload_mib);
                progress(format!(
                    "throughput round {}: {processor} {method} {:.0} MB/s, peak RSS {} MiB",
                    round + 1,
                    bytes as f64 / 1e6 / report.secs,
                    report.hwm_kib / 1024
                ));
                reports[m].push(report);
            }
        }
        let rates: Vec<Vec<f64>> = reports
            .iter()
            .map(|rs| rs.iter().map(|r| bytes as f64 / 1e6 / r.secs).collect())
            .collect();
        let mut peaks = Vec::new();
        for (m, method) in METHODS.iter().enumerate() {
            let per_round: Vec<f64> = rates[m].iter().zip(&rates[0]).map(|(x, f)| x / f).collect();
            let (lo, hi) = range(&rates[m]);
            let of = |f: &dyn Fn(&ChildReport) -> f64| -> f64 {
                median(&reports[m].iter().map(f).collect::<Vec<_>>())
            };
            let peak = of(&|r| r.hwm_kib as f64);
            peaks.push(peak * 1024.0 / bytes as f64);
            table.row(vec![
                processor.clone(),
                (*method).to_owned(),
                num(median(&rates[m]), 0),
                format!("{lo:.0}-{hi:.0}"),
                num(of(&|r| r.secs), 3),
                num(peak / 1024.0, 0),
                num(peak * 1024.0 / bytes as f64, 2),
                num(of(&|r| r.base_kib as f64) / 1024.0, 1),
                ratio_cell(&per_round),
            ]);
        }
        let ratio = median(&rates[2]) / median(&rates[0]);
        verdicts.push(format!(
            "{processor}: engine at {:.0}% of the floor's MB/s (target 80% or more): {}",
            ratio * 100.0,
            verdict(ratio, 0.8, true)
        ));
        verdicts.push(format!(
            "{processor}: engine peak RSS {:.2}x the payload (target within 3x): {}; the \
             floor's is {:.2}x",
            peaks[2],
            verdict(peaks[2], 3.0, false),
            peaks[0]
        ));
    }
    println!("{table}");
    for line in verdicts {
        println!("- {line}");
    }
}

fn spawn_child(env: &Env, method: &str, processor: &str, payload_mib: usize) -> ChildReport {
    settle();
    let exe = std::env::current_exe().or_die("locating the bench executable");
    let output = Command::new(exe)
        .arg("--child")
        .arg(format!("throughput:{method}:{processor}"))
        .arg("--payload-mib")
        .arg(payload_mib.to_string())
        .arg("--bin-dir")
        .arg(&env.bin_dir)
        .output()
        .or_die("starting a child run of the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        die(format!(
            "the {method} throughput run with {processor} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let field = |name: &str| -> f64 {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| die(format!("the child run printed no {name}: {stdout:?}")))
    };
    ChildReport {
        secs: field("secs"),
        hwm_kib: field("hwm_kib") as u64,
        base_kib: field("base_kib") as u64,
    }
}

/// The processor's path: `diag` is the release `offload-diag`, `cat` is `cat` on PATH.
fn processor_path(env: &Env, processor: &str) -> PathBuf {
    match processor {
        "diag" => env.exe("offload-diag"),
        "cat" => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join("cat"))
                .find(|p| p.is_file())
                .unwrap_or_else(|| die("cat is not on PATH"))
        }
        other => die(format!(
            "unknown throughput processor {other:?} (diag, cat)"
        )),
    }
}

/// In the child (`--child throughput:METHOD:PROCESSOR`): one run, then one line
/// `secs=... hwm_kib=... base_kib=...` on stdout.
pub fn child(env: &Env, spec: &str, payload_mib: usize) {
    let (method, processor) = spec
        .split_once(':')
        .unwrap_or_else(|| die(format!("bad throughput child spec {spec:?}")));
    let len = payload_mib << 20;
    let program = processor_path(env, processor);
    let base_kib = status_kib("VmRSS");
    let data = payload(len);
    let start = Instant::now();
    let echoed: Vec<u8> = match method {
        "engine" => on_fresh_context(|| async move {
            let queue = Queue::with_max_running(1);
            // A process per job, as the floor it is compared with.
            let job = Job::new(Processor::at(&program)).persistence(Persistence::Never);
            let handle = queue
                .submit::<_, EchoOut>(&job, &EchoIn { echo: &data })
                .or_die("submitting the job");
            drop(data);
            handle.result().await.or_die("the engine's job").echo
        }),
        "floor" | "floor-64k" => {
            let mut bytes = Vec::new();
            ciborium::into_writer(&EchoIn { echo: &data }, &mut bytes).or_die("encoding the input");
            drop(data);
            let pipe_size = if method == "floor" { BIG_PIPE } else { None };
            floor_one_cbor::<EchoOut>(&program, &[], bytes, pipe_size)
                .or_die("the floor's job")
                .echo
        }
        other => die(format!("unknown throughput method {other:?}")),
    };
    let secs = start.elapsed().as_secs_f64();
    if !is_payload(&echoed, len) {
        die("the echoed payload differs from the input");
    }
    println!(
        "secs={secs} hwm_kib={} base_kib={base_kib}",
        status_kib("VmHWM")
    );
}

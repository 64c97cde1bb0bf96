//! Suite `overhead`: many tiny jobs through the echo processor, engine against the floor (a
//! minimal `std::process` spawn loop), and GNU parallel and `xargs -P` as references.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ciborium::Value;
use offload::{Job, Persistence, Processor};

use crate::common::{
    die, heading, measure, median, num, progress, range, ratio_cell, run_engine, run_floor,
    shell_quote, verdict, Env, OrDie, Sample, Table,
};

/// The echoed payload of each job.
const PAYLOAD: [u8; 16] = *b"0123456789abcdef";

pub struct Options {
    pub jobs: usize,
    pub rounds: usize,
    pub parallel: Vec<usize>,
    pub reference: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Floor,
    Engine,
}

pub fn run(env: &Env, options: &Options) {
    let diag = env.exe("offload-diag");
    let input = crate::common::EchoIn { echo: &PAYLOAD };
    let mut encoded = Vec::new();
    ciborium::into_writer(&input, &mut encoded).or_die("encoding the input");
    heading(
        "Per-job overhead",
        &format!(
            "{} jobs per run, each `{{\"echo\": <16-byte byte string>}}` ({} bytes of CBOR) through \
             `offload-diag`; {} rounds, floor and engine alternating (the order flips every \
             round); medians. jobs/s counts from the first submission to the last decoded result.",
            options.jobs,
            encoded.len(),
            options.rounds
        ),
    );
    // A process per job: this suite measures the spawn path (suite `persistent` has workers).
    let job = Job::new(Processor::at(&diag)).persistence(Persistence::Never);
    let check = |_: usize, value: Value| -> Result<(), String> {
        let echoed = value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("echo")))
            .and_then(|(_, v)| v.as_bytes());
        match echoed {
            Some(bytes) if bytes.as_slice() == PAYLOAD => Ok(()),
            _ => Err("the result does not echo the input".to_owned()),
        }
    };
    let mut table = Table::new(&[
        "-j",
        "method",
        "jobs/s (median)",
        "min-max",
        "ms/job (wall x j)",
        "host CPU us/job",
        "other load",
        "vs floor (per-round range)",
    ]);
    let mut verdicts = Vec::new();
    for &parallel in &options.parallel {
        let mut samples: Vec<(Method, Sample)> = Vec::new();
        for round in 0..options.rounds {
            let order = if round % 2 == 0 {
                [Method::Floor, Method::Engine]
            } else {
                [Method::Engine, Method::Floor]
            };
            for method in order {
                let (result, sample) = measure(|| match method {
                    Method::Floor => {
                        run_floor(&diag, &[], options.jobs, parallel, |_| &input, check)
                    }
                    Method::Engine => run_engine(&job, options.jobs, parallel, |_| &input, check),
                });
                result.or_die("overhead run");
                progress(format!(
                    "overhead -j {parallel} round {}: {} {:.0} jobs/s",
                    round + 1,
                    if method == Method::Floor {
                        "floor"
                    } else {
                        "engine"
                    },
                    options.jobs as f64 / sample.secs()
                ));
                samples.push((method, sample));
            }
        }
        let rates = |m: Method| -> Vec<f64> {
            samples
                .iter()
                .filter(|(method, _)| *method == m)
                .map(|(_, s)| options.jobs as f64 / s.secs())
                .collect()
        };
        let of = |m: Method| -> Vec<Sample> {
            samples
                .iter()
                .filter(|(method, _)| *method == m)
                .map(|(_, s)| *s)
                .collect()
        };
        let floor_rates = rates(Method::Floor);
        let engine_rates = rates(Method::Engine);
        let per_round: Vec<f64> = engine_rates
            .iter()
            .zip(&floor_rates)
            .map(|(e, f)| e / f)
            .collect();
        let floor_median = median(&floor_rates);
        for (name, method) in [("floor", Method::Floor), ("engine", Method::Engine)] {
            let rates = rates(method);
            let ratio = if method == Method::Floor {
                "1.00".to_owned()
            } else {
                ratio_cell(&per_round)
            };
            table.row(row(
                parallel,
                name,
                &rates,
                &of(method),
                options.jobs,
                ratio,
            ));
        }
        let ratio = median(&engine_rates) / floor_median;
        verdicts.push(format!(
            "-j {parallel}: engine at {:.0}% of the floor (target 90% or more): {}",
            ratio * 100.0,
            verdict(ratio, 0.9, true)
        ));
        if options.reference {
            for tool in [Tool::Xargs, Tool::Parallel] {
                match reference(tool, &diag, &encoded, options.jobs, parallel) {
                    Ok(sample) => {
                        let rate = options.jobs as f64 / sample.secs();
                        progress(format!(
                            "overhead -j {parallel}: {} {rate:.0} jobs/s",
                            tool.name()
                        ));
                        table.row(row(
                            parallel,
                            tool.name(),
                            &[rate],
                            &[sample],
                            options.jobs,
                            num(rate / floor_median, 2),
                        ));
                    }
                    Err(why) => table.row(vec![
                        parallel.to_string(),
                        tool.name().to_owned(),
                        format!("not run: {why}"),
                    ]),
                }
            }
        }
    }
    println!("{table}");
    for line in verdicts {
        println!("- {line}");
    }
    if options.reference {
        println!(
            "- xargs and GNU parallel run each job as `sh -c 'exec offload-diag < input.cbor > \
             /dev/null'` (one run each, no decoding): a reference, not a floor."
        );
    }
}

fn row(
    parallel: usize,
    name: &str,
    rates: &[f64],
    samples: &[Sample],
    jobs: usize,
    ratio: String,
) -> Vec<String> {
    let (lo, hi) = range(rates);
    let rate = median(rates);
    let host_us = median(
        &samples
            .iter()
            .map(|s| s.host_cpu.as_secs_f64() * 1e6 / jobs as f64)
            .collect::<Vec<_>>(),
    );
    let other = median(&samples.iter().map(|s| s.other_load).collect::<Vec<_>>());
    vec![
        parallel.to_string(),
        name.to_owned(),
        num(rate, 0),
        format!("{lo:.0}-{hi:.0}"),
        num(parallel as f64 * 1000.0 / rate, 3),
        num(host_us, 0),
        num(other, 2),
        ratio,
    ]
}

#[derive(Clone, Copy)]
enum Tool {
    Xargs,
    Parallel,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Xargs => "xargs -P",
            Self::Parallel => "GNU parallel",
        }
    }
}

/// Runs `jobs` jobs with xargs or GNU parallel, each `sh -c` starting the processor on the
/// same pre-encoded input file.
fn reference(
    tool: Tool,
    diag: &Path,
    input: &[u8],
    jobs: usize,
    parallel: usize,
) -> Result<Sample, String> {
    let dir = tempfile::tempdir().map_err(|err| format!("no temporary directory: {err}"))?;
    let file = dir.path().join("input.cbor");
    std::fs::write(&file, input).map_err(|err| format!("writing {}: {err}", file.display()))?;
    let diag_str = diag.to_string_lossy().into_owned();
    let file_str = file.to_string_lossy().into_owned();
    let mut command = match tool {
        Tool::Xargs => {
            let mut command = Command::new("xargs");
            command
                .arg("-P")
                .arg(parallel.to_string())
                .arg("-n")
                .arg("1")
                .arg("sh")
                .arg("-c")
                .arg(r#"exec "$0" < "$1" > /dev/null"#)
                .arg(&diag_str)
                .arg(&file_str);
            command
        }
        Tool::Parallel => {
            let version = Command::new("parallel")
                .arg("--version")
                .output()
                .map_err(|_| "GNU parallel is not installed (dev/bench installs it)".to_owned())?;
            if !String::from_utf8_lossy(&version.stdout).contains("GNU parallel") {
                return Err("`parallel` is not GNU parallel (moreutils?)".to_owned());
            }
            let mut command = Command::new("parallel");
            command
                .arg("--will-cite")
                .arg("-j")
                .arg(parallel.to_string())
                .arg("-N0")
                .arg(format!(
                    "exec {} < {} > /dev/null",
                    shell_quote(&diag_str),
                    shell_quote(&file_str)
                ));
            command
        }
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let lines: String = (0..jobs).map(|i| format!("{i}\n")).collect();
    let (output, sample) = measure(|| -> Result<std::process::Output, String> {
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", tool.name()))?;
        let mut stdin = child.stdin.take().unwrap_or_else(|| die("no stdin pipe"));
        let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
        let output = child
            .wait_with_output()
            .map_err(|err| format!("waiting for {}: {err}", tool.name()))?;
        let _ = writer.join();
        Ok(output)
    });
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            tool.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(sample)
}

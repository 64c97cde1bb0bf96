//! Suite `startup`: per-job time of the Python processor (`offload-histogram`) against Rust
//! ones (`offload-diag`, `offload-jitter`) on tiny inputs at -j 1, where start-up is nearly all
//! of a job. The Python processor runs twice: through its `#!/usr/bin/env python3` line (as a
//! user would run it) and with the interpreter named directly, because `python3` on PATH may be
//! a wrapper script (pyenv's shim is one) that costs more than the interpreter itself. Bare
//! interpreter starts (`python3 -c pass`, `python3 -c 'import cbor2'`) are the references.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ciborium::Value;
use offload::{Job, Persistence, Processor};
use serde_json::json;

use crate::common::{
    heading, measure, median, num, progress, range, run_engine, EchoIn, Env, OrDie, Sample, Table,
};

pub struct Options {
    pub jobs: usize,
    pub rounds: usize,
}

enum Case {
    /// Through the engine.
    Engine {
        job: Box<Job>,
        input: serde_json::Value,
    },
    /// A bare command run `jobs` times in a row, no engine.
    Command { program: PathBuf, args: Vec<String> },
}

struct Row {
    name: String,
    language: &'static str,
    case: Case,
    samples: Vec<Sample>,
}

/// A job that starts a process of its own: start-up is what this suite measures (suite
/// `persistent` pays it once per worker).
fn one_shot(program: impl Into<PathBuf>) -> Job {
    Job::new(Processor::at(program)).persistence(Persistence::Never)
}

pub fn run(env: &Env, options: &Options) {
    let histogram = env.histogram();
    let on_path = which_python();
    let python = real_python();
    let shim = is_script(&on_path);
    heading(
        "Start-up cost",
        &format!(
            "{} jobs per run at -j 1 through the engine, tiny inputs, {} rounds (the order \
             rotates every round); per-job time = wall / jobs. `python3` on PATH is {}{}; the \
             interpreter itself is {}.",
            options.jobs,
            options.rounds,
            on_path.display(),
            if shim { " (a script: a wrapper)" } else { "" },
            python.display()
        ),
    );
    let diag_input = serde_json::to_value(EchoIn {
        echo: b"0123456789abcdef",
    })
    .or_die("encoding the diag input");
    let values: Vec<f64> = (1..=10).map(f64::from).collect();
    let histogram_input = json!({"values": values, "bins": 4});
    let mut rows = vec![
        Row {
            name: "offload-diag (echo 16 bytes)".into(),
            language: "Rust",
            case: Case::Engine {
                job: Box::new(one_shot(env.exe("offload-diag"))),
                input: diag_input,
            },
            samples: Vec::new(),
        },
        Row {
            name: "offload-jitter (1 triangle)".into(),
            language: "Rust",
            case: Case::Engine {
                job: Box::new(one_shot(env.exe("offload-jitter"))),
                input: json!({
                    "vertices": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                    "faces": [[0, 1, 2]], "amplitude": 0.01, "seed": 1
                }),
            },
            samples: Vec::new(),
        },
        Row {
            name: "offload-histogram (10 values), via #!/usr/bin/env python3".into(),
            language: "Python",
            case: Case::Engine {
                job: Box::new(one_shot(&histogram)),
                input: histogram_input.clone(),
            },
            samples: Vec::new(),
        },
        Row {
            name: format!(
                "offload-histogram (10 values), run as {} offload-histogram",
                python.display()
            ),
            language: "Python",
            case: Case::Engine {
                job: Box::new(one_shot(&python).arg(&histogram)),
                input: histogram_input,
            },
            samples: Vec::new(),
        },
        Row {
            name: format!("reference: {} -c pass (no engine)", python.display()),
            language: "Python",
            case: Case::Command {
                program: python.clone(),
                args: vec!["-c".into(), "pass".into()],
            },
            samples: Vec::new(),
        },
        Row {
            name: format!(
                "reference: {} -c 'import cbor2' (no engine)",
                python.display()
            ),
            language: "Python",
            case: Case::Command {
                program: python.clone(),
                args: vec!["-c".into(), "import cbor2".into()],
            },
            samples: Vec::new(),
        },
    ];
    let count = rows.len();
    for round in 0..options.rounds {
        for k in 0..count {
            let row = &mut rows[(k + round) % count];
            let (result, sample) = measure(|| match &row.case {
                Case::Engine { job, input } => {
                    run_engine(job, options.jobs, 1, |_| input, |_, _: Value| Ok(()))
                }
                Case::Command { program, args } => run_command(program, args, options.jobs),
            });
            result.or_die(&format!("start-up run of {}", row.name));
            progress(format!(
                "startup round {}: {}: {:.2} ms/job",
                round + 1,
                row.name,
                sample.secs() * 1000.0 / options.jobs as f64
            ));
            row.samples.push(sample);
        }
    }
    let per_job = |row: &Row| -> Vec<f64> {
        row.samples
            .iter()
            .map(|s| s.secs() * 1000.0 / options.jobs as f64)
            .collect()
    };
    let diag_ms = median(&per_job(&rows[0]));
    let mut table = Table::new(&[
        "processor",
        "language",
        "ms/job (median)",
        "min-max",
        "vs offload-diag",
        "extra ms/job over offload-diag",
        "processor CPU ms/job",
        "other load",
    ]);
    for row in &rows {
        let times = per_job(row);
        let (lo, hi) = range(&times);
        let ms = median(&times);
        table.row(vec![
            row.name.clone(),
            row.language.to_owned(),
            num(ms, 2),
            format!("{lo:.2}-{hi:.2}"),
            format!("{:.1}x", ms / diag_ms),
            num(ms - diag_ms, 2),
            num(
                median(
                    &row.samples
                        .iter()
                        .map(|s| s.child_cpu.as_secs_f64() * 1000.0 / options.jobs as f64)
                        .collect::<Vec<_>>(),
                ),
                2,
            ),
            num(
                median(&row.samples.iter().map(|s| s.other_load).collect::<Vec<_>>()),
                2,
            ),
        ]);
    }
    println!("{table}");
}

/// Runs a command `count` times, one after another, stdin and stdout empty.
fn run_command(program: &Path, args: &[String], count: usize) -> Result<(), String> {
    for _ in 0..count {
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|err| format!("cannot start {}: {err}", program.display()))?;
        if !status.success() {
            return Err(format!("{} {args:?}: {status}", program.display()));
        }
    }
    Ok(())
}

/// `python3` as found on PATH (what `#!/usr/bin/env python3` runs).
fn which_python() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The interpreter binary that `python3` on PATH ends up running.
pub fn real_python() -> PathBuf {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .or_die("running python3");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if path.is_empty() {
        crate::common::die("python3 did not say where its interpreter is");
    }
    PathBuf::from(OsString::from(path))
}

/// Whether a file starts with `#!`.
fn is_script(path: &Path) -> bool {
    let mut start = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| &start == b"#!")
}

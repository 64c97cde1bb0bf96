//! `offload run`: one job per input, results printed as JSON lines in input order.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ciborium::Value;
use offload::inputs::{encode_json, read_json_lines};
use offload::processor::DESCRIBE_TIMEOUT;
use offload::sdk::json::cbor_to_json;
use offload::{FailureKind, Finished, Job, Persistence, Processor, QueueEvent};
use serde_json::json;

use super::RunArgs;

/// Exit status when some job failed.
const EXIT_SOME_FAILED: u8 = 1;
/// Exit status after SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

pub fn run(args: RunArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<ExitCode> {
    let launcher = offload::Launcher::parse(
        &args.launcher,
        args.launcher_args.iter().map(Into::into).collect(),
    )?;
    let processor = match Processor::find(&args.processor) {
        Ok(processor) => processor,
        // Not on this machine: the launcher's hosts may have it (they say so if not).
        Err(_) if !launcher.is_local() && !args.processor.contains('/') => {
            Processor::named(&args.processor)
        }
        Err(_) if !launcher.is_local() => Processor::at(&args.processor),
        Err(err) => return Err(err.into()),
    };
    let inputs = read_inputs(&args, matches)?;
    if inputs.is_empty() {
        bail!("no inputs: give --inputs FILE.jsonl or --input FILE (\"-\" reads standard input)");
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let launcher = std::sync::Arc::new(launcher);
    let job = job_from_args(processor, &args, &launcher)?;
    let jobs = match args.jobs {
        None if !launcher.is_local() => {
            let slots = launcher.slots();
            for (host, why) in launcher.down_hosts() {
                eprintln!("offload: {host} is down and gets no jobs: {why}");
            }
            if slots == 0 {
                bail!("no host of --launcher {} can be reached", args.launcher);
            }
            Some(slots)
        }
        jobs => jobs,
    };

    let context = glib::MainContext::default();
    let queue = super::queue(jobs);
    let mut settings = queue.worker_settings();
    if let Some(jobs) = args.worker_max_jobs {
        settings.max_jobs = jobs.max(1);
    }
    if let Some(bytes) = args.worker_max_memory {
        settings.max_memory_bytes = Some(bytes);
    }
    if let Some(secs) = args.worker_start_timeout {
        settings.start_timeout = seconds("--worker-start-timeout", secs)?;
    }
    queue.set_worker_settings(settings);
    let bar = super::progress_bar(inputs.len() as u64, "jobs");
    let interrupted = Rc::new(std::cell::Cell::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let queue = queue.clone();
        let interrupted = interrupted.clone();
        glib_unix::unix_signal_add_local(signal, move || {
            interrupted.set(true);
            // Kill at once: a person pressing Ctrl-C wants the processes gone now.
            queue.shutdown();
            glib::ControlFlow::Continue
        });
    }
    {
        let bar = bar.clone();
        queue.connect_events(move |event| {
            if let QueueEvent::Finished { .. } = event {
                bar.inc(1);
            }
        });
    }
    let mut handles = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        // Kept for a retry only when there may be one.
        let input = std::sync::Arc::new(input);
        let handle = queue
            .submit_cbor::<Value>(&job, input.clone())
            .with_context(|| format!("input {index}"))?;
        handles.push((handle, (args.retries > 0).then_some(input)));
    }

    let started = Instant::now();
    let output_dir = args.output_dir.clone();
    let retries = args.retries;
    let retry_bar = bar.clone();
    let (ok, failed) = context.block_on(async move {
        let mut stdout = std::io::stdout().lock();
        let (mut ok, mut failed) = (0usize, 0usize);
        for (index, (handle, input)) in handles.into_iter().enumerate() {
            let mut finished = handle.finished().await;
            let mut tries = 1;
            while tries <= retries && finished.result.as_ref().is_err_and(worth_retrying) {
                let Some(input) = &input else { break };
                let Ok(again) = queue.submit_cbor::<Value>(&job, input.clone()) else {
                    break;
                };
                retry_bar.inc_length(1);
                finished = again.finished().await;
                tries += 1;
            }
            if finished.result.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
            let mut line = report_line(index, finished, output_dir.as_deref());
            if retries > 0 {
                line["tries"] = tries.into();
            }
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Nobody reads our output any more: stop the rest.
                queue.cancel_all();
            }
        }
        (ok, failed)
    });
    bar.finish_and_clear();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "offload: {} jobs, {ok} ok, {failed} failed, in {:.2} s",
            ok + failed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if interrupted.get() {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed > 0 {
        ExitCode::from(EXIT_SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a failure may go away when the job runs again: a crash, a non-zero exit, a timeout
/// or a launcher's failure may; a cancel, a processor that cannot start, a resource limit, bad
/// output and an input the processor called invalid will not.
fn worth_retrying(error: &offload::JobError) -> bool {
    let invalid_input = error
        .reported
        .as_ref()
        .and_then(|r| r.kind.as_deref())
        .is_some_and(|kind| kind == "invalid_input");
    !invalid_input
        && matches!(
            error.kind,
            FailureKind::Failed
                | FailureKind::Killed
                | FailureKind::TimedOut
                | FailureKind::LaunchFailed
        )
}

/// A number of seconds given for `flag`.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value >= 0.0) {
        bail!("{flag} must be a number of seconds, 0 or more");
    }
    Ok(Duration::from_secs_f64(value))
}

/// The job that `args` describe: limits, environment, persistence.
fn job_from_args(
    processor: Processor,
    args: &RunArgs,
    launcher: &std::sync::Arc<offload::Launcher>,
) -> anyhow::Result<Job> {
    let mut limits = offload::RunLimits {
        grace: seconds("--grace", args.grace)?,
        ..offload::RunLimits::default()
    };
    if let Some(secs) = args.timeout {
        limits.timeout = Some(seconds("--timeout", secs)?);
    }
    if let Some(secs) = args.cpu_limit {
        limits.max_cpu_time = Some(seconds("--cpu-limit", secs)?);
    }
    if let Some(bytes) = args.max_output {
        limits.max_output_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    if let Some(bytes) = args.max_input {
        limits.max_input_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    limits.max_memory_bytes = args.memory_limit;
    let on_this_machine = processor.path().exists();
    let mut job = Job::new(processor)
        .limits(limits)
        .launcher(launcher.clone());
    for (key, value) in &args.env {
        job = job.env(key, value);
    }
    for key in &args.inherit_env {
        job = job.inherit_env(key);
    }
    if args.sandbox {
        let sandbox = args
            .sandbox_bind
            .iter()
            .fold(offload::Sandbox::new(), |sandbox, path| sandbox.bind(path));
        job = job.sandbox(sandbox);
    }
    if args.no_persistent {
        return Ok(job.persistence(Persistence::Never));
    }
    if !args.persistent {
        return Ok(job);
    }
    if !on_this_machine {
        // Only its hosts have it: a worker that cannot start says why.
        return Ok(job.persistence(Persistence::Always));
    }
    // Say so now, not once per job, asking as the jobs will run it.
    let shown = job.processor().path().display().to_string();
    let description = job.describe(DESCRIBE_TIMEOUT).map_err(|err| {
        anyhow::anyhow!(
            "--persistent: {shown} cannot say whether it supports persistent workers: {err}"
        )
    })?;
    if !description.supports_persistent() {
        bail!(
            "--persistent: {shown} does not support persistent workers (its --describe does not say \"persistent\": true); run it without --persistent"
        );
    }
    Ok(job.persistence(Persistence::Always))
}

/// The JSON line for one finished job.
fn report_line(
    index: usize,
    finished: Finished<Value>,
    output_dir: Option<&Path>,
) -> serde_json::Value {
    let millis = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let worker = finished.stats.worker.map(|run| {
        json!({
            "id": run.worker,
            "job": run.job,
            "startup_ms": run.startup.map(millis),
        })
    });
    let stats = json!({
        "wall_ms": millis(finished.stats.wall),
        "cpu_ms": millis(finished.stats.cpu),
        "peak_rss_bytes": finished.stats.peak_rss_bytes,
        "worker": worker,
        "memory_limit": finished.stats.memory_limit,
        "host": finished.stats.host,
    });
    match finished.result {
        Ok(value) => match output_dir {
            None => {
                json!({"job": index, "status": "ok", "result": cbor_to_json(&value), "stats": stats})
            }
            Some(dir) => match write_atomically(dir, index, &value) {
                Ok(path) => json!({"job": index, "status": "ok", "output": path, "stats": stats}),
                Err(err) => json!({"job": index, "status": "failed", "error": {
                    "kind": "output_not_written",
                    "message": format!("{err:#}"),
                    "exit_code": 0, "signal": null, "stderr_tail": "",
                }, "stats": stats}),
            },
        },
        Err(error) => json!({"job": index, "status": "failed", "error": error, "stats": stats}),
    }
}

/// Writes DIR/<index>.cbor so that it is either absent or complete.
fn write_atomically(dir: &Path, index: usize, value: &Value) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{index}.cbor"));
    let temp = dir.join(format!(".{index}.cbor.partial"));
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).context("cannot encode the result")?;
    std::fs::write(&temp, &bytes).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, &path)
        .with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(path)
}

/// Reads every input, in command-line order, as encoded CBOR items.
fn read_inputs(args: &RunArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut inputs = Vec::new();
    let max_input = args
        .max_input
        .unwrap_or(offload_sdk::decode::DEFAULT_MAX_BYTES as u64);
    // Keep the order of --inputs and --input as given, whichever flag came first.
    let positions = |id: &str| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(Iterator::collect)
            .unwrap_or_default()
    };
    let mut files: Vec<(usize, bool, &PathBuf)> = Vec::new();
    let lines_at = positions("inputs");
    let single_at = positions("input");
    for (i, path) in args.inputs.iter().enumerate() {
        files.push((lines_at.get(i).copied().unwrap_or(i), true, path));
    }
    for (i, path) in args.input.iter().enumerate() {
        files.push((
            single_at.get(i).copied().unwrap_or(usize::MAX / 2 + i),
            false,
            path,
        ));
    }
    files.sort_by_key(|(at, _, _)| *at);
    for (_, is_lines, path) in files {
        if is_lines {
            read_lines(path, &mut inputs)?;
        } else {
            inputs.push(read_single(path, max_input)?);
        }
    }
    Ok(inputs)
}

/// `bytes` if they are exactly one well-formed CBOR item, as a processor must get; else why not.
fn one_item(bytes: Vec<u8>, path: &Path, max_input: u64) -> anyhow::Result<Vec<u8>> {
    use offload_sdk::decode::{DecodeError, DecodeLimits};
    let limits = DecodeLimits {
        max_bytes: usize::try_from(max_input).unwrap_or(usize::MAX),
        ..DecodeLimits::default()
    };
    let why = if bytes.is_empty() {
        DecodeError::Empty
    } else {
        match offload_sdk::sequence::item_len(&bytes, limits) {
            Ok(Some(len)) if len == bytes.len() => return Ok(bytes),
            Ok(Some(len)) => DecodeError::TrailingBytes {
                extra: bytes.len() - len,
            },
            Ok(None) => DecodeError::Truncated,
            Err(err) => err,
        }
    };
    bail!(
        "{}: {why}; a processor's input must be exactly one CBOR item",
        path.display()
    )
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(file))
}

fn read_lines(path: &Path, inputs: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(open(path)?);
    inputs.extend(read_json_lines(reader, &path.display().to_string())?);
    Ok(())
}

fn read_single(path: &Path, max_input: u64) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    let over = |size: u64| {
        anyhow::anyhow!(
            "{shown} is {size} bytes{}, over the input limit of {max_input} bytes: raise it \
             with --max-input SIZE (K, M, G allowed)",
            if size > max_input { "" } else { " or more" }
        )
    };
    // Refuse a file that is too large before reading it.
    if path != Path::new("-") {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_file() && meta.len() > max_input {
                return Err(over(meta.len()));
            }
        }
    }
    let mut bytes = Vec::new();
    open(path)?
        .take(max_input.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {shown}"))?;
    if bytes.len() as u64 > max_input {
        return Err(over(bytes.len() as u64));
    }
    if path.extension().is_some_and(|e| e == "cbor") {
        return one_item(bytes, path, max_input);
    }
    match serde_json::from_slice(&bytes) {
        Ok(json) => encode_json(json).with_context(|| path.display().to_string()),
        // From standard input, anything that is not JSON is passed on as CBOR.
        Err(_) if path == Path::new("-") => one_item(bytes, path, max_input),
        Err(err) => Err(err).with_context(|| {
            format!(
                "{}: not valid JSON (name CBOR files *.cbor)",
                path.display()
            )
        }),
    }
}

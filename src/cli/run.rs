//! `offload run`: one job per input, results printed as JSON lines in input order.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ciborium::Value;
use offload::inputs::encode_json;
use offload::processor::DESCRIBE_TIMEOUT;
use offload::sdk::json::cbor_to_json;
use offload::{FailureKind, Finished, Job, Persistence, Processor};
use serde_json::json;

use super::feed::{Fed, Source};
use super::RunArgs;

/// Exit status when some job failed.
const EXIT_SOME_FAILED: u8 = 1;
/// Exit status when `--halt ...,fail=...` stopped the batch.
const EXIT_HALTED: u8 = 3;
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
    let launcher = std::sync::Arc::new(launcher);
    let job = job_from_args(processor, &args, &launcher)?;
    let file_jobs = if args.files.is_empty() {
        None
    } else {
        // Asked as the jobs will run it (its sandbox, environment and limits), once: the
        // workers reuse the answer.
        let description = job.describe(DESCRIBE_TIMEOUT).map_err(|err| {
            anyhow::anyhow!("--files: {} cannot describe itself: {err}", args.processor)
        })?;
        Some(std::sync::Arc::new(
            offload::files::FileJobs::new(
                &args.processor,
                &description,
                &args.params,
                args.output_dir.as_deref(),
            )
            .map_err(anyhow::Error::msg)?,
        ))
    };
    if !args.params.is_empty() && file_jobs.is_none() {
        bail!("--param goes with --files (with --inputs, set the field in each input)");
    }
    let sources = match &file_jobs {
        Some(jobs) => args
            .files
            .iter()
            .map(|path| Source::File(path.clone(), jobs.clone()))
            .collect(),
        None => sources(&args, matches),
    };
    if sources.is_empty() {
        bail!("no inputs: give --inputs FILE.jsonl or --input FILE (\"-\" reads standard input)");
    }
    let max_input = args
        .max_input
        .unwrap_or(offload_sdk::decode::DEFAULT_MAX_BYTES as u64);
    // Opened (and locked) before it is read: what --resume reads, no other run writes.
    let joblog = args
        .joblog
        .as_deref()
        .map(super::joblog::JobLog::open)
        .transpose()?;
    let logged = match (&joblog, args.resume || args.resume_failed) {
        (Some(log), true) => log.read()?,
        (None, true) => bail!("--resume and --resume-failed need --joblog FILE"),
        _ => Default::default(),
    };
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
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
    let bar = super::progress_bar(0, "jobs");
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
    // Jobs between being read and being printed: the running ones, and up to
    // ORDERED_BACKLOG finished ones waiting for an earlier job's line (or, unordered, for
    // stdout). Inputs are read only as far as that allows.
    let window = queue.max_running() + ORDERED_BACKLOG;
    let (credit, credits) = std::sync::mpsc::channel::<()>();
    for _ in 0..window {
        let _ = credit.send(());
    }
    let (tx, rx) = async_channel::unbounded::<Msg>();
    {
        let tx = tx.clone();
        super::feed::start(sources, max_input, credits, move |fed| {
            tx.send_blocking(Msg::Fed(fed)).is_ok()
        });
    }
    {
        let tx = tx.clone();
        let interrupted = interrupted.clone();
        // On SIGINT/SIGTERM: stop reading (the reader may wait on a producer forever).
        glib::timeout_add_local(Duration::from_millis(50), move || {
            if interrupted.get() {
                let _ = tx.try_send(Msg::Stop);
                return glib::ControlFlow::Break;
            }
            glib::ControlFlow::Continue
        });
    }

    let started = Instant::now();
    let output_dir = args.output_dir.clone();
    let retries = args.retries;
    let ordered = !args.unordered;
    let skip = |index: usize, digest: &str| {
        logged.done.get(&index).is_some_and(|(logged_digest, ok)| {
            logged_digest == digest && (*ok || !args.resume_failed)
        })
    };
    // Lines and log entries: with a job log, through the log writer (commit.rs), so that a
    // kill leaves each job printed and logged, or neither.
    let mut sink = match &joblog {
        Some(log) => super::commit::Sink::writer(log.file())?,
        None => super::commit::Sink::stdout(),
    };
    let halt = args.halt.and_then(|arg| arg.0);
    // Submits input `index`; the job's id while it is in the queue.
    let logging = args.joblog.is_some();
    let submit = |index: usize, input: std::sync::Arc<Vec<u8>>, digest: String, tries: u32| {
        let tx = tx.clone();
        match queue.submit_cbor::<Value>(&job, input.clone()) {
            Ok(handle) => {
                let id = handle.id();
                handle.on_finished(move |finished| {
                    let _ = tx.try_send(Msg::Done {
                        index,
                        finished: Box::new(finished),
                        input,
                        digest,
                        tries,
                    });
                });
                Some(id)
            }
            Err(err) => {
                let _ = tx.try_send(Msg::Refused(index, err.to_string(), digest));
                None
            }
        }
    };
    let outcome = context.block_on(async {
        let sink = &mut sink;
        let mut tally = Tally::default();
        // Lines waiting to be printed (ordered: for their turn): None for a job not run
        // (skipped by --resume, or kept from starting by --halt).
        let mut waiting: std::collections::BTreeMap<usize, Option<Printed>> = Default::default();
        let mut next = 0usize;
        let mut total: Option<usize> = None;
        let mut read = 0usize;
        let mut bad: Option<String> = None;
        // Jobs in the queue, by input number; and those a --halt cancelled before they
        // started (not run, so not printed: a --resume runs them).
        let mut outstanding: std::collections::HashMap<usize, offload::JobId> = Default::default();
        let mut not_started: std::collections::HashSet<usize> = Default::default();
        let mut ended = super::halt::Ended::default();
        // With --files: the file of each job not printed yet.
        let mut file_of: std::collections::HashMap<usize, PathBuf> = Default::default();
        let emit = |printed: Option<Printed>, tally: &mut Tally, sink: &mut super::commit::Sink| {
            let _ = credit.send(());
            tally.ended += 1;
            let Some(printed) = printed else { return };
            if printed.line["status"] == "ok" {
                tally.ok += 1;
            } else if tally.halted.is_some() && printed.line["error"]["kind"] == "cancelled" {
                // Stopped by `--halt now`: printed, but not a failure of its own.
                tally.halt_cancelled += 1;
            } else {
                tally.failed += 1;
            }
            let mut line = printed.line.to_string().into_bytes();
            line.push(b'\n');
            let entry = if logging {
                super::joblog::entry(
                    &printed.line,
                    &printed.digest,
                    printed.started,
                    printed.tries,
                )
            } else {
                Vec::new()
            };
            if !tally.broken && sink.commit(&line, &entry).is_err() {
                // Nobody reads our output any more: stop the rest.
                tally.broken = true;
                queue.cancel_all();
            }
        };
        while let Ok(msg) = rx.recv().await {
            match msg {
                Msg::Fed(Fed::Skipped(path, why)) => {
                    eprintln!("offload: skipped {}: {why}", path.display());
                    tally.not_taken += 1;
                }
                Msg::Fed(Fed::Input(index, bytes, path)) => {
                    read += 1;
                    if let Some(path) = path {
                        file_of.insert(index, path);
                    }
                    // Read after the reading stopped: not run.
                    if total.is_none() {
                        // Only a job log needs the input's digest: hashed once, here.
                        let digest = if logging {
                            super::joblog::digest(&bytes)
                        } else {
                            String::new()
                        };
                        if skip(index, &digest) {
                            // Done in an earlier run: not run, not printed again.
                            waiting.insert(index, None);
                            tally.skipped += 1;
                        } else {
                            bar.inc_length(1);
                            let input = std::sync::Arc::new(bytes);
                            if let Some(id) = submit(index, input, digest, 1) {
                                outstanding.insert(index, id);
                            }
                        }
                    }
                }
                Msg::Fed(Fed::Bad(count, why)) => {
                    bad = Some(why);
                    total.get_or_insert(count);
                }
                Msg::Fed(Fed::End(count)) => {
                    if count == 0 {
                        bad = Some("no inputs: the input files hold none".to_owned());
                    }
                    total.get_or_insert(count);
                }
                Msg::Stop => {
                    total.get_or_insert(read);
                }
                Msg::Done {
                    index,
                    finished,
                    input,
                    digest,
                    tries,
                } => {
                    outstanding.remove(&index);
                    let cancelled = finished
                        .result
                        .as_ref()
                        .is_err_and(|err| err.kind == FailureKind::Cancelled);
                    if cancelled && not_started.remove(&index) {
                        // Halted before it started: not run, not printed.
                        bar.inc(1);
                        tally.not_run += 1;
                        waiting.insert(index, None);
                    } else if tries <= retries
                        && finished.result.as_ref().is_err_and(worth_retrying)
                        && !interrupted.get()
                        && tally.halted.is_none()
                    {
                        if let Some(id) = submit(index, input, digest, tries + 1) {
                            outstanding.insert(index, id);
                        }
                    } else {
                        bar.inc(1);
                        if finished.result.is_ok() {
                            ended.succeeded += 1;
                        } else {
                            ended.failed += 1;
                        }
                        let finished = *finished;
                        let started = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .saturating_sub(finished.stats.wall)
                            .as_secs_f64();
                        let mut line = match (&file_jobs, file_of.remove(&index)) {
                            (Some(jobs), Some(path)) => {
                                let output = FileOutput {
                                    jobs,
                                    input: &path,
                                    index,
                                    digest: &digest,
                                    // What a killed run was writing for this input, if it
                                    // was this input.
                                    earlier: logged
                                        .writing
                                        .get(&index)
                                        .filter(|w| w.input == digest),
                                };
                                file_line(finished, &output, sink)
                            }
                            _ => report_line(index, finished, output_dir.as_deref()),
                        };
                        if retries > 0 {
                            line["tries"] = tries.into();
                        }
                        let printed = Printed {
                            line,
                            digest,
                            started,
                            tries,
                        };
                        waiting.insert(index, Some(printed));
                    }
                }
                Msg::Refused(index, why, digest) => {
                    bar.inc(1);
                    ended.failed += 1;
                    let mut line = json!({"job": index, "status": "failed", "error": {
                        "kind": "could_not_start", "message": why,
                        "exit_code": null, "signal": null, "stderr_tail": "",
                    }, "stats": stats_json(&offload::RunStats::default())});
                    if let Some(path) = file_of.remove(&index) {
                        line["file"] = super::joblog::path_json(&path);
                    }
                    let printed = Printed {
                        line,
                        digest,
                        started: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64(),
                        tries: 1,
                    };
                    waiting.insert(index, Some(printed));
                }
            }
            if let Some(halt) = halt.filter(|h| tally.halted.is_none() && h.reached(ended, read)) {
                // Start no more jobs (and, `now`, cancel the running ones); read no more.
                tally.halted = Some(halt);
                total.get_or_insert(read);
                for (&index, &id) in &outstanding {
                    if queue.job_state(id) == Some(offload::JobState::Queued) {
                        not_started.insert(index);
                    }
                }
                match halt.when {
                    super::halt::When::Soon => queue.cancel_queued(),
                    super::halt::When::Now => queue.cancel_all(),
                }
            }
            // Print what may be printed: in input order, or (unordered) all that waits.
            loop {
                let printed = if ordered {
                    waiting.remove(&next).inspect(|_| next += 1)
                } else {
                    waiting.pop_first().map(|(_, printed)| printed)
                };
                let Some(printed) = printed else { break };
                emit(printed, &mut tally, sink);
            }
            if total.is_some_and(|total| tally.ended >= total.min(read)) {
                break;
            }
        }
        (tally, bad)
    });
    // Every line and entry written before the exit status says anything.
    sink.finish();
    let (tally, bad) = outcome;
    let (ok, failed) = (tally.ok, tally.failed);
    bar.finish_and_clear();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "offload: {} jobs, {ok} ok, {failed} failed, in {:.2} s",
            ok + failed,
            started.elapsed().as_secs_f64()
        );
    }
    if tally.skipped > 0 && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "offload: {} jobs done in an earlier run, skipped",
            tally.skipped
        );
    }
    if let Some(halt) = tally.halted.filter(|_| !interrupted.get()) {
        let (not_run, cancelled) = (tally.not_run, tally.halt_cancelled);
        eprintln!(
            "offload: halted by --halt {halt}: {ok} ok, {failed} failed, {cancelled} cancelled, \
             {not_run} not started"
        );
        if halt.why == super::halt::Why::Fail {
            return Ok(ExitCode::from(EXIT_HALTED));
        }
    }
    if let Some(why) = bad.filter(|_| !interrupted.get()) {
        // Jobs read before it ran and were printed; the rest of the inputs were not read.
        eprintln!("offload: {why}");
        return Ok(ExitCode::from(2));
    }
    if tally.not_taken > 0 {
        let n = tally.not_taken;
        eprintln!("offload: {n} file{} skipped", if n == 1 { "" } else { "s" });
    }
    Ok(if interrupted.get() {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed > 0 || tally.not_taken > 0 {
        ExitCode::from(EXIT_SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Finished jobs that wait for an earlier one's line, at most (ordered output), beyond the
/// running ones: the bound on what `offload run` holds, however many inputs there are.
const ORDERED_BACKLOG: usize = 256;

/// What the run's loop hears: from the reader, from finished jobs, from a signal.
enum Msg {
    Fed(Fed),
    Done {
        index: usize,
        finished: Box<Finished<Value>>,
        input: std::sync::Arc<Vec<u8>>,
        /// The input's digest for the job log (empty without one).
        digest: String,
        tries: u32,
    },
    /// The queue refused input `.0` (over the input limit, ...) for the reason `.1`; `.2`
    /// is its digest for the job log.
    Refused(usize, String, String),
    /// Stop reading inputs (SIGINT, SIGTERM).
    Stop,
}

/// A job's line, ready to print, and what its job log entry needs.
struct Printed {
    line: serde_json::Value,
    digest: String,
    started: f64,
    tries: u32,
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    skipped: usize,
    /// Jobs printed or skipped.
    ended: usize,
    broken: bool,
    /// Files --files skipped (not taken, unreadable).
    not_taken: usize,
    /// Jobs a --halt cancelled before they started, and while they ran.
    not_run: usize,
    halt_cancelled: usize,
    /// The --halt condition that stopped the batch.
    halted: Option<super::halt::Halt>,
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
    let stats = stats_json(&finished.stats);
    match finished.result {
        Ok(value) => match output_dir {
            None => {
                json!({"job": index, "status": "ok", "result": cbor_to_json(&value), "stats": stats})
            }
            Some(dir) => match write_atomically(dir, index, &value) {
                Ok(path) => json!({"job": index, "status": "ok",
                    "output": super::joblog::path_json(&path), "stats": stats}),
                Err(err) => json!({"job": index, "status": "failed", "error": {
                    "kind": FailureKind::OutputNotWritten.as_str(),
                    "message": format!("{err:#}"),
                    "exit_code": 0, "signal": null, "stderr_tail": "",
                }, "stats": stats}),
            },
        },
        Err(error) => json!({"job": index, "status": "failed", "error": error, "stats": stats}),
    }
}

/// A `--files` job's output, to be written.
struct FileOutput<'a> {
    jobs: &'a offload::files::FileJobs,
    /// The input file.
    input: &'a Path,
    index: usize,
    /// The input's digest (empty without a job log).
    digest: &'a str,
    /// The output a killed run was writing for this job and input (`--resume`).
    earlier: Option<&'a super::joblog::Writing>,
}

/// A `--files` job's line: the input file, the output file written from the result's output
/// field, and the rest of the result.
fn file_line(
    finished: Finished<Value>,
    output: &FileOutput<'_>,
    sink: &mut super::commit::Sink,
) -> serde_json::Value {
    let index = output.index;
    let written = finished.result.map(|value| {
        output
            .jobs
            .split_result(value)
            .and_then(|(bytes, rest)| Ok((write_file_output(output, &bytes, sink)?, rest)))
    });
    let mut line = match written {
        Ok(Ok((written, rest))) => json!({"job": index, "status": "ok",
            "output": super::joblog::path_json(&written), "result": cbor_to_json(&rest)}),
        Ok(Err(err)) => json!({"job": index, "status": "failed", "error": {
            "kind": FailureKind::OutputNotWritten.as_str(),
            "message": err,
            "exit_code": 0, "signal": null, "stderr_tail": "",
        }}),
        Err(error) => json!({"job": index, "status": "failed", "error": error}),
    };
    line["file"] = super::joblog::path_json(output.input);
    line["stats"] = stats_json(&finished.stats);
    line
}

/// Writes a `--files` job's output file. With a job log, the log hears the output's path
/// (and a digest of its bytes) before the file gets that name, so that a `--resume` after a
/// kill knows the file for this job's: the job runs again (for its line) and its output
/// replaces that file instead of taking a new name beside it.
fn write_file_output(
    output: &FileOutput<'_>,
    bytes: &[u8],
    sink: &mut super::commit::Sink,
) -> Result<PathBuf, String> {
    let jobs = output.jobs;
    let mut announce = |path: &Path| {
        if !sink.logs() {
            return Ok(());
        }
        let entry = super::joblog::writing_entry(output.index, output.digest, path, bytes);
        sink.log(&entry).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("the job log cannot take the output's name: {err}"),
            )
        })
    };
    if let Some(earlier) = output.earlier {
        if let Some(name) = earlier_output(jobs, earlier) {
            let path = jobs.output_dir().join(&name);
            announce(&path).map_err(|err| err.to_string())?;
            return offload::output::replace(jobs.output_dir(), &name, bytes)
                .map_err(|err| err.to_string());
        }
    }
    jobs.write_announced(output.input, bytes, &mut announce)
}

/// The name of the output a killed run wrote for a job, if it is there as it was written: in
/// the same output directory, a regular file of this user's (not a link), with the bytes the
/// log's digest says.
fn earlier_output(
    jobs: &offload::files::FileJobs,
    earlier: &super::joblog::Writing,
) -> Option<String> {
    if earlier.output.parent() != Some(jobs.output_dir()) {
        return None;
    }
    let name = earlier.output.file_name()?.to_str()?.to_owned();
    let limit = offload_sdk::decode::DEFAULT_MAX_BYTES as u64;
    let bytes = offload::output::read_own(jobs.output_dir(), &name, limit).ok()?;
    (super::joblog::digest(&bytes) == earlier.output_digest).then_some(name)
}

/// A job's `stats` in its line.
fn stats_json(stats: &offload::RunStats) -> serde_json::Value {
    let millis = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let worker = stats.worker.map(|run| {
        json!({
            "id": run.worker,
            "job": run.job,
            "startup_ms": run.startup.map(millis),
        })
    });
    json!({
        "wall_ms": millis(stats.wall),
        "cpu_ms": millis(stats.cpu),
        "peak_rss_bytes": stats.peak_rss_bytes,
        "worker": worker,
        "memory_limit": stats.memory_limit,
        "host": stats.host,
    })
}

/// Writes DIR/<index>.cbor so that it is either absent or complete, over an existing one (or
/// a link planted there: replaced, never followed).
fn write_atomically(dir: &Path, index: usize, value: &Value) -> anyhow::Result<PathBuf> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).context("cannot encode the result")?;
    Ok(offload::output::replace(
        dir,
        &format!("{index}.cbor"),
        &bytes,
    )?)
}

/// Where the inputs come from, in command-line order (`--inputs` and `--input` as given,
/// whichever came first).
fn sources(args: &RunArgs, matches: Option<&clap::ArgMatches>) -> Vec<Source> {
    let positions = |id: &str| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(Iterator::collect)
            .unwrap_or_default()
    };
    let mut files: Vec<(usize, Source)> = Vec::new();
    let lines_at = positions("inputs");
    let single_at = positions("input");
    for (i, path) in args.inputs.iter().enumerate() {
        files.push((
            lines_at.get(i).copied().unwrap_or(i),
            Source::Lines(path.clone()),
        ));
    }
    for (i, path) in args.input.iter().enumerate() {
        files.push((
            single_at.get(i).copied().unwrap_or(usize::MAX / 2 + i),
            Source::Single(path.clone()),
        ));
    }
    files.sort_by_key(|(at, _)| *at);
    files.into_iter().map(|(_, source)| source).collect()
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

pub(super) fn open(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(file))
}

pub(super) fn read_single(path: &Path, max_input: u64) -> anyhow::Result<Vec<u8>> {
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
        Ok(json) => offload::sdk::json::check_integers(&bytes)
            .map_err(|err| anyhow::anyhow!(err.0))
            .and_then(|()| Ok(encode_json(json)?))
            .with_context(|| path.display().to_string()),
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

//! `offload run`: one job per input, results printed as JSON lines in input order.
//!
//! This file turns the command line into a job, a queue and the inputs' sources, and says at
//! the end how the run went; `run_loop.rs` runs the jobs and prints their lines (`line.rs`),
//! `outputs.rs` writes results to files, `feed.rs` reads the inputs, `joblog.rs` and
//! `commit.rs` keep the job log.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use offload::files::FileJobs;
use offload::processor::DESCRIBE_TIMEOUT;
use offload::{Job, Persistence, Processor};

use super::feed::Source;
use super::outputs::Outputs;
use super::run_loop::{Msg, Outcome, Parts, RunLoop, Settings};
use super::RunArgs;

/// Exit status when some job failed.
const EXIT_SOME_FAILED: u8 = 1;
/// Exit status when `--halt ...,fail=...` stopped the batch.
const EXIT_HALTED: u8 = 3;
/// Exit status after SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

pub fn run(args: RunArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<ExitCode> {
    if args.verbose > 0 {
        trace_to_stderr(args.verbose);
    }
    let launcher = offload::Launcher::parse(
        &args.launcher,
        args.launcher_args.iter().map(Into::into).collect(),
    )?;
    let processor = processor(&args, &launcher)?;
    let launcher = Arc::new(launcher);
    let job = job_from_args(processor, &args, &launcher)?;
    let file_jobs = file_jobs(&args, &job)?;
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
    let queue = queue(&args, &launcher)?;

    let context = glib::MainContext::default();
    let bar = super::progress_bar(0, "jobs");
    let interrupted = stop_on_signals(&queue);
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
    // Lines and log entries: with a job log, through the log writer (commit.rs), so that a
    // kill leaves each job printed and logged, or neither.
    let sink = match &joblog {
        Some(log) => super::commit::Sink::writer(log.file())?,
        None => super::commit::Sink::stdout(),
    };
    let settings = Settings {
        ordered: !args.unordered,
        retries: args.retries,
        halt: args.halt.and_then(|arg| arg.0),
        logging: joblog.is_some(),
        done_before: logged.done,
        resume_failed: args.resume_failed,
    };
    let run_loop = RunLoop::new(Parts {
        queue: queue.clone(),
        job,
        settings,
        outputs: Outputs::new(args.output_dir.clone(), file_jobs, logged.writing),
        sink,
        credit,
        tx,
        bar: bar.clone(),
        interrupted: interrupted.clone(),
    });
    let outcome = context.block_on(run_loop.run(rx));
    bar.finish_and_clear();
    Ok(report(outcome, interrupted.get(), started))
}

/// Says how the run went (on stderr) and gives its exit status.
fn report(outcome: Outcome, interrupted: bool, started: Instant) -> ExitCode {
    let Outcome { summary, bad } = outcome;
    let printed = summary.printed;
    let ok = printed.succeeded;
    // A job `--halt now` stopped is not a failure of its own; one an interrupt stopped is.
    let failed = if summary.halted.is_some() {
        printed.failed
    } else {
        printed.failed + printed.cancelled
    };
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "offload: {} jobs, {ok} ok, {failed} failed, in {:.2} s",
            ok + failed,
            started.elapsed().as_secs_f64()
        );
    }
    if summary.skipped > 0 && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "offload: {} jobs done in an earlier run, skipped",
            summary.skipped
        );
    }
    if let Some(halt) = summary.halted.filter(|_| !interrupted) {
        let (not_run, cancelled) = (summary.not_run, printed.cancelled);
        eprintln!(
            "offload: halted by --halt {halt}: {ok} ok, {failed} failed, {cancelled} cancelled, \
             {not_run} not started"
        );
        if halt.why == super::halt::Why::Fail {
            return ExitCode::from(EXIT_HALTED);
        }
    }
    if let Some(why) = bad.filter(|_| !interrupted) {
        // Jobs read before it ran and were printed; the rest of the inputs were not read.
        eprintln!("offload: {why}");
        return ExitCode::from(2);
    }
    if summary.not_taken > 0 {
        let n = summary.not_taken;
        eprintln!("offload: {n} file{} skipped", if n == 1 { "" } else { "s" });
    }
    if interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed > 0 || summary.not_taken > 0 {
        ExitCode::from(EXIT_SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The processor `args` name: found here, or (through a launcher) on its hosts.
fn processor(args: &RunArgs, launcher: &offload::Launcher) -> anyhow::Result<Processor> {
    match Processor::find(&args.processor) {
        Ok(processor) => Ok(processor),
        // Not on this machine: the launcher's hosts may have it (they say so if not).
        Err(_) if !launcher.is_local() && !args.processor.contains('/') => {
            Ok(Processor::named(&args.processor))
        }
        Err(_) if !launcher.is_local() => Ok(Processor::at(&args.processor)),
        Err(err) => Err(err.into()),
    }
}

/// With `--files`: how the processor takes files, as its description says.
fn file_jobs(args: &RunArgs, job: &Job) -> anyhow::Result<Option<Arc<FileJobs>>> {
    if args.files.is_empty() {
        return Ok(None);
    }
    // Asked as the jobs will run it (its sandbox, environment and limits), once: the
    // workers reuse the answer.
    let description = job.describe(DESCRIBE_TIMEOUT).map_err(|err| {
        anyhow::anyhow!("--files: {} cannot describe itself: {err}", args.processor)
    })?;
    let jobs = FileJobs::new(
        &args.processor,
        &description,
        &args.params,
        args.output_dir.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(jobs)))
}

/// The queue, with `-j` (by default, through a launcher, its hosts' slots) and the workers'
/// settings applied.
fn queue(args: &RunArgs, launcher: &offload::Launcher) -> anyhow::Result<offload::Queue> {
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
    let queue = super::queue(jobs);
    let mut workers = queue.worker_settings();
    if let Some(jobs) = args.worker_max_jobs {
        workers.max_jobs = jobs.max(1);
    }
    if let Some(bytes) = args.worker_max_memory {
        workers.max_memory_bytes = Some(bytes);
    }
    if let Some(secs) = args.worker_start_timeout {
        workers.start_timeout = seconds("--worker-start-timeout", secs)?;
    }
    queue.set_worker_settings(workers);
    Ok(queue)
}

/// On SIGINT and SIGTERM: every job killed at once, and the flag this gives set.
fn stop_on_signals(queue: &offload::Queue) -> Rc<Cell<bool>> {
    let interrupted = Rc::new(Cell::new(false));
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
    interrupted
}

/// Finished jobs that wait for an earlier one's line, at most (ordered output), beyond the
/// running ones: the bound on what `offload run` holds, however many inputs there are.
const ORDERED_BACKLOG: usize = 256;

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
    launcher: &Arc<offload::Launcher>,
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
        .nice(args.nice)
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

/// Shows the engine's spans and events on stderr: `-v` what each job and worker does, `-vv`
/// more (decks, the describe probe's answers).
fn trace_to_stderr(verbose: u8) {
    let level = if verbose > 1 {
        tracing::Level::TRACE
    } else {
        tracing::Level::DEBUG
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

//! The command-line interface: one file per subcommand, all driving the same engine.

mod codec;
mod commit;
mod demo;
mod feed;
mod halt;
mod joblog;
mod line;
mod list;
mod outputs;
mod run;
mod run_loop;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, Parser, Subcommand};
use offload::mosaic::Mosaic;

/// Keeps a GUI responsive by running heavy work in parallel processor processes.
#[derive(Debug, Parser)]
#[command(name = "offload", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a processor once per input; print one JSON line per job, in input order.
    Run(Box<RunArgs>),
    /// Serve a client in any language: requests on stdin, events on stdout, both CBOR
    /// sequences (PROTOCOL.md section 19); ends with stdin, or with the process that started it.
    Serve(ServeArgs),
    /// List the processors offload finds, with their descriptions.
    List {
        /// Print one JSON object per processor instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Render a Mandelbrot mosaic through the queue, one job per tile, and save it as PNG.
    Demo(DemoArgs),
    /// Open the desktop app.
    #[cfg(feature = "gui")]
    Gui(GuiArgs),
    /// Convert one JSON document on stdin to CBOR on stdout (byte strings as {"$bytes": base64}).
    Encode,
    /// Convert CBOR on stdin to JSON on stdout.
    Decode {
        /// Read a CBOR sequence (any number of items) and print one JSON line per item.
        #[arg(long)]
        seq: bool,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// `offload run --joblog`'s own writer of lines and log entries (commit.rs).
    #[command(name = commit::SUBCOMMAND, hide = true)]
    LogWriter,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How many processors run at once (default: the number of cores); a client may change
    /// it with a set_max_running request.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// The processors' nice value, 0 to 19, as for `offload run`.
    #[arg(long, value_name = "N", default_value_t = offload::job::DEFAULT_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The processor: a name (found as offload-NAME on the search path) or a path.
    processor: String,
    /// A JSON Lines file with one input per line ("-" for standard input). Repeatable.
    #[arg(long = "inputs", value_name = "FILE.jsonl")]
    inputs: Vec<PathBuf>,
    /// A file with one input, JSON or CBOR (by the .cbor extension; "-" for standard input).
    /// Repeatable.
    #[arg(long = "input", value_name = "FILE")]
    input: Vec<PathBuf>,
    /// Files to run the processor on, one job each (it must declare files in --describe);
    /// each output goes to --output-dir, named after its input. Files it does not take, and
    /// anything that is not a regular file (a FIFO, a device), are reported by name, and the
    /// others run.
    #[arg(long = "files", value_name = "FILE", num_args = 1.., conflicts_with_all = ["inputs", "input"])]
    files: Vec<PathBuf>,
    /// A parameter of the processor, for --files (repeatable), checked against its
    /// description before any job starts: `--param size=128`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// How many processors run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Stop a job that runs longer than this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Write each result to DIR/<job>.cbor (atomically) instead of printing it; with --files,
    /// each output file to DIR/<input's name>.<extension> (never over an existing file).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Print each line as soon as its job ends, not in input order.
    #[arg(long)]
    unordered: bool,
    /// Append one JSON line per finished job to FILE (job number, input digest, status and
    /// kind, start time, wall and CPU time, exit code or signal, tries), as it goes; each job
    /// is printed and logged together, so that after a kill a --resume runs each job once.
    /// The log is locked for the run (another run on it is refused) and must not be a
    /// symbolic link.
    #[arg(long, value_name = "FILE")]
    joblog: Option<PathBuf>,
    /// With --joblog: skip the jobs the log shows done (same job number, same input), as after
    /// an interrupted run; their lines are not printed again.
    #[arg(long, requires = "joblog")]
    resume: bool,
    /// Like --resume, but run the jobs the log shows failed again.
    #[arg(long, requires = "joblog", conflicts_with = "resume")]
    resume_failed: bool,
    /// Run a job that failed (exited non-zero, crashed, timed out, or could not be launched)
    /// up to N more times; each line then says how many tries it took ("tries").
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Stop the batch early, as GNU parallel's --halt: WHEN,WHY=N where WHEN is soon (start
    /// no more jobs) or now (also cancel the running ones), WHY is fail, success or done, and
    /// N a count or a percentage of the inputs read so far (soon,fail=1; now,fail=10%). Also
    /// 0/never, 1 (soon,fail=1), 2 (now,fail=1), -1, -2 and N%. Exit status 3 after a halt on
    /// failures.
    #[arg(long, value_name = "WHEN,WHY=N", value_parser = halt::parse_arg, allow_hyphen_values = true)]
    halt: Option<halt::HaltArg>,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    grace: f64,
    /// The largest result accepted (bytes; K, M, G suffixes allowed). Default 1G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// The largest input accepted (bytes; K, M, G suffixes allowed). Default 1G. A file over
    /// it is refused before it is read, a JSON Lines line as it is read.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_input: Option<u64>,
    /// Kill a job whose processor's resident memory exceeds SIZE (K, M, G suffixes allowed).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Kill a job whose processor has used SECS of CPU time.
    #[arg(long, value_name = "SECS")]
    cpu_limit: Option<f64>,
    /// Set an environment variable for the processors (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Pass this variable of offload's environment on to the processors (repeatable); by
    /// default they get only PATH, HOME, USER, LANG, LC_*, TZ, TMPDIR, OFFLOAD_* and Python's.
    #[arg(long = "inherit-env", value_name = "KEY")]
    inherit_env: Vec<String>,
    /// Run every job on persistent workers (one process serves many jobs); an error if the
    /// processor does not support it. Default: persistent when the processor says it can.
    #[arg(long, conflicts_with = "no_persistent")]
    persistent: bool,
    /// Start a process per job, even for a processor that supports persistent workers.
    #[arg(long)]
    no_persistent: bool,
    /// Replace a persistent worker after this many jobs.
    #[arg(long, value_name = "N")]
    worker_max_jobs: Option<u64>,
    /// Replace a persistent worker after a job during which its resident memory went over
    /// SIZE (K, M, G suffixes allowed).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    worker_max_memory: Option<u64>,
    /// Seconds a persistent worker may take to start (its set-up included).
    #[arg(long, value_name = "SECS")]
    worker_start_timeout: Option<f64>,
    /// The processors' nice value, 0 to 19 (10: they yield the CPU to interactive work; their
    /// autogroup or cgroup gets it too, where the kernel groups tasks; 0: as offload).
    #[arg(long, value_name = "N", default_value_t = offload::job::DEFAULT_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
    /// Say what the engine does on stderr: each job's and worker's start and end, decks,
    /// probes, hosts (-vv: more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run the processors in a sandbox (bubblewrap): no network, a read-only system, a
    /// private /tmp, no home directory, no privileges.
    #[arg(long)]
    sandbox: bool,
    /// With --sandbox: also show PATH, read-only (repeatable).
    #[arg(long, value_name = "PATH", requires = "sandbox")]
    sandbox_bind: Vec<PathBuf>,
    /// Where the processors run: local; slurm (as job steps of the Slurm allocation offload
    /// runs in, under salloc or sbatch); or ssh:HOST[,HOST...] (N/HOST gives a host N
    /// slots, else the host is asked). -j defaults to the launcher's slots.
    #[arg(long, value_name = "LAUNCHER", default_value = "local")]
    launcher: String,
    /// An argument for each srun or ssh (repeatable; --launcher-arg=-v for one that starts
    /// with a dash).
    #[arg(long = "launcher-arg", value_name = "ARG", allow_hyphen_values = true)]
    launcher_args: Vec<String>,
}

/// A byte size: `1048576`, `512K`, `64M`, `2G` (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size (a number of bytes, optionally with K, M or G)")
    })?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

#[cfg(feature = "gui")]
#[derive(Debug, Args)]
pub struct GuiArgs {
    /// Start the Mandelbrot demo at once.
    #[arg(long)]
    demo: bool,
    /// Run PROCESSOR over every line of FILE.jsonl at once.
    #[arg(long, num_args = 2, value_names = ["PROCESSOR", "FILE.jsonl"])]
    batch: Option<Vec<String>>,
    /// When every job is done, save a PNG of the window here.
    #[arg(long, value_name = "FILE.png")]
    screenshot: Option<PathBuf>,
    /// Save the screenshot once N jobs have finished, instead of at the end.
    #[arg(long, value_name = "N", requires = "screenshot")]
    screenshot_after: Option<usize>,
    /// Quit when every job is done (exit status 1 if any failed).
    #[arg(long)]
    exit_when_done: bool,
    /// The demo's iteration limit per sample.
    #[arg(long, default_value_t = Mosaic::default().max_iter)]
    max_iter: u32,
    /// The demo's samples per pixel along each axis.
    #[arg(long, default_value_t = Mosaic::default().samples)]
    samples: u32,
    /// Print the main loop's longest stall and p99 on exit (or set OFFLOAD_STALL_REPORT=1).
    #[arg(long)]
    stall_report: bool,
    /// How many processors run at once (default: the number of cores, or the launcher's slots).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Where the processors run: local, slurm or ssh:HOST[,HOST...], as for `offload run`.
    #[arg(long, value_name = "LAUNCHER", default_value = "local")]
    launcher: String,
    /// An argument for each srun or ssh (repeatable).
    #[arg(long = "launcher-arg", value_name = "ARG", allow_hyphen_values = true)]
    launcher_args: Vec<String>,
    /// The processor to run on FILEs (one that takes files, such as thumbnail).
    #[arg(long, value_name = "NAME", requires = "files")]
    processor: Option<String>,
    /// Where the output files go (default: Pictures/offload).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// A parameter of the processor (repeatable): `--param size=128`.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "processor")]
    params: Vec<String>,
    /// Files and folders (searched recursively) to run --processor on, one job per file.
    #[arg(value_name = "FILE", requires = "processor")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to save the mosaic.
    #[arg(long, default_value = "mandelbrot.png")]
    out: PathBuf,
    /// How many processors run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Image width in pixels.
    #[arg(long, default_value_t = Mosaic::default().width)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = Mosaic::default().height)]
    height: u32,
    /// Tiles across (the demo runs COLUMNS x ROWS jobs).
    #[arg(long, default_value_t = Mosaic::default().columns)]
    columns: u32,
    /// Tiles down.
    #[arg(long, default_value_t = Mosaic::default().rows)]
    rows: u32,
    /// Iteration limit per sample.
    #[arg(long, default_value_t = Mosaic::default().max_iter)]
    max_iter: u32,
    /// Samples per pixel along each axis (3 gives 9 samples: smooth edges, 9 times the work).
    #[arg(long, default_value_t = Mosaic::default().samples)]
    samples: u32,
}

/// Runs the parsed command; `matches` tells where each flag stood on the command line.
pub fn dispatch(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(*args, matches.subcommand_matches("run")),
        Command::Serve(args) => serve::serve(args),
        Command::List { json } => list::list(json),
        Command::Demo(args) => demo::demo(args),
        #[cfg(feature = "gui")]
        Command::Gui(args) => {
            let launcher = offload::Launcher::parse(
                &args.launcher,
                args.launcher_args.iter().map(Into::into).collect(),
            )?;
            // Asked before the window opens: an ssh host without a slot count is asked over ssh.
            let jobs = match args.jobs {
                None if !launcher.is_local() => Some(launcher.slots().max(1)),
                jobs => jobs,
            };
            for (host, why) in launcher.down_hosts() {
                eprintln!("offload: {host} is down and gets no jobs: {why}");
            }
            let launcher = (!launcher.is_local()).then(|| std::sync::Arc::new(launcher));
            gui(args, jobs, launcher)
        }
        Command::Encode => codec::encode(),
        Command::Decode { seq, pretty } => codec::decode(seq, pretty),
        Command::LogWriter => commit::serve(),
    }
}

#[cfg(feature = "gui")]
fn gui(
    args: GuiArgs,
    jobs: Option<usize>,
    launcher: Option<std::sync::Arc<offload::Launcher>>,
) -> anyhow::Result<ExitCode> {
    Ok(offload::app::run(offload::app::AppOptions {
        demo: args.demo,
        batch: args
            .batch
            .and_then(|b| Some((b.first()?.clone(), PathBuf::from(b.get(1)?)))),
        screenshot: args.screenshot,
        screenshot_after: args.screenshot_after,
        mosaic: Mosaic {
            max_iter: args.max_iter,
            samples: args.samples,
            ..Mosaic::default()
        },
        exit_when_done: args.exit_when_done,
        stall_report: args.stall_report,
        jobs,
        launcher,
        files: args.processor.map(|processor| offload::app::FileRun {
            processor,
            output_dir: args.output_dir,
            params: args.params,
            files: args.files,
        }),
    }))
}

/// Builds a queue with `-j N` applied.
fn queue(jobs: Option<usize>) -> offload::Queue {
    match jobs {
        Some(n) => offload::Queue::with_max_running(n),
        None => offload::Queue::new(),
    }
}

/// A progress bar on stderr; hidden when stderr is not a terminal.
fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{bar:40.cyan/blue}} {{pos}}/{{len}} {unit} {{rate}} eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        // indicatif's own {per_sec} prints "444.7935/s".
        let style = style.with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&rate_text(state.per_sec()));
            },
        );
        bar.set_style(style);
    }
    bar
}

/// A rate for people: "445/s", "12.5/s", "0.25/s".
fn rate_text(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "-/s".to_owned();
    }
    let digits = if per_sec >= 100.0 {
        0
    } else if per_sec >= 1.0 {
        1
    } else {
        2
    };
    format!("{per_sec:.digits$}/s")
}

#[cfg(test)]
mod tests {
    use super::rate_text;

    #[test]
    fn rates_are_rounded_for_people() {
        assert_eq!(rate_text(444.7935), "445/s");
        assert_eq!(rate_text(12.46), "12.5/s");
        assert_eq!(rate_text(0.2468), "0.25/s");
        assert_eq!(rate_text(f64::NAN), "-/s");
    }
}

//! The runtime that turns a typed function into a protocol-speaking executable.

use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::{install_cancel_handler, Context};
use crate::decode::{decode_one, decode_value, DecodeError, DecodeLimits};
use crate::error::{Error, ErrorKind, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PANIC, EXIT_USAGE};
use crate::frame::PERSISTENT_FLAG;
use crate::json::{cbor_to_json, json_to_cbor};
use crate::params::{Files, Parameter};
use crate::persistent::{serve, Worker};
use crate::protocol::{Description, ErrorReport, DESCRIBE_FLAG, PROTOCOL_VERSION};

/// Environment variable that overrides a processor's input size limit, in bytes.
pub const MAX_INPUT_ENV: &str = "OFFLOAD_MAX_INPUT_BYTES";

/// A processor's name, summary, example and limits; [`Processor::run`] makes it an executable.
///
/// ```no_run
/// use offload_sdk::{Context, Error, Processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize, Serialize)]
/// struct Input { numbers: Vec<f64> }
/// #[derive(Serialize)]
/// struct Output { sum: f64 }
///
/// fn sum(input: Input, _ctx: &mut Context) -> Result<Output, Error> {
///     Ok(Output { sum: input.numbers.iter().sum() })
/// }
///
/// fn main() -> std::process::ExitCode {
///     Processor::new("sum", "Adds numbers")
///         .example(&Input { numbers: vec![1.0, 2.0] })
///         .example_output(&Output { sum: 3.0 })
///         .run(sum)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Processor {
    name: String,
    summary: String,
    version: Option<String>,
    example: serde_json::Value,
    /// Gives the example output's JSON form when `--describe` asks.
    example_output: Option<ExampleOutput>,
    files: Option<Files>,
    parameters: Vec<Parameter>,
    limits: DecodeLimits,
    persistent: bool,
}

/// How the command line asked the processor to run.
enum Invocation {
    /// One job, in CBOR or JSON.
    OneShot(Mode),
    /// Many jobs in one process (PROTOCOL.md, section 18).
    Persistent,
}

enum Mode {
    Cbor,
    Json,
}

impl Processor {
    /// A processor called `name` (its executable is `offload-<name>`) that does `summary`.
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            summary: summary.into(),
            version: None,
            example: serde_json::Value::Null,
            example_output: None,
            files: None,
            parameters: Vec::new(),
            limits: DecodeLimits::default(),
            persistent: true,
        }
    }

    /// An input that `--describe` shows and that the processor accepts.
    pub fn example<T: Serialize>(mut self, input: &T) -> Self {
        self.example = ciborium::Value::serialized(input)
            .map(|v| cbor_to_json(&v))
            .unwrap_or(serde_json::Value::Null);
        self
    }

    /// A result for the example input, which `--describe` shows so that an author learns the
    /// result's shape without running the processor.
    pub fn example_output<T: Serialize>(mut self, output: &T) -> Self {
        let value = to_json_form(output);
        self.example_output = Some(ExampleOutput(std::sync::Arc::new(move || value.clone())));
        self
    }

    /// Like [`Processor::example_output`], computed only when `--describe` asks, for a
    /// processor whose example is a tiny job of its own function:
    /// `.example_output_with(|| blur(example(), &mut Context::detached()).ok())`. `None`
    /// leaves it out.
    pub fn example_output_with<T: Serialize>(
        mut self,
        make: impl Fn() -> Option<T> + Send + Sync + 'static,
    ) -> Self {
        self.example_output = Some(ExampleOutput(std::sync::Arc::new(move || {
            make().map_or(serde_json::Value::Null, |output| to_json_form(&output))
        })));
        self
    }

    /// Declares that the processor works on files: how a file becomes its input and its
    /// result a file (PROTOCOL.md section 10.1), so that a host can run it on a folder.
    pub fn files(mut self, files: Files) -> Self {
        self.files = Some(files);
        self
    }

    /// Declares a parameter: a field of the input that a form can set. The SDK checks it in
    /// every input before the function runs (an input field absent is left to the function's
    /// default), and refuses a wrong one as invalid input naming it and what it takes.
    pub fn parameter(mut self, parameter: Parameter) -> Self {
        self.parameters.push(parameter);
        self
    }

    /// The processor's own version, shown by `--describe` and `--version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The largest input accepted, in bytes (default 1 GiB; `OFFLOAD_MAX_INPUT_BYTES` overrides).
    pub fn max_input_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// The deepest nesting accepted in the input (default 128).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.limits.max_depth = depth;
        self
    }

    /// Whether the processor may serve many jobs in one process (persistent mode, on by
    /// default). Turn it off for a function that must not run twice in a process: one that
    /// leaks, or changes global state it cannot put back.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// The description `--describe` prints.
    pub fn description(&self) -> Description {
        Description {
            name: self.name.clone(),
            summary: self.summary.clone(),
            protocol: PROTOCOL_VERSION,
            example_input: self.example.clone(),
            example_output: self
                .example_output
                .as_ref()
                .map(|make| (make.0)())
                .filter(|value| !value.is_null()),
            files: self.files.clone(),
            parameters: self.parameters.clone(),
            version: self.version.clone(),
            persistent: self.persistent,
        }
    }

    /// Runs the processor: parses the command line, reads and decodes stdin, calls `work`,
    /// writes the result to stdout. Returns the exit code for `main` to return.
    ///
    /// Started with `--persistent` by a host, it calls `work` once per job instead, until the
    /// host closes stdin; the function is the same either way.
    pub fn run<I, O, F>(self, mut work: F) -> ExitCode
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnMut(I, &mut Context) -> Result<O, Error>,
    {
        let invocation = match self.parse_args(std::env::args().skip(1)) {
            Ok(Some(invocation)) => invocation,
            Ok(None) => return ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("{}: {message}", self.executable());
                return ExitCode::from(EXIT_USAGE);
            }
        };
        self.install_panic_hook();
        install_cancel_handler();
        let mode = match invocation {
            Invocation::OneShot(mode) => mode,
            Invocation::Persistent => {
                let worker = Worker {
                    executable: &self.executable(),
                    name: &self.name,
                    version: self.version.as_deref(),
                    limits: self.limits(),
                    parameters: &self.parameters,
                };
                return serve(&worker, work);
            }
        };

        let input = match self.read_input::<I>(&mode) {
            Ok(input) => input,
            Err(message) => {
                return self.fail(&mode, ErrorKind::InvalidInput, &message, EXIT_BAD_INPUT);
            }
        };
        let mut ctx = Context::from_env();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| work(input, &mut ctx)));
        let output = match outcome {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => {
                return self.fail(&mode, err.kind(), &err.to_string(), err.kind().exit_code());
            }
            // The panic hook has already said what happened, on one line.
            Err(_) => return ExitCode::from(EXIT_PANIC),
        };
        match self.write_output(&mode, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("{}: {message}", self.executable());
                ExitCode::from(EXIT_FAILED)
            }
        }
    }

    fn executable(&self) -> String {
        format!("{}{}", crate::protocol::EXECUTABLE_PREFIX, self.name)
    }

    /// `Ok(None)` when the command line was fully handled (`--describe`, `--help`).
    fn parse_args(&self, args: impl Iterator<Item = String>) -> Result<Option<Invocation>, String> {
        let mut invocation = Invocation::OneShot(Mode::Cbor);
        for arg in args {
            match arg.as_str() {
                "--json" | PERSISTENT_FLAG
                    if !matches!(invocation, Invocation::OneShot(Mode::Cbor)) =>
                {
                    return Err(format!("{PERSISTENT_FLAG} and --json do not go together"));
                }
                "--json" => invocation = Invocation::OneShot(Mode::Json),
                PERSISTENT_FLAG if self.persistent => invocation = Invocation::Persistent,
                PERSISTENT_FLAG => {
                    return Err(format!(
                        "{PERSISTENT_FLAG}: this processor runs one job per process"
                    ))
                }
                DESCRIBE_FLAG => {
                    let json = serde_json::to_string_pretty(&self.description())
                        .map_err(|err| format!("cannot describe: {err}"))?;
                    println!("{json}");
                    return Ok(None);
                }
                "--version" | "-V" => {
                    println!(
                        "{} {}",
                        self.executable(),
                        self.version.as_deref().unwrap_or("0")
                    );
                    return Ok(None);
                }
                "--help" | "-h" => {
                    println!(
                        "{exe}: {summary}\n\n\
                         Usage: {exe} [--json] < INPUT > RESULT\n       {exe} --persistent   (started by a host: frames on stdin and stdout)\n\n\
                         Reads one CBOR item from stdin and writes one CBOR item to stdout.\n\n\
                         Options:\n  \
                           --json      read and write JSON instead (byte strings as {{\"$bytes\": \"<base64>\"}})\n  \
                           --describe  print name, summary and an example input as JSON\n  \
                           --persistent  serve many jobs as frames on stdin and stdout (for hosts)\n  \
                           --version   print the version\n  \
                           --help      print this help",
                        exe = self.executable(),
                        summary = self.summary
                    );
                    return Ok(None);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        Ok(Some(invocation))
    }

    fn limits(&self) -> DecodeLimits {
        let mut limits = self.limits;
        if let Some(bytes) = std::env::var(MAX_INPUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            limits.max_bytes = bytes;
        }
        limits
    }

    fn read_input<I: DeserializeOwned>(&self, mode: &Mode) -> Result<I, String> {
        let limits = self.limits();
        let mut bytes = Vec::new();
        let cap = u64::try_from(limits.max_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read stdin: {err}"))?;
        if bytes.len() > limits.max_bytes {
            let err = DecodeError::TooLarge {
                size: bytes.len(),
                limit: limits.max_bytes,
            };
            return Err(format!("input {err} (set {MAX_INPUT_ENV} to raise it)"));
        }
        match mode {
            Mode::Cbor => decode_input(&bytes, limits, &self.parameters),
            Mode::Json => {
                let json: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|err| format!("input is not valid JSON: {err}"))?;
                crate::json::check_integers(&bytes).map_err(|err| format!("input: {err}"))?;
                let value = json_to_cbor(json).map_err(|err| format!("input: {err}"))?;
                crate::params::check_input(&self.parameters, &value)?;
                shaped(&value)
            }
        }
    }

    fn write_output<O: Serialize>(&self, mode: &Mode, output: &O) -> Result<(), String> {
        // Encode fully before writing, so a failure never leaves half a result on stdout.
        let bytes = match mode {
            Mode::Cbor => {
                let mut bytes = Vec::new();
                ciborium::into_writer(output, &mut bytes)
                    .map_err(|err| format!("cannot encode the result: {err}"))?;
                bytes
            }
            Mode::Json => {
                let value = ciborium::Value::serialized(output)
                    .map_err(|err| format!("cannot encode the result: {err}"))?;
                let mut text = cbor_to_json(&value).to_string();
                text.push('\n');
                text.into_bytes()
            }
        };
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .map_err(|err| format!("cannot write the result to stdout: {err}"))
    }

    fn fail(&self, mode: &Mode, kind: ErrorKind, message: &str, code: u8) -> ExitCode {
        eprintln!("{}: {message}", self.executable());
        if let Mode::Cbor = mode {
            let report = ErrorReport {
                error: message.to_owned(),
                kind: Some(kind.as_str().to_owned()),
            };
            let mut bytes = Vec::new();
            if ciborium::into_writer(&report, &mut bytes).is_ok() {
                // Best effort: the exit code and stderr already carry the failure.
                let _ = std::io::stdout().lock().write_all(&bytes);
            }
        }
        ExitCode::from(code)
    }

    fn install_panic_hook(&self) {
        let exe = self.executable();
        panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!("{exe}: internal error: {payload}{place}");
            *LAST_PANIC.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{payload}{place}"));
        }));
    }
}

/// What the last panic said, for persistent mode's error frame.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The last panic's message and place.
pub(crate) fn last_panic() -> String {
    LAST_PANIC
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Decodes an input into `I`; with declared parameters, through a CBOR value whose
/// parameters are checked first.
pub(crate) fn decode_input<I: DeserializeOwned>(
    bytes: &[u8],
    limits: DecodeLimits,
    parameters: &[Parameter],
) -> Result<I, String> {
    if parameters.is_empty() {
        return decode_one(bytes, limits).map_err(input_error);
    }
    let value: ciborium::Value = decode_one(bytes, limits).map_err(input_error)?;
    crate::params::check_input(parameters, &value)?;
    shaped(&value)
}

/// A decoded value as `I`.
fn shaped<I: DeserializeOwned>(value: &ciborium::Value) -> Result<I, String> {
    decode_value(value).map_err(input_error)
}

/// Why an input was refused, naming the field of the wrong shape:
/// `input.data: unexpected shape: invalid type: string, expected bytes (got the text "x")`.
fn input_error(err: DecodeError) -> String {
    match &err {
        DecodeError::WrongShape { message, .. } => {
            format!("{}: unexpected shape: {message}", err.place("input"))
        }
        _ => format!("input: {err}"),
    }
}

/// How `--describe` gets the example output.
#[derive(Clone)]
struct ExampleOutput(std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for ExampleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExampleOutput(..)")
    }
}

/// The JSON form of a value's CBOR (`Null` if it cannot be encoded).
fn to_json_form<T: Serialize>(value: &T) -> serde_json::Value {
    ciborium::Value::serialized(value)
        .map(|v| cbor_to_json(&v))
        .unwrap_or(serde_json::Value::Null)
}

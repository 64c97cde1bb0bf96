//! Finding processors: by path, or by name over a search path; listing and describing them.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offload_sdk::protocol::{Description, DESCRIBE_FLAG, EXECUTABLE_PREFIX};

/// Environment variable with extra directories to search for processors (colon-separated).
pub const PROCESSOR_PATH_ENV: &str = "OFFLOAD_PROCESSOR_PATH";

/// How long `--describe` may take before the probe is killed (and the processor, for now,
/// taken not to know the flag; a timed-out probe is asked again by the next job). Generous:
/// only a probe that hangs waits this long (stdin is empty, so even a processor that ignores
/// the flag ends at once), and a Python interpreter on a loaded machine may take seconds to
/// start.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A processor executable, located.
///
/// ```no_run
/// use offload::Processor;
/// // `blur` finds the executable `offload-blur` (see [`Processor::search_path`]).
/// let blur = Processor::find("blur")?;
/// println!("{} is {}", blur.name(), blur.path().display());
/// # Ok::<(), offload::LookupError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processor {
    name: String,
    /// Found by name (`blur`), so that a remote host looks it up by name too.
    by_name: bool,
    path: PathBuf,
}

/// A processor could not be found.
///
/// ```
/// let err = offload::Processor::find("surely-not-installed").unwrap_err();
/// assert_eq!(err.tried_names, ["offload-surely-not-installed"]);
/// assert!(err.to_string().contains("OFFLOAD_PROCESSOR_PATH"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// What was asked for.
    pub wanted: String,
    /// The executable names tried.
    pub tried_names: Vec<String>,
    /// The directories searched, in order.
    pub searched: Vec<PathBuf>,
    /// Files of a name tried that are there but cannot run, and why ("is not executable",
    /// "is a directory"): the usual reason a processor a person just installed is not found.
    pub unusable: Vec<(PathBuf, String)>,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.searched.is_empty() {
            return write!(
                f,
                "processor {:?} not found: no such executable file",
                self.wanted
            );
        }
        let dirs: Vec<String> = self
            .searched
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        if let Some((path, why)) = self.unusable.first() {
            return write!(
                f,
                "processor {:?} cannot run: {} {why}{} (looked for {} in {})",
                self.wanted,
                path.display(),
                if why == NOT_EXECUTABLE {
                    format!(": make it executable with chmod +x {}", path.display())
                } else {
                    String::new()
                },
                self.tried_names.join(" and "),
                dirs.join(", "),
            );
        }
        write!(
            f,
            "processor {:?} not found: looked for {} in {} (add its directory to \
             {PROCESSOR_PATH_ENV}; to run a program that is not named offload-NAME, give its \
             path, such as ./{} or /usr/bin/{})",
            self.wanted,
            self.tried_names.join(" and "),
            dirs.join(", "),
            self.wanted,
            self.wanted
        )
    }
}

impl std::error::Error for LookupError {}

/// Why `--describe` gave no description.
///
/// ```
/// use offload::processor::DescribeError;
/// let err = DescribeError::TimedOut(std::time::Duration::from_secs(2));
/// assert_eq!(err.to_string(), "no answer to --describe within 2s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescribeError {
    /// It could not be started.
    CannotStart(String),
    /// It did not answer in time (perhaps only because the machine is busy: worth asking
    /// again later).
    TimedOut(Duration),
    /// It exited with a failure: it does not know the flag.
    Failed(String),
    /// It printed no valid description.
    Invalid(String),
    /// It was stopped before it answered (the job it was asked for was cancelled).
    Cancelled,
}

impl fmt::Display for DescribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotStart(why) => f.write_str(why),
            Self::TimedOut(timeout) => write!(f, "no answer to {DESCRIBE_FLAG} within {timeout:?}"),
            Self::Failed(status) => write!(f, "{DESCRIBE_FLAG} failed ({status})"),
            Self::Invalid(why) => write!(f, "{DESCRIBE_FLAG} printed no valid description: {why}"),
            Self::Cancelled => write!(f, "{DESCRIBE_FLAG} was stopped before it answered"),
        }
    }
}

impl std::error::Error for DescribeError {}

impl Processor {
    /// The processor at `path`, used as it is (whether it can run is found out when it runs).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = file
            .strip_prefix(EXECUTABLE_PREFIX)
            .unwrap_or(&file)
            .to_owned();
        Self {
            name,
            path,
            by_name: false,
        }
    }

    /// A processor known by name only, to run through a launcher on hosts that have it
    /// (looked up there as `offload-NAME`); it cannot run on this machine.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            path: PathBuf::from(format!("{EXECUTABLE_PREFIX}{name}")),
            by_name: true,
        }
    }

    /// What a remote host is told to run: the name it was found by, else its path, made
    /// absolute (the remote side starts in another directory).
    pub(crate) fn remote_spec(&self) -> std::ffi::OsString {
        if self.by_name {
            self.name.clone().into()
        } else {
            std::path::absolute(&self.path)
                .unwrap_or_else(|_| self.path.clone())
                .into_os_string()
        }
    }

    /// Finds a processor: `wanted` is a path when it contains a `/`, else a name looked up as
    /// `offload-<name>` in [`Processor::search_path`] (PROTOCOL.md section 3).
    pub fn find(wanted: &str) -> Result<Self, LookupError> {
        Self::find_in(wanted, &Self::search_path())
    }

    /// Finds a processor in `dirs` only: the explicit lookup for an app that ships its
    /// processors in a directory of its own (say, `/app/libexec/myapp`), unaffected by the
    /// user's `PATH`. `wanted` is a path when it contains a `/`.
    ///
    /// ```no_run
    /// let dir = std::path::Path::new("/usr/libexec/myapp");
    /// let blur = offload::Processor::find_in("blur", &[dir])?; // /usr/libexec/myapp/offload-blur
    /// # Ok::<(), offload::LookupError>(())
    /// ```
    pub fn find_in(wanted: &str, dirs: &[impl AsRef<Path>]) -> Result<Self, LookupError> {
        if wanted.contains('/') {
            let path = PathBuf::from(wanted);
            return if path.exists() {
                Ok(Self::at(path))
            } else {
                Err(LookupError {
                    wanted: wanted.to_owned(),
                    tried_names: vec![wanted.to_owned()],
                    searched: Vec::new(),
                    unusable: Vec::new(),
                })
            };
        }
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_path_buf()).collect();
        let names = candidate_names(wanted);
        let joined = std::env::join_paths(&dirs).unwrap_or_default();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        for name in &names {
            if let Ok(path) = which::which_in(name, Some(&joined), &cwd) {
                return Ok(Self {
                    by_name: true,
                    ..Self::at(path)
                });
            }
        }
        // Not found as something that runs: say so of a file by that name that is there.
        let unusable = dirs
            .iter()
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .filter_map(|path| {
                let meta = std::fs::metadata(&path).ok()?;
                let why = if meta.is_dir() {
                    "is a directory"
                } else if meta.permissions().mode() & 0o111 == 0 {
                    NOT_EXECUTABLE
                } else {
                    // Executable by someone, not by this user.
                    "cannot be executed by this user"
                };
                Some((path, why.to_owned()))
            })
            .collect();
        Err(LookupError {
            wanted: wanted.to_owned(),
            tried_names: names,
            searched: dirs,
            unusable,
        })
    }

    /// The directories [`Processor::find`] and [`Processor::list`] search, in order: beside the
    /// running executable (where cargo puts the processors built with it), then
    /// `OFFLOAD_PROCESSOR_PATH`, then `PATH`. Nothing is baked in at build time; an app that
    /// knows where its processors are uses [`Processor::find_in`].
    pub fn search_path() -> Vec<PathBuf> {
        let mut dirs = builtin_dirs();
        for var in [PROCESSOR_PATH_ENV, "PATH"] {
            if let Some(value) = std::env::var_os(var) {
                dirs.extend(std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// Every `offload-*` executable on the search path; the first of each name wins.
    pub fn list() -> Vec<Self> {
        Self::list_in(&Self::search_path())
    }

    /// Every `offload-*` executable in `dirs`; the first of each name wins.
    pub fn list_in(dirs: &[impl AsRef<Path>]) -> Vec<Self> {
        let mut found: Vec<Self> = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir.as_ref()) else {
                continue;
            };
            let mut here: Vec<Self> = entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(EXECUTABLE_PREFIX)
                        && !name.contains('.')
                        && is_executable(&e.path())
                })
                .map(|e| Self::at(e.path()))
                .collect();
            here.sort_by(|a, b| a.name.cmp(&b.name));
            for processor in here {
                if !found.iter().any(|p| p.name == processor.name) {
                    found.push(processor);
                }
            }
        }
        found
    }

    /// The short name (`blur` for `offload-blur`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the processor for its description (`PROCESSOR --describe`, PROTOCOL.md section
    /// 10) as a job with default settings runs it: below a guard, with the job environment
    /// (not the host's: see [`crate::job::INHERITED_ENV`]), stdin empty, and a hard deadline of
    /// `timeout`. The answer is remembered per executable file. Blocks: call it off the main
    /// thread in an app. [`Job::describe`](crate::Job::describe) asks as a particular job runs
    /// it (its arguments, environment, sandbox and limits).
    pub fn describe(&self, timeout: Duration) -> Result<Description, DescribeError> {
        crate::Job::new(self.clone()).describe(timeout)
    }
}

/// The executable a name stands for: `offload-NAME` only (PROTOCOL.md section 3), so that
/// `offload run cat` does not quietly run `/bin/cat`; a name given with its prefix is kept.
fn candidate_names(wanted: &str) -> Vec<String> {
    if wanted.starts_with(EXECUTABLE_PREFIX) {
        vec![wanted.to_owned()]
    } else {
        vec![format!("{EXECUTABLE_PREFIX}{wanted}")]
    }
}

/// What [`LookupError`] says of a file without execute permission.
const NOT_EXECUTABLE: &str = "is not executable";

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where processors built with offload live: beside the running executable (and beside its
/// parent for test and example binaries).
fn builtin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        // Test binaries live in target/*/deps and examples in target/*/examples.
        let name = dir.file_name().and_then(|n| n.to_str());
        if matches!(name, Some("deps" | "examples")) {
            if let Some(parent) = dir.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
        dirs.push(dir);
    }
    dirs
}

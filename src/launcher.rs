//! Launchers: where a job's processor runs, and how it gets there.
//!
//! A [`Launcher`] is data that a [`Job`](crate::Job) carries, not a runner of its own: the same
//! runner threads, pipes, limits and persistent workers serve every launcher, and only the
//! command that starts a processor changes.
//!
//! - [`Launcher::local`]: a process on this machine (what a job without a launcher does).
//! - [`Launcher::slurm`]: inside a Slurm allocation, each one-shot job or persistent worker is
//!   a job step, `srun --exact -N1 -n1`, and the allocation's task count gives the slots.
//! - [`Launcher::ssh`]: each one-shot job or worker is an `ssh -T -o BatchMode=yes` session to
//!   the least loaded of its hosts; a host that cannot be reached is marked down and its jobs
//!   go to the others.
//!
//! Inputs and results travel over the same pipes as locally (through srun's or ssh's stdin
//! and stdout), so no shared filesystem is needed. On the remote side, a small POSIX shell
//! wrapper (`src/runner/launch.sh`) finds the processor by name or path, says that it
//! started, and (over ssh) guards it: a cancel, a timeout or a lost connection leaves no
//! process behind. docs/CLUSTER.md says what a cluster needs installed.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How processors are started: locally, as Slurm job steps, or over ssh.
pub struct Launcher {
    kind: Kind,
    /// Extra arguments for `srun` or `ssh`, before the command.
    args: Vec<OsString>,
    /// The hosts (one, the allocation, for Slurm) and their load.
    hosts: Mutex<Vec<HostState>>,
    /// Tells launchers apart (persistent workers serve jobs of one launcher only).
    id: u64,
    /// How it was written (`ssh:host1,4/host2`), for showing it.
    spec: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Local,
    Slurm { job_id: String },
    Ssh,
}

/// An ssh host and, if given (`N/HOST`), how many jobs it runs at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// The destination given to ssh (`user@host`, or a name from `~/.ssh/config`).
    pub name: String,
    /// Slots; `None` asks the host (`nproc`) when the slots are first needed.
    pub slots: Option<usize>,
}

#[derive(Debug)]
struct HostState {
    name: String,
    slots: Option<usize>,
    /// Jobs and workers started there and not ended.
    running: usize,
    /// Why it is down (it could not be reached), if it is.
    down: Option<String>,
}

/// A launcher that cannot be used as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherError(pub String);

impl fmt::Display for LauncherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LauncherError {}

/// How long asking an ssh host for its core count may take.
const ASK_SLOTS_TIMEOUT: Duration = Duration::from_secs(20);

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Launcher {
    fn new(kind: Kind, args: Vec<OsString>, hosts: Vec<HostState>) -> Self {
        let spec = match &kind {
            Kind::Local => "local".to_owned(),
            Kind::Slurm { .. } => "slurm".to_owned(),
            Kind::Ssh => {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|h| match h.slots {
                        Some(n) => format!("{n}/{}", h.name),
                        None => h.name.clone(),
                    })
                    .collect();
                format!("ssh:{}", hosts.join(","))
            }
        };
        Self {
            kind,
            args,
            hosts: Mutex::new(hosts),
            id: next_id(),
            spec,
        }
    }

    /// How it is written for `--launcher`, followed by its srun or ssh arguments.
    pub fn spec(&self) -> String {
        let mut words = vec![self.spec.clone()];
        words.extend(self.args.iter().map(|a| a.to_string_lossy().into_owned()));
        words.join(" ")
    }

    /// Processes on this machine.
    pub fn local() -> Self {
        Self::new(Kind::Local, Vec::new(), Vec::new())
    }

    /// Job steps of the Slurm allocation this process runs in (`SLURM_JOB_ID` set, as under
    /// `salloc` or in an `sbatch` script), started with `srun`; `args` go to each `srun`.
    pub fn slurm(args: Vec<OsString>) -> Result<Self, LauncherError> {
        let Some(job_id) = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()) else {
            return Err(LauncherError(
                "the slurm launcher runs job steps inside a Slurm allocation, and SLURM_JOB_ID \
                 is not set: run offload inside one, as in `salloc -n 8 offload run ...` or \
                 from an sbatch script"
                    .into(),
            ));
        };
        if which::which("srun").is_err() {
            return Err(LauncherError(
                "the slurm launcher needs srun on PATH (Debian: apt install slurm-client)".into(),
            ));
        }
        let slots = allocation_slots();
        let host = HostState {
            name: format!("slurm job {job_id}"),
            slots,
            running: 0,
            down: None,
        };
        Ok(Self::new(Kind::Slurm { job_id }, args, vec![host]))
    }

    /// Sessions on `hosts` with `ssh -T -o BatchMode=yes`; `args` go to each `ssh`.
    pub fn ssh(hosts: Vec<SshHost>, args: Vec<OsString>) -> Result<Self, LauncherError> {
        if hosts.is_empty() {
            return Err(LauncherError(
                "the ssh launcher needs at least one host".into(),
            ));
        }
        if which::which("ssh").is_err() {
            return Err(LauncherError(
                "the ssh launcher needs ssh on PATH (Debian: apt install openssh-client)".into(),
            ));
        }
        let hosts = hosts
            .into_iter()
            .map(|h| HostState {
                name: h.name,
                slots: h.slots,
                running: 0,
                down: None,
            })
            .collect();
        Ok(Self::new(Kind::Ssh, args, hosts))
    }

    /// Parses `local`, `slurm` or `ssh:HOST[,HOST...]` (a host written `N/HOST` has N slots),
    /// as `offload run --launcher` takes it; `args` are the `--launcher-arg`s.
    pub fn parse(spec: &str, args: Vec<OsString>) -> Result<Self, LauncherError> {
        let refuse_args = |name: &str| {
            if args.is_empty() {
                Ok(())
            } else {
                Err(LauncherError(format!(
                    "--launcher-arg is for srun or ssh; the {name} launcher takes none"
                )))
            }
        };
        match spec {
            "local" => refuse_args("local").map(|()| Self::local()),
            "slurm" => Self::slurm(args),
            _ => {
                let Some(list) = spec.strip_prefix("ssh:") else {
                    return Err(LauncherError(format!(
                        "unknown launcher {spec:?}: use local, slurm or ssh:HOST[,HOST...]"
                    )));
                };
                let hosts = list
                    .split(',')
                    .filter(|h| !h.trim().is_empty())
                    .map(parse_host)
                    .collect::<Result<Vec<_>, _>>()?;
                Self::ssh(hosts, args)
            }
        }
    }

    /// Whether processors run on this machine.
    pub fn is_local(&self) -> bool {
        self.kind == Kind::Local
    }

    /// `local`, `slurm` or `ssh`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Local => "local",
            Kind::Slurm { .. } => "slurm",
            Kind::Ssh => "ssh",
        }
    }

    /// How many jobs it runs at once: this machine's cores, the allocation's tasks, or the sum
    /// of the hosts' slots. An ssh host given without a count is asked (`nproc` over ssh:
    /// this blocks, so call it off the main context); one that cannot be reached is marked
    /// down and counts for none.
    pub fn slots(&self) -> usize {
        let cores = || std::thread::available_parallelism().map_or(1, usize::from);
        match &self.kind {
            Kind::Local => cores(),
            Kind::Slurm { .. } => self.lock().first().and_then(|h| h.slots).unwrap_or(1),
            Kind::Ssh => {
                let unknown: Vec<String> = self
                    .lock()
                    .iter()
                    .filter(|h| h.slots.is_none() && h.down.is_none())
                    .map(|h| h.name.clone())
                    .collect();
                for name in unknown {
                    let answer = self.ask_cores(&name);
                    let mut hosts = self.lock();
                    for host in hosts.iter_mut().filter(|h| h.name == name) {
                        match &answer {
                            Ok(n) => host.slots = Some(*n),
                            Err(why) => host.down = Some(why.clone()),
                        }
                    }
                }
                self.lock()
                    .iter()
                    .filter(|h| h.down.is_none())
                    .map(|h| h.slots.unwrap_or(1))
                    .sum()
            }
        }
    }

    /// The hosts that are down, and why.
    pub fn down_hosts(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|h| h.down.clone().map(|why| (h.name.clone(), why)))
            .collect()
    }

    fn ask_cores(&self, host: &str) -> Result<usize, String> {
        let mut command = Command::new("ssh");
        command
            .args(["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(&self.args)
            .arg(host)
            .arg("nproc")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = run_with_timeout(command, ASK_SLOTS_TIMEOUT)
            .map_err(|err| format!("cannot ask {host} for its cores: {err}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match text.trim().parse::<usize>() {
            Ok(n) if output.status.success() && n > 0 => Ok(n),
            _ => Err(format!(
                "{host} could not be reached ({}){}",
                output.status,
                last_words(&output.stderr)
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<HostState>> {
        // Every update leaves the table consistent.
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A number that tells this launcher from every other in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The `srun` or `ssh` arguments given by the caller.
    pub(crate) fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The Slurm job id, for the slurm launcher.
    pub(crate) fn slurm_job(&self) -> Option<&str> {
        match &self.kind {
            Kind::Slurm { job_id } => Some(job_id),
            _ => None,
        }
    }

    /// Takes a place for one process on the least loaded host that is up (by running jobs
    /// per slot), and counts it there; `None` when every host is down.
    pub(crate) fn place(&self) -> Option<(usize, String)> {
        let mut hosts = self.lock();
        let load = |h: &HostState| h.running as f64 / h.slots.unwrap_or(1).max(1) as f64;
        let (index, host) = hosts
            .iter_mut()
            .enumerate()
            .filter(|(_, h)| h.down.is_none())
            .min_by(|(_, a), (_, b)| load(a).total_cmp(&load(b)))?;
        host.running += 1;
        Some((index, host.name.clone()))
    }

    /// Gives back a place taken by [`Launcher::place`].
    pub(crate) fn release(&self, host: usize) {
        if let Some(h) = self.lock().get_mut(host) {
            h.running = h.running.saturating_sub(1);
        }
    }

    /// Marks a host down: no job goes there any more.
    pub(crate) fn mark_down(&self, host: usize, why: &str) {
        if let Some(h) = self.lock().get_mut(host) {
            if h.down.is_none() {
                tracing::warn!(host, why, "a host is down: no job goes there any more");
            }
            h.down.get_or_insert_with(|| why.to_owned());
        }
    }

    /// Whether some host is still up.
    pub(crate) fn any_up(&self) -> bool {
        self.lock().iter().any(|h| h.down.is_none())
    }

    /// Why no host can take a job, when none is up.
    pub(crate) fn all_down_message(&self) -> String {
        let why: Vec<String> = self
            .down_hosts()
            .into_iter()
            .map(|(host, why)| format!("{host}: {why}"))
            .collect();
        format!(
            "no host of the ssh launcher can be reached ({})",
            why.join("; ")
        )
    }
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Launcher")
            .field("kind", &self.kind)
            .field("args", &self.args)
            .field("hosts", &*self.lock())
            .finish()
    }
}

/// `N/HOST` or `HOST`.
fn parse_host(text: &str) -> Result<SshHost, LauncherError> {
    let text = text.trim();
    match text.split_once('/') {
        Some((count, name)) => {
            let slots = count
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    LauncherError(format!(
                        "{text:?}: write a host as HOST or N/HOST, with N a positive number of \
                         slots"
                    ))
                })?;
            Ok(SshHost {
                name: name.to_owned(),
                slots: Some(slots),
            })
        }
        None => Ok(SshHost {
            name: text.to_owned(),
            slots: None,
        }),
    }
}

/// The tasks of the allocation: `SLURM_NTASKS` (as `salloc -n` sets it), else the CPUs of its
/// nodes (`SLURM_JOB_CPUS_PER_NODE`, like `4(x2),8`).
fn allocation_slots() -> Option<usize> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(n) = var("SLURM_NTASKS").or_else(|| var("SLURM_NPROCS")) {
        return n.parse().ok().filter(|n| *n > 0);
    }
    let per_node = var("SLURM_JOB_CPUS_PER_NODE")?;
    let mut total = 0;
    for part in per_node.split(',') {
        let (cpus, times) = match part.split_once("(x") {
            Some((cpus, rest)) => (cpus, rest.trim_end_matches(')')),
            None => (part, "1"),
        };
        total += cpus.parse::<usize>().ok()? * times.parse::<usize>().ok()?;
    }
    (total > 0).then_some(total)
}

/// The last line of a command's stderr, as " (LINE)".
pub(crate) fn last_words(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default()
}

/// Runs `command` to its end, killing it after `timeout`.
pub(crate) fn run_with_timeout(
    mut command: Command,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where `srun` or `ssh` is, for the runner.
pub(crate) fn program(launcher: &Launcher) -> PathBuf {
    let name = match launcher.kind {
        Kind::Slurm { .. } => "srun",
        _ => "ssh",
    };
    which::which(name).unwrap_or_else(|_| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_with_and_without_slots() {
        assert_eq!(
            parse_host("4/node1").ok(),
            Some(SshHost {
                name: "node1".into(),
                slots: Some(4)
            })
        );
        assert_eq!(
            parse_host("user@node2").ok(),
            Some(SshHost {
                name: "user@node2".into(),
                slots: None
            })
        );
        assert!(parse_host("0/node").is_err());
        assert!(parse_host("x/node").is_err());
    }

    #[test]
    fn an_unknown_launcher_is_refused_with_the_choices() {
        let err = Launcher::parse("kubernetes", Vec::new()).unwrap_err();
        assert!(err.0.contains("local, slurm or ssh:HOST"), "{err}");
        let err = Launcher::parse("local", vec!["-v".into()]).unwrap_err();
        assert!(err.0.contains("takes none"), "{err}");
    }

    #[test]
    fn the_least_loaded_host_that_is_up_is_chosen() {
        let hosts = vec![
            SshHost {
                name: "a".into(),
                slots: Some(1),
            },
            SshHost {
                name: "b".into(),
                slots: Some(2),
            },
        ];
        let Ok(launcher) = Launcher::ssh(hosts, Vec::new()) else {
            return; // no ssh client installed: nothing to test
        };
        assert_eq!(launcher.slots(), 3);
        let picks: Vec<String> = (0..3)
            .filter_map(|_| launcher.place())
            .map(|(_, name)| name)
            .collect();
        assert_eq!(picks.iter().filter(|n| *n == "b").count(), 2, "{picks:?}");
        launcher.mark_down(1, "refused");
        assert_eq!(launcher.place().map(|(i, _)| i), Some(0));
        launcher.mark_down(0, "refused");
        assert!(launcher.place().is_none());
        assert!(launcher.all_down_message().contains("refused"));
    }
}

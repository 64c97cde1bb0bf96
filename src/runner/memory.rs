//! Memory limits that hold: which mechanism this system allows, and a cgroup per job (or per
//! worker) where it allows one.
//!
//! In order of preference, detected once per process:
//!
//! 1. **cgroup v2**, where the host's cgroup is delegated to it with the memory controller
//!    enabled for its children (as under `systemd-run --user --scope -p Delegate=yes`, or a
//!    cgroup a service manager prepared): each limited job gets a child cgroup with
//!    `memory.max` (and `memory.swap.max` 0, `memory.oom.group` 1), the kernel stops it at the
//!    limit, and `memory.events` says it did.
//! 2. **cgroup v1**, where the host's memory cgroup is writable (a root service, a container):
//!    `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`), `memory.oom_control`.
//! 3. **`RLIMIT_DATA`** otherwise: the processor's private writable memory (heap and anonymous
//!    mappings, not its code, stack, shared or file mappings) is capped, so an allocation past
//!    the limit fails in the processor, which ends as it chooses; the host tells such an end by
//!    the processor's own words for it (`memory allocation of`, `MemoryError`, ...).
//!
//! In every case the resident size is also sampled every 20 ms, as before: the fallback that
//! catches memory an rlimit does not count, too late to stop a burst.
//!
//! `OFFLOAD_MEMORY_LIMIT=rlimit` (or `cgroup`) chooses instead of detecting.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::outcome::{FailureKind, JobError, MemoryLimitKind};

/// The environment variable that overrides detection: `rlimit`, `cgroup`, or `auto`.
pub const MEMORY_LIMIT_ENV: &str = "OFFLOAD_MEMORY_LIMIT";

/// Where the host may make cgroups for its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mechanism {
    CgroupV2 { parent: PathBuf },
    CgroupV1 { parent: PathBuf },
    Rlimit,
}

impl Mechanism {
    pub(crate) fn kind(&self) -> MemoryLimitKind {
        match self {
            Self::CgroupV2 { .. } => MemoryLimitKind::CgroupV2,
            Self::CgroupV1 { .. } => MemoryLimitKind::CgroupV1,
            Self::Rlimit => MemoryLimitKind::Rlimit,
        }
    }
}

/// The mechanism this process uses, detected at the first call.
pub(crate) fn mechanism() -> &'static Mechanism {
    static MECHANISM: OnceLock<Mechanism> = OnceLock::new();
    MECHANISM.get_or_init(|| {
        let wanted = std::env::var(MEMORY_LIMIT_ENV).unwrap_or_default();
        if wanted.trim() == "rlimit" {
            return Mechanism::Rlimit;
        }
        let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        detect(&cgroups, &mounts, Path::new("/")).unwrap_or(Mechanism::Rlimit)
    })
}

/// The first mechanism that works, from the text of /proc/self/cgroup and /proc/self/mountinfo
/// (with paths under `root`, so that tests can give a tree of their own).
pub(crate) fn detect(cgroups: &str, mounts: &str, root: &Path) -> Option<Mechanism> {
    let under_root = |path: &str| root.join(path.trim_start_matches('/'));
    // v2: "0::/path" and a cgroup2 mount.
    if let (Some(path), Some(mount)) = (
        cgroups.lines().find_map(|l| l.strip_prefix("0::")),
        mount_point(mounts, |fstype, _| fstype == "cgroup2"),
    ) {
        let dir = under_root(&mount).join(path.trim_start_matches('/'));
        if v2_usable(&dir) {
            return Some(Mechanism::CgroupV2 { parent: dir });
        }
    }
    // v1: "N:memory:/path" (the memory controller may share a hierarchy) and its mount.
    let v1_path = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    if let (Some(path), Some(mount)) = (
        v1_path,
        mount_point(mounts, |fstype, options| {
            fstype == "cgroup" && options.split(',').any(|o| o == "memory")
        }),
    ) {
        let dir = under_root(&mount).join(path.trim_start_matches('/'));
        if dir.join("memory.limit_in_bytes").exists() && can_make_children(&dir) {
            return Some(Mechanism::CgroupV1 { parent: dir });
        }
    }
    None
}

/// The mount point of the first mount whose filesystem type and super options `accept`.
fn mount_point(mounts: &str, accept: impl Fn(&str, &str) -> bool) -> Option<String> {
    mounts.lines().find_map(|line| {
        // "36 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
        let (before, after) = line.split_once(" - ")?;
        let point = before.split_whitespace().nth(4)?;
        let mut after = after.split_whitespace();
        let fstype = after.next()?;
        let _source = after.next()?;
        let options = after.next().unwrap_or("");
        accept(fstype, options).then(|| point.to_owned())
    })
}

/// Whether the v2 cgroup `dir` gives its children the memory controller and is ours to write.
fn v2_usable(dir: &Path) -> bool {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    enabled.split_whitespace().any(|c| c == "memory") && can_make_children(dir)
}

/// Whether a child cgroup can be made (and removed) in `dir`.
fn can_make_children(dir: &Path) -> bool {
    let probe = dir.join(format!("offload-probe-{}", std::process::id()));
    let made = fs::create_dir(&probe).is_ok();
    if made {
        let _ = fs::remove_dir(&probe);
    }
    made
}

/// A job's (or a worker's) own cgroup, removed when dropped (once empty).
#[derive(Debug)]
pub(crate) struct JobCgroup {
    dir: PathBuf,
    version: u8,
}

impl JobCgroup {
    /// Makes a cgroup under the host's with a memory limit of `limit` bytes.
    pub(crate) fn create(mechanism: &Mechanism, limit: u64) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let (parent, version) = match mechanism {
            Mechanism::CgroupV2 { parent } => (parent, 2),
            Mechanism::CgroupV1 { parent } => (parent, 1),
            Mechanism::Rlimit => return Err(io::ErrorKind::Unsupported.into()),
        };
        let name = format!(
            "offload-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        fs::create_dir(&dir)?;
        let cgroup = Self { dir, version };
        cgroup.set_limit(limit)?;
        if version == 2 {
            // No swap to escape to, and an OOM kill takes the whole job, not one process of it.
            let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
            let _ = fs::write(cgroup.dir.join("memory.oom.group"), "1");
        }
        Ok(cgroup)
    }

    /// Lowers its CPU weight to what nice `nice` means (`cpu.weight.nice`), where it is a
    /// cgroup v2 whose parent enables the `cpu` controller for it; whether it did.
    pub(crate) fn set_cpu_nice(&self, nice: i32) -> bool {
        if self.version != 2 || nice <= 0 {
            return false;
        }
        let enabled = self
            .dir
            .parent()
            .and_then(|parent| fs::read_to_string(parent.join("cgroup.subtree_control")).ok())
            .unwrap_or_default();
        enabled.split_whitespace().any(|c| c == "cpu")
            && fs::write(self.dir.join("cpu.weight.nice"), nice.to_string()).is_ok()
    }

    /// Changes the limit (a worker's next job may have another).
    pub(crate) fn set_limit(&self, limit: u64) -> io::Result<()> {
        if self.version == 2 {
            return fs::write(self.dir.join("memory.max"), limit.to_string());
        }
        // v1: the memory-and-swap limit may not go below the memory limit, so their order
        // depends on the direction; swap accounting may also be off (no memsw files).
        let memsw = self.dir.join("memory.memsw.limit_in_bytes");
        let memory = self.dir.join("memory.limit_in_bytes");
        if memsw.exists() {
            if fs::write(&memsw, limit.to_string()).is_ok() {
                return fs::write(&memory, limit.to_string());
            }
            fs::write(&memory, limit.to_string())?;
            return fs::write(&memsw, limit.to_string());
        }
        fs::write(&memory, limit.to_string())
    }

    /// The file the processor writes its pid to, to join.
    pub(crate) fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let file = if self.version == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let kills = text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if kills > 0 || self.version == 2 {
            return kills;
        }
        // Older v1 kernels have no oom_kill count: the limit was hit at least.
        fs::read_to_string(self.dir.join("memory.failcnt"))
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        // Empty by now: the guard kills everything below it before it exits. A cgroup whose
        // last process is still being torn down refuses for a moment.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// How one job's (or one worker's) memory limit is enforced.
#[derive(Debug)]
pub(crate) struct Enforcement {
    pub limit: u64,
    pub kind: MemoryLimitKind,
    pub cgroup: Option<JobCgroup>,
    /// OOM kills in the cgroup already blamed on a job.
    oom_seen: std::cell::Cell<u64>,
    /// Its cgroup's CPU weight was lowered to the job's nice.
    cpu_weighted: std::cell::Cell<bool>,
}

impl Enforcement {
    /// How `job`'s memory limit holds on this machine, if it has one; `None` for a job that
    /// runs through a launcher (its limit is the launcher's, Slurm's `--mem`).
    pub(crate) fn for_job(job: &crate::job::Job) -> Option<Self> {
        let enforcement = job
            .limits
            .max_memory_bytes
            .filter(|_| job.launcher.is_none())
            .map(Self::new)?;
        if let Some(cgroup) = &enforcement.cgroup {
            enforcement.cpu_weighted.set(cgroup.set_cpu_nice(job.nice));
        }
        Some(enforcement)
    }

    /// Whether its cgroup's CPU weight says its nice value.
    pub(crate) fn cpu_weighted(&self) -> bool {
        self.cpu_weighted.get()
    }

    /// The best this system allows for a limit of `limit` bytes: a cgroup of its own where
    /// one can be made, else `RLIMIT_DATA`.
    pub(crate) fn new(limit: u64) -> Self {
        let mechanism = mechanism();
        match JobCgroup::create(mechanism, limit) {
            Ok(cgroup) => Self {
                limit,
                kind: mechanism.kind(),
                cgroup: Some(cgroup),
                oom_seen: std::cell::Cell::new(0),
                cpu_weighted: std::cell::Cell::new(false),
            },
            Err(_) => Self {
                limit,
                kind: MemoryLimitKind::Rlimit,
                cgroup: None,
                oom_seen: std::cell::Cell::new(0),
                cpu_weighted: std::cell::Cell::new(false),
            },
        }
    }

    /// The `RLIMIT_DATA` to set, without a cgroup.
    pub(crate) fn data_limit(&self) -> Option<u64> {
        self.cgroup.is_none().then_some(self.limit)
    }

    /// The `cgroup.procs` file the processor joins.
    pub(crate) fn procs_file(&self) -> Option<PathBuf> {
        self.cgroup.as_ref().map(JobCgroup::procs_file)
    }

    /// Whether resident memory must also be sampled (no cgroup holds the limit).
    pub(crate) fn samples(&self) -> bool {
        self.cgroup.is_none()
    }

    /// A worker's next job, with its own limit. (Nothing is read per job: the OOM count is
    /// read when a job fails, and compared with what earlier failures were blamed for.)
    pub(crate) fn next_job(&mut self, limit: u64) {
        if let Some(cgroup) = &self.cgroup {
            if limit != self.limit {
                let _ = cgroup.set_limit(limit);
            }
        }
        self.limit = limit;
    }

    /// A failure that was the memory limit's doing, said as such (`resource_limit`): the kernel
    /// killed the job in its cgroup, or under `RLIMIT_DATA` the processor's own words say an
    /// allocation failed. Other failures are given back as they are.
    pub(crate) fn judge(&self, error: JobError) -> JobError {
        if !matches!(error.kind, FailureKind::Failed | FailureKind::Killed) {
            return error;
        }
        let limit = super::child::mib(self.limit);
        let kills = self.cgroup.as_ref().map_or(0, JobCgroup::oom_kills);
        let message = match &self.cgroup {
            Some(_) if kills > self.oom_seen.replace(kills) => format!(
                "went over its memory limit of {limit} and was killed by the kernel ({})",
                self.kind.describe()
            ),
            None if says_out_of_memory(&error.stderr_tail, &error.message) => format!(
                "went over its memory limit of {limit} ({}: an allocation failed): {}",
                self.kind.describe(),
                error.message
            ),
            _ => return error,
        };
        JobError {
            kind: FailureKind::ResourceLimit,
            message,
            ..error
        }
    }
}

/// Whether a failure's evidence says that an allocation failed: what Rust, C++, Python, C
/// libraries and the SDKs print when memory runs out. Used for jobs under `RLIMIT_DATA`, where
/// the processor, not the kernel, decides how to end.
pub(crate) fn says_out_of_memory(stderr_tail: &str, message: &str) -> bool {
    const WORDS: &[&str] = &[
        "memory allocation of",
        "cannot allocate",
        "Cannot allocate memory",
        "out of memory",
        "Out of memory",
        "MemoryError",
        "std::bad_alloc",
        "ENOMEM",
    ];
    WORDS
        .iter()
        .any(|w| stderr_tail.contains(w) || message.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS_V1: &str = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    const MOUNTS_V2: &str = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        root
    }

    #[test]
    fn a_delegated_v2_cgroup_with_the_memory_controller_is_used() {
        let root = tree(&[(
            "sys/fs/cgroup/user.slice/app.scope/cgroup.subtree_control",
            "cpu memory pids",
        )]);
        let found = detect("0::/user.slice/app.scope\n", MOUNTS_V2, root.path());
        assert_eq!(
            found,
            Some(Mechanism::CgroupV2 {
                parent: root.path().join("sys/fs/cgroup/user.slice/app.scope")
            })
        );
    }

    #[test]
    fn a_v2_cgroup_without_memory_for_its_children_is_not() {
        let root = tree(&[(
            "sys/fs/cgroup/user.slice/app.scope/cgroup.subtree_control",
            "pids",
        )]);
        assert_eq!(
            detect("0::/user.slice/app.scope\n", MOUNTS_V2, root.path()),
            None
        );
    }

    #[test]
    fn a_writable_v1_memory_cgroup_is_used_and_an_empty_v2_is_not() {
        let root = tree(&[
            (
                "sys/fs/cgroup/memory/jobs/memory.limit_in_bytes",
                "9223372036854771712",
            ),
            ("sys/fs/cgroup/unified/cgroup.subtree_control", ""),
        ]);
        let cgroups = "4:memory:/jobs\n1:cpu:/\n0::/\n";
        assert_eq!(
            detect(cgroups, MOUNTS_V1, root.path()),
            Some(Mechanism::CgroupV1 {
                parent: root.path().join("sys/fs/cgroup/memory/jobs")
            })
        );
    }

    #[test]
    fn out_of_memory_words_are_recognised() {
        assert!(says_out_of_memory(
            "memory allocation of 2147483648 bytes failed\n",
            ""
        ));
        assert!(says_out_of_memory("", "cannot allocate 2147483648 bytes"));
        assert!(!says_out_of_memory("disk full", "exited with code 3"));
    }
}

#[cfg(test)]
mod cpu_weight_tests {
    use super::*;

    #[test]
    fn a_v2_job_cgroup_gets_the_jobs_nice_as_its_cpu_weight_where_cpu_is_enabled() {
        // A stand-in for a delegated cgroup v2: the kernel's files are plain files here.
        let parent = tempfile::tempdir().expect("tempdir");
        std::fs::write(parent.path().join("cgroup.subtree_control"), "cpu memory\n")
            .expect("write");
        let cgroup = JobCgroup {
            dir: parent.path().join("job"),
            version: 2,
        };
        std::fs::create_dir(&cgroup.dir).expect("mkdir");
        assert!(cgroup.set_cpu_nice(10));
        assert_eq!(
            std::fs::read_to_string(cgroup.dir.join("cpu.weight.nice")).expect("written"),
            "10"
        );
        // Without the cpu controller for its children, nothing is written.
        std::fs::write(parent.path().join("cgroup.subtree_control"), "memory\n").expect("write");
        std::fs::remove_file(cgroup.dir.join("cpu.weight.nice")).expect("rm");
        assert!(!cgroup.set_cpu_nice(10));
        assert!(!cgroup.dir.join("cpu.weight.nice").exists());
        // A v1 cgroup, or nice 0: nothing.
        let v1 = JobCgroup {
            dir: cgroup.dir.clone(),
            version: 1,
        };
        assert!(!v1.set_cpu_nice(10));
        std::mem::forget(v1);
        std::mem::forget(cgroup);
    }
}

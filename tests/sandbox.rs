//! The sandbox holds against an adversary (src/runner/sandbox/): a processor that tries to
//! escape, as root and as `nobody`, through `offload run --sandbox` and through the library,
//! one-shot and on a worker; and a processor that lives where the sandbox hides (a relative
//! path, a Python virtual environment and packages under the home directory) runs inside as it
//! runs outside.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ciborium::Value;
use common::{diag_job, field, run_jobs};
use offload::{Persistence, Sandbox};
use serde_json::json;

const BOTH: [Persistence; 2] = [Persistence::Never, Persistence::Always];

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `command` as `nobody` (uid and gid 65534, no groups), as an unprivileged user would.
fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--reset-env",
        ])
        .arg(program)
        .env("HOME", "/nonexistent")
        .current_dir("/");
    command
}

/// A process to be the victim of a processor that tries to signal what it should not see.
struct Victim(std::process::Child);

impl Victim {
    fn start(as_nobody_too: bool) -> Self {
        let mut command = if as_nobody_too {
            as_nobody(Path::new("/bin/sleep"))
        } else {
            Command::new("sleep")
        };
        command.arg("1000");
        Self(command.spawn().expect("a victim process"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What each escape must come to: the probe and a word of its expected outcome.
fn escapes(victim: u32) -> Vec<(String, &'static str)> {
    let host = std::process::id();
    vec![
        ("status:CapEff".into(), "CapEff:\t0000000000000000"),
        ("status:CapPrm".into(), "CapPrm:\t0000000000000000"),
        ("status:CapBnd".into(), "CapBnd:\t0000000000000000"),
        ("status:NoNewPrivs".into(), "NoNewPrivs:\t1"),
        ("status:Seccomp".into(), "Seccomp:\t2"),
        ("remount:/".into(), "error"),
        ("mount:/tmp".into(), "error"),
        (
            format!("write:/var/lib/offload-escape-{}", std::process::id()),
            "error",
        ),
        // Its own /dev/shm, writable (Python's multiprocessing needs it), not the host's
        // (checked after).
        (
            format!("write:/dev/shm/offload-escape-{}", std::process::id()),
            "ok",
        ),
        (
            format!("write:/tmp/offload-own-{}", std::process::id()),
            "ok",
        ),
        ("read:/etc/shadow".into(), "error"),
        (format!("kill:{victim}"), "error"),
        (format!("signal:{host}"), "error"),
        (format!("cmdline:{victim}"), "error"),
        ("keyctl".into(), "error"),
        ("unshare".into(), "error"),
    ]
}

fn check(who: &str, expected: &[(String, &'static str)], got: &[String], visible: &str) {
    assert_eq!(got.len(), expected.len() + 2, "{who}: {got:?}");
    for ((probe, want), got) in expected.iter().zip(got) {
        assert!(got.starts_with(want), "{who}: {probe}: {got}");
    }
    // Its own pid namespace: bwrap's pid 1 and itself, nothing of the host's.
    let seen: usize = got[expected.len()].parse().expect("a count");
    assert!(seen <= 3, "{who}: it sees {seen} processes");
    assert!(
        got[expected.len() + 1].starts_with(visible),
        "{who}: {got:?}"
    );
}

fn probe_list(expected: &[(String, &'static str)]) -> Vec<String> {
    expected
        .iter()
        .map(|(p, _)| p.clone())
        .chain(["processes".into(), "status:Uid".into()])
        .collect()
}

fn probes_of(value: &Value) -> Vec<String> {
    field(value, "probes")
        .and_then(Value::as_array)
        .expect("probes")
        .iter()
        .map(|p| p.as_text().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn escapes_fail_for_the_user_running_the_host_through_the_library() {
    let mut victim = Victim::start(false);
    let expected = escapes(victim.pid());
    let input = json!({"probe": probe_list(&expected)});
    // Root's processor runs as nobody; a user's as that user.
    let uid = if is_root() {
        "Uid:\t65534".to_owned()
    } else {
        // SAFETY: getuid cannot fail.
        format!("Uid:\t{}", unsafe { libc::getuid() })
    };
    for persistence in BOTH {
        let job = diag_job().persistence(persistence).sandbox(Sandbox::new());
        let results = run_jobs(&job, std::slice::from_ref(&input), 1, None);
        let value = results[0].result.as_ref().expect("the probe runs");
        check(
            &format!("{persistence:?}"),
            &expected,
            &probes_of(value),
            &uid,
        );
        assert!(victim.alive(), "{persistence:?}: the victim survived");
    }
    assert!(
        !Path::new(&format!("/dev/shm/offload-escape-{}", std::process::id())).exists(),
        "its /dev/shm is its own"
    );
}

#[test]
fn escapes_fail_as_root_and_as_nobody_through_offload_run() {
    if !is_root() {
        eprintln!("skipped: running as nobody needs root to switch users");
        return;
    }
    for nobody in [false, true] {
        let mut victim = Victim::start(nobody);
        let expected = escapes(victim.pid());
        let input = json!({"probe": probe_list(&expected)}).to_string();
        for mode in ["--no-persistent", "--persistent"] {
            let offload = common::bin("offload");
            let mut command = if nobody {
                as_nobody(&offload)
            } else {
                Command::new(&offload)
            };
            command.arg("run").arg(common::bin("offload-diag")).args([
                "--sandbox",
                mode,
                "--input",
                "-",
            ]);
            let out = common::run_with_input(command, input.as_bytes());
            let line: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
            let who = format!("nobody={nobody} {mode}");
            assert_eq!(line["status"], "ok", "{who}: {line}");
            let got: Vec<String> = line["result"]["probes"]
                .as_array()
                .expect("probes")
                .iter()
                .map(|p| p.as_str().unwrap_or("?").to_owned())
                .collect();
            check(&who, &expected, &got, "Uid:\t65534");
            assert!(victim.alive(), "{who}: the victim survived");
        }
    }
}

#[test]
fn a_relative_path_runs_in_the_sandbox() {
    let mut command = Command::new(common::bin("offload"));
    command.current_dir(common::bin_dir()).args([
        "run",
        "./offload-diag",
        "--sandbox",
        "--input",
        "-",
    ]);
    let out = common::run_with_input(command, br#"{"echo": 7}"#);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a line");
    assert_eq!(line["status"], "ok", "{line}");
    assert_eq!(line["result"]["echo"], 7);
}

#[test]
fn a_graceful_stop_reaches_the_sandboxed_processor() {
    // A processor that dies of SIGTERM at once: no SIGKILL after the grace period, and the
    // signal is the processor's, not bwrap's.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let script = dir.join(format!("sleeper-{}", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").expect("a script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let job = offload::Job::new(offload::Processor::at(&script))
        .sandbox(Sandbox::new())
        .persistence(Persistence::Never)
        // Time for bwrap to set the sandbox up and start it, on a loaded machine too.
        .timeout(std::time::Duration::from_secs(3));
    let results = run_jobs(&job, &[json!({})], 1, None);
    let err = results[0].result.as_ref().expect_err("timed out");
    assert_eq!(err.kind, offload::FailureKind::TimedOut, "{err:?}");
    assert!(!err.message.contains("ignored SIGTERM"), "{}", err.message);
    assert_eq!(err.signal, Some(libc::SIGTERM), "{err:?}");
    let _ = std::fs::remove_file(&script);
}

/// Runs `python3 -m venv` for a test: a virtual environment that sees the packages of the
/// Python that made it (cbor2, the offload SDK), plus a module of its own.
fn venv(home: &Path) -> PathBuf {
    let venv = home.join("venv");
    let status = Command::new("python3")
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(status.success());
    let site = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("the venv's site-packages");
    let site = PathBuf::from(String::from_utf8_lossy(&site.stdout).trim());
    std::fs::write(site.join("venvonly.py"), "WHERE = 'the venv'\n").expect("a module");
    venv
}

#[test]
fn a_python_processor_from_a_venv_and_user_site_under_home_gives_the_same_result_sandboxed() {
    // A home of its own, as a user's: a venv in it, and a package in ~/.local; the processor
    // in a directory of its own beside it.
    let top = tempfile::tempdir().expect("a directory");
    let home = top.path().join("home");
    let app = top.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::create_dir_all(&home).expect("mkdir");
    let home = home.as_path();
    // Readable by nobody, whom root's sandbox runs it as.
    use std::os::unix::fs::PermissionsExt;
    for dir in [top.path(), home, &app] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let venv = venv(&home.join(".venvs"));
    let version = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .expect("the version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let user_site = home.join(format!(".local/lib/python{version}/site-packages"));
    std::fs::create_dir_all(&user_site).expect("a user site");
    std::fs::write(user_site.join("useronly.py"), "WHERE = 'the user site'\n").expect("a module");
    let processor = app.join("offload-where");
    std::fs::write(
        &processor,
        "#!/usr/bin/env python\n\
         import sys\n\
         from offload_sdk import Processor\n\
         import venvonly, useronly\n\
         def where(inp, ctx):\n\
         \x20   return {'venv': venvonly.WHERE, 'user': useronly.WHERE, 'prefix': sys.prefix}\n\
         Processor('where', 'where its packages are', example={}).run(where)\n",
    )
    .expect("the processor");
    std::fs::set_permissions(&processor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for mode in ["--no-persistent", "--persistent"] {
        let run = |sandboxed: bool| {
            let mut command = Command::new(common::bin("offload"));
            command
                .arg("run")
                .arg(&processor)
                .args([mode, "--input", "-"])
                .env("HOME", home)
                .env("PATH", &path)
                .env("VIRTUAL_ENV", &venv)
                .stderr(Stdio::inherit());
            if sandboxed {
                command.arg("--sandbox");
            }
            let out = common::run_with_input(command, b"{}");
            let line: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
            assert_eq!(line["status"], "ok", "{mode} sandboxed={sandboxed}: {line}");
            line["result"].clone()
        };
        let plain = run(false);
        assert_eq!(plain["venv"], "the venv");
        assert_eq!(plain["user"], "the user site");
        assert_eq!(run(true), plain, "{mode}");
    }
}

#[test]
fn the_shipped_python_processors_give_the_same_results_sandboxed() {
    let processor = common::root().join("processors/python/offload-histogram");
    let input = br#"{"values": [1, 2, 2, 3, 5, 8]}"#;
    for mode in ["--no-persistent", "--persistent"] {
        let run = |sandboxed: bool| {
            let mut command = Command::new(common::bin("offload"));
            command
                .arg("run")
                .arg(&processor)
                .args([mode, "--input", "-"]);
            if sandboxed {
                command.arg("--sandbox");
            }
            let out = common::run_with_input(command, input);
            let line: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
            assert_eq!(line["status"], "ok", "{mode} sandboxed={sandboxed}: {line}");
            line["result"].clone()
        };
        assert_eq!(run(true), run(false), "{mode}");
    }
}

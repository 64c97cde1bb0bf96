//! The engine's core behaviour through each launcher, with the real components a user's cluster
//! has: a real single-node Slurm (jobs run inside a real `salloc` allocation, as job steps) and
//! a real sshd on 127.0.0.1 (two host names for it, and one that refuses connections).
//! `dev/cluster start` brings both up (as root; `dev/test` runs it). Everything goes through the
//! `offload` command, as a user's script would.
//!
//! Each test tags its processors with an environment variable of its own, and afterwards looks
//! for any process that still carries the tag: the remote side is this machine, so a process
//! left behind by srun or ssh would be seen.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bin, bin_dir, root, SETTLE};
use serde_json::{json, Value};

/// Starts the cluster once per test binary.
fn cluster() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(root().join("dev/cluster"))
            .arg("start")
            .output()
            .expect("run dev/cluster");
        assert!(
            out.status.success(),
            "dev/cluster start failed (the launcher tests need root, slurm-wlm, munge and \
             openssh-server: dev/setup installs them): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(
            std::env::var("OFFLOAD_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/offload-cluster".into()),
        )
    })
    .clone()
}

/// A unique tag for one test's processors.
fn tag(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

/// `offload run diag` through `launcher`, with the processors found by name on the remote side
/// (OFFLOAD_PROCESSOR_PATH: srun passes its environment on; ssh sends it with SetEnv).
fn run_command(launcher: &str, tag: &str, extra: &[&str]) -> Command {
    run_processor(launcher, tag, "diag", extra)
}

fn run_processor(launcher: &str, tag: &str, processor: &str, extra: &[&str]) -> Command {
    run_with_ssh_config(
        &cluster().join("ssh_config"),
        launcher,
        tag,
        processor,
        extra,
    )
}

/// As [`run_processor`], with ssh reading `ssh_config`.
fn run_with_ssh_config(
    ssh_config: &Path,
    launcher: &str,
    tag: &str,
    processor: &str,
    extra: &[&str],
) -> Command {
    let processors = bin_dir();
    let mut args: Vec<String> = vec![
        "run".into(),
        processor.into(),
        "--launcher".into(),
        launcher.into(),
        "--env".into(),
        format!("OFFLOAD_TEST_TAG={tag}"),
    ];
    if launcher.starts_with("ssh:") {
        args.push(format!("--launcher-arg=-F{}", ssh_config.display()));
        args.push(format!(
            "--launcher-arg=-oSetEnv=OFFLOAD_PROCESSOR_PATH={}",
            processors.display()
        ));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut command = if launcher == "slurm" {
        // Inside a real allocation of 4 tasks, as `salloc -n 4 offload run ...`.
        let mut c = Command::new("salloc");
        c.args(["-n", "4", "--quiet"]).arg(bin("offload"));
        c
    } else {
        Command::new(bin("offload"))
    };
    command
        .args(args)
        .env("OFFLOAD_PROCESSOR_PATH", &processors)
        .env_remove("SLURM_JOB_ID");
    command
}

fn write_inputs(dir: &Path, inputs: &[Value]) -> PathBuf {
    let path = dir.join("inputs.jsonl");
    let text: String = inputs.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&path, text).expect("write inputs");
    path
}

fn run(launcher: &str, tag: &str, inputs: &[Value], extra: &[&str]) -> (Output, Vec<Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_inputs(dir.path(), inputs);
    let mut args = vec!["--inputs", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let out = run_command(launcher, tag, &args)
        .output()
        .expect("run offload");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (out, lines)
}

/// Processes (not zombies) whose environment holds `OFFLOAD_TEST_TAG=tag`.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("OFFLOAD_TEST_TAG={tag}");
    common::processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .map(|p| p.pid)
        .collect()
}

/// Waits until no tagged process is left, up to `timeout`; returns what is left.
fn wait_untagged(tag: &str, timeout: Duration) -> Vec<u32> {
    let until = Instant::now() + timeout;
    loop {
        let left = tagged(tag);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kind(line: &Value) -> &str {
    line["error"]["kind"].as_str().unwrap_or("")
}

const LAUNCHERS: [&str; 2] = ["slurm", "ssh:2/offload-a,2/offload-b"];
const MODES: [&str; 2] = ["--persistent", "--no-persistent"];

#[test]
fn results_and_their_order_are_the_same_as_locally() {
    let inputs: Vec<Value> = (0..16)
        .map(|i| json!({"echo": i, "sleep_ms": (16 - i) * 5}))
        .collect();
    let echoes = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .map(|l| json!([l["job"], l["status"], l["result"]["echo"]]))
            .collect()
    };
    let local_tag = tag("local");
    let (out, local) = run("local", &local_tag, &inputs, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for launcher in LAUNCHERS {
        for mode in MODES {
            let tag = tag("same");
            let (out, lines) = run(launcher, &tag, &inputs, &[mode]);
            assert!(
                out.status.success(),
                "{launcher} {mode}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(echoes(&lines), echoes(&local), "{launcher} {mode}");
            let hosts: std::collections::BTreeSet<&str> = lines
                .iter()
                .filter_map(|l| l["stats"]["host"].as_str())
                .collect();
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l["stats"]["host"].is_string())
                    .count(),
                16,
                "{launcher} {mode}: every line says where it ran"
            );
            if launcher.starts_with("ssh:") {
                assert_eq!(
                    hosts.into_iter().collect::<Vec<_>>(),
                    ["offload-a", "offload-b"],
                    "{mode}: both hosts took jobs"
                );
            }
            let persistent = lines.iter().filter(|l| l["stats"]["worker"].is_object());
            if mode == "--persistent" {
                assert_eq!(persistent.count(), 16, "{launcher}: all on workers");
            } else {
                assert_eq!(persistent.count(), 0, "{launcher}: a process per job");
            }
            assert!(
                wait_untagged(&tag, SETTLE * 3).is_empty(),
                "{launcher} {mode}: processes left behind"
            );
        }
    }
}

#[test]
fn every_outcome_kind_and_a_graceful_stop_through_each_launcher() {
    let inputs = vec![
        json!({"echo": "first"}),
        json!({"fail": "exit:3"}),
        json!({"fail": "segv"}),
        json!({"fail": "not_cbor"}),
        // Stopped at its timeout: SIGTERM reaches it through scancel or ssh, and it obeys.
        json!({"sleep_ms": 60000, "progress_steps": 6000}),
        // Ignores SIGTERM: killed after the grace period.
        json!({"fail": "ignore_term"}),
        json!({"echo": "last"}),
    ];
    for launcher in LAUNCHERS {
        for mode in MODES {
            let tag = tag("kinds");
            let (_, lines) = run(
                launcher,
                &tag,
                &inputs,
                // The timeout holds for every job: time enough to start one through srun or
                // ssh on a loaded machine (a stop before the wrapper says where the processor
                // runs would stop srun or ssh instead), and a grace period for the processor
                // that obeys to end in.
                &[mode, "--timeout", "5", "--grace", "3"],
            );
            let context = format!("{launcher} {mode}: {lines:#?}");
            assert_eq!(lines.len(), 7, "{context}");
            assert_eq!(lines[0]["result"]["echo"], "first", "{context}");
            assert_eq!(kind(&lines[1]), "failed", "{context}");
            assert_eq!(lines[1]["error"]["exit_code"], 3, "{context}");
            assert!(
                lines[1]["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("offload-diag: exiting with code 3")),
                "the processor's own words, srun's and the wrapper's taken out: {context}"
            );
            assert_eq!(kind(&lines[2]), "killed", "{context}");
            assert_eq!(lines[2]["error"]["signal"], 11, "{context}");
            assert_eq!(kind(&lines[3]), "bad_output", "{context}");
            assert_eq!(kind(&lines[4]), "timed_out", "{context}");
            let graceful = lines[4]["error"]["message"].as_str().unwrap_or("");
            assert!(
                !graceful.contains("ignored SIGTERM"),
                "the remote processor got SIGTERM and stopped within the grace period: {context}"
            );
            assert_eq!(kind(&lines[5]), "timed_out", "{context}");
            assert!(
                lines[5]["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("ignored SIGTERM")),
                "{context}"
            );
            assert_eq!(lines[6]["result"]["echo"], "last", "{context}");
            let left = wait_untagged(&tag, SETTLE * 3);
            assert!(left.is_empty(), "{launcher} {mode}: left behind: {left:?}");
        }
    }
}

/// Interrupting `offload run` (Ctrl-C), or killing it outright, leaves nothing running on the
/// remote side.
#[test]
fn interrupting_or_killing_offload_leaves_no_remote_process() {
    let inputs: Vec<Value> = (0..4).map(|_| json!({"sleep_ms": 60000})).collect();
    for launcher in LAUNCHERS {
        for signal in [libc::SIGINT, libc::SIGKILL] {
            let tag = tag("stop");
            let dir = tempfile::tempdir().expect("tempdir");
            let file = write_inputs(dir.path(), &inputs);
            let mut command = run_command(
                launcher,
                &tag,
                &["--no-persistent", "--inputs", file.to_str().expect("utf-8")],
            );
            let mut child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            // Wait until the processors run remotely.
            let until = Instant::now() + Duration::from_secs(60);
            let processors = || {
                tagged(&tag)
                    .into_iter()
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|c| c.starts_with("offload-diag"))
                    })
                    .count()
            };
            while processors() < 4 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(processors(), 4, "{launcher}: four processors running");
            // The offload process itself (under salloc for slurm).
            let offload = common::processes()
                .into_iter()
                .find(|p| {
                    std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                        .is_ok_and(|c| c.trim() == "offload")
                        && (p.parent == child.id() || p.pid == child.id())
                })
                .map(|p| p.pid)
                .expect("the offload process");
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(offload as libc::pid_t, signal) };
            let _ = child.wait();
            let left = wait_untagged(&tag, SETTLE * 3);
            assert!(
                left.is_empty(),
                "{launcher}, offload got signal {signal}: left behind: {left:?}"
            );
        }
    }
}

#[test]
fn an_unreachable_host_is_a_launch_failure_and_its_jobs_go_to_the_others() {
    let inputs: Vec<Value> = (0..8).map(|i| json!({"echo": i})).collect();
    for mode in MODES {
        let tag = tag("down");
        // Slots given, so that the dead host is not found out before the jobs start.
        let (out, lines) = run("ssh:2/offload-down,1/offload-a", &tag, &inputs, &[mode]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines.len(), 8);
        assert!(
            lines
                .iter()
                .all(|l| l["status"] == "ok" && l["stats"]["host"] == "offload-a"),
            "{mode}: {lines:#?}"
        );
    }
    // With no host left, each job fails as a launch failure with ssh's words.
    let tag = tag("alldown");
    let (out, lines) = run(
        "ssh:1/offload-down",
        &tag,
        &inputs[..2],
        &["--no-persistent"],
    );
    assert_eq!(out.status.code(), Some(1));
    for line in &lines {
        assert_eq!(kind(line), "launch_failed", "{line:#}");
        assert!(
            line["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("offload-down") && m.contains("refused")),
            "{line:#}"
        );
    }
}

#[test]
fn a_step_that_cannot_start_and_a_missing_processor_are_launch_failures() {
    let inputs = vec![json!({"echo": 1})];
    for mode in MODES {
        let tag = tag("nostep");
        let (_, lines) = run(
            "slurm",
            &tag,
            &inputs,
            &[mode, "--launcher-arg=--nodelist=nosuchnode"],
        );
        assert_eq!(kind(&lines[0]), "launch_failed", "{mode}: {lines:#?}");
        assert!(
            lines[0]["error"]["message"].as_str().is_some_and(|m| m
                .contains("srun could not start a job step")
                && m.contains("srun: error")),
            "{mode}: srun's words: {lines:#?}"
        );
    }
    // A processor that the remote side does not have (nor this machine: it is sent by name).
    for launcher in LAUNCHERS {
        for mode in MODES {
            let tag = tag("noproc");
            let dir = tempfile::tempdir().expect("tempdir");
            let file = write_inputs(dir.path(), &inputs);
            let out = run_processor(launcher, &tag, "surely-not-installed", &[mode])
                .args(["--inputs", file.to_str().expect("utf-8")])
                .output()
                .expect("run");
            let text = String::from_utf8_lossy(&out.stdout);
            let line: Value =
                serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
            assert_eq!(kind(&line), "launch_failed", "{launcher} {mode}: {line:#}");
            assert!(
                line["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no executable processor surely-not-installed")),
                "{launcher} {mode}: {line:#}"
            );
        }
    }
}

#[test]
fn the_slurm_launcher_outside_an_allocation_says_what_to_do() {
    let out = Command::new(bin("offload"))
        .args(["run", "diag", "--launcher", "slurm", "--inputs", "-"])
        .env_remove("SLURM_JOB_ID")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLURM_JOB_ID is not set") && err.contains("salloc"),
        "{err}"
    );
}

/// A remote worker gets its next job's request while it runs one (pipelining): when the
/// running job crashes the worker or is stopped, the job sent ahead still runs, once, on a
/// fresh worker.
#[test]
fn a_job_sent_ahead_survives_the_end_of_the_worker_before_it() {
    let inputs = vec![
        json!({"echo": 0, "sleep_ms": 300}),
        json!({"fail": "segv", "sleep_ms": 300}),
        json!({"echo": 2, "sleep_ms": 300}),
        json!({"fail": "exit:3", "sleep_ms": 300}),
        json!({"sleep_ms": 20000, "progress_steps": 200}),
        json!({"echo": 5}),
        json!({"echo": 6}),
    ];
    for launcher in ["slurm", "ssh:1/offload-a"] {
        let tag = tag("ahead");
        let (_, lines) = run(
            launcher,
            &tag,
            &inputs,
            &["--persistent", "-j", "1", "--timeout", "3", "--grace", "1"],
        );
        let context = format!("{launcher}: {lines:#?}");
        let kinds: Vec<&str> = lines.iter().map(kind).collect();
        assert_eq!(
            kinds,
            ["", "killed", "", "failed", "timed_out", "", ""],
            "{context}"
        );
        for (i, line) in lines.iter().enumerate() {
            if kinds[i].is_empty() {
                assert_eq!(line["result"]["echo"], i, "{context}");
            }
        }
        // The job after the crash ran on a new worker, as its first job.
        assert_eq!(lines[2]["stats"]["worker"]["job"], 1, "{context}");
        assert!(wait_untagged(&tag, SETTLE * 3).is_empty(), "{launcher}");
    }
}

/// A graceful stop over ssh travels over the job's own connection: stopping a job costs no
/// second connection (no TCP, key exchange or authentication) to its host. Each connection
/// runs the test's `LocalCommand`, which counts it (a channel over an existing connection
/// does not).
#[test]
fn a_graceful_stop_over_ssh_opens_no_new_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("connections");
    let config = dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host offload-a\n    PermitLocalCommand yes\n    LocalCommand echo connected >> {}\n\
             Include {}\n",
            log.display(),
            cluster().join("ssh_config").display()
        ),
    )
    .expect("write the ssh config");
    let inputs = write_inputs(
        dir.path(),
        &[json!({"sleep_ms": 60000, "progress_steps": 6000})],
    );
    // Where offload keeps the connection's control socket, for the duration of the job.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    for mode in MODES {
        let _ = std::fs::remove_file(&log);
        let tag = tag("oneconn");
        let out = run_with_ssh_config(
            &config,
            "ssh:1/offload-a",
            &tag,
            "diag",
            &[
                mode,
                // Past the start, on a loaded machine too: the stop goes to the remote side.
                "--timeout",
                "4",
                "--grace",
                "30",
                "--inputs",
                inputs.to_str().expect("utf-8"),
            ],
        )
        .env("TMPDIR", &tmp)
        .output()
        .expect("run offload");
        let text = String::from_utf8_lossy(&out.stdout);
        let line: Value =
            serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(kind(&line), "timed_out", "{mode}: {line:#}");
        assert!(
            !line["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("ignored SIGTERM"),
            "{mode}: the stop reached it: {line:#}"
        );
        let connections = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            connections.lines().count(),
            1,
            "{mode}: one connection, the job's own, carried the job and its stop"
        );
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .expect("read the temporary directory")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{mode}: the control socket is removed: {left:?}"
        );
        assert!(wait_untagged(&tag, SETTLE * 3).is_empty(), "{mode}");
    }
}

/// However long a graceful stop takes to reach the remote side (a slow network, a loaded
/// host), the processor gets the whole grace period after it arrives: here `ssh` and
/// `scancel` are wrapped so that a stop arrives 3 s after it was sent, with a grace period of
/// 1.5 s, and a processor that obeys SIGTERM still ends as stopped, not as killed.
#[test]
fn a_slow_stop_gets_the_whole_grace_period_after_it_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shims = dir.path().join("bin");
    std::fs::create_dir(&shims).expect("mkdir");
    let real = |name: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The stop is the only call with `kill -TERM PID` (ssh) or `--signal=TERM` (scancel).
    for (name, stop) in [("ssh", "*kill\\ -TERM\\ *"), ("scancel", "--signal=TERM")] {
        let path = shims.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nfor a; do case $a in {stop}) sleep 3 ;; esac; done\nexec {} \"$@\"\n",
                real(name)
            ),
        )
        .expect("write a shim");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let inputs = write_inputs(
        dir.path(),
        &[json!({"sleep_ms": 60000, "progress_steps": 6000})],
    );
    for launcher in LAUNCHERS {
        for mode in MODES {
            let tag = tag("slowstop");
            let out = run_command(
                launcher,
                &tag,
                &[
                    mode,
                    // Past the start, on a loaded machine too: the stop goes to the
                    // remote side.
                    "--timeout",
                    "4",
                    "--grace",
                    "1.5",
                    "--inputs",
                    inputs.to_str().expect("utf-8"),
                ],
            )
            .env("PATH", &path)
            .output()
            .expect("run offload");
            let text = String::from_utf8_lossy(&out.stdout);
            let line: Value =
                serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
            assert_eq!(kind(&line), "timed_out", "{launcher} {mode}: {line:#}");
            assert!(
                !line["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("ignored SIGTERM"),
                "{launcher} {mode}: killed before its grace period after the stop: {line:#}"
            );
            assert!(
                wait_untagged(&tag, SETTLE * 3).is_empty(),
                "{launcher} {mode}"
            );
        }
    }
}

/// Reports how long a graceful stop takes through each launcher: the time from a job's
/// timeout to its end (the stop reaching the processor, which obeys at once, and everything
/// ending), as `wall_ms` minus the timeout, with a process per job and on a warm worker.
/// Run it with `cargo test --test launchers -- --ignored --nocapture stop_latency`.
#[test]
#[ignore = "a measurement: it reports, asserts nothing about time"]
fn stop_latency_through_each_launcher() {
    const JOBS: usize = 5;
    // Past the start, on a loaded machine too: the stop goes to the remote side.
    const TIMEOUT_MS: f64 = 3000.0;
    let sleeper = json!({"sleep_ms": 60000, "progress_steps": 60000});
    for launcher in ["slurm", "ssh:1/offload-a"] {
        for mode in MODES {
            // On workers, each stop ends its worker: an echo first starts the next one, so
            // that the stopped job's wall time is its own.
            let inputs: Vec<Value> = (0..JOBS)
                .flat_map(|_| match mode {
                    "--persistent" => vec![json!({"echo": 0}), sleeper.clone()],
                    _ => vec![sleeper.clone()],
                })
                .collect();
            let tag = tag("latency");
            let (_, lines) = run(
                launcher,
                &tag,
                &inputs,
                &[mode, "-j", "1", "--timeout", "3", "--grace", "30"],
            );
            let mut stops: Vec<f64> = lines
                .iter()
                .filter(|l| kind(l) == "timed_out")
                .filter_map(|l| l["stats"]["wall_ms"].as_f64())
                .map(|wall| wall - TIMEOUT_MS)
                .collect();
            assert_eq!(stops.len(), JOBS, "{launcher} {mode}: {lines:#?}");
            stops.sort_by(f64::total_cmp);
            eprintln!(
                "stop latency, {launcher} {mode}: median {:.0} ms (min {:.0}, max {:.0}) over \
                 {JOBS} jobs",
                stops[JOBS / 2],
                stops[0],
                stops[JOBS - 1]
            );
            assert!(wait_untagged(&tag, SETTLE * 3).is_empty());
        }
    }
}

/// The control sockets of ssh jobs live in a directory of offload's own under `$TMPDIR`, which
/// does not outlive it: gone after a run that ends, or that Ctrl-C ends; after `kill -9`, the
/// next offload that uses ssh removes it.
#[test]
fn control_socket_directories_do_not_outlive_offload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let left = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&tmp)
            .expect("read the temporary directory")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    };
    let quick = write_inputs(dir.path(), &[json!({"echo": 1}), json!({"echo": 2})]);
    let run_quick = || {
        let tag = tag("sockets");
        let out = run_command(
            "ssh:2/offload-a",
            &tag,
            &[
                "--no-persistent",
                "--inputs",
                quick.to_str().expect("utf-8"),
            ],
        )
        .env("TMPDIR", &tmp)
        .output()
        .expect("run offload");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_quick();
    assert_eq!(left(), Vec::<std::ffi::OsString>::new(), "after a run");
    let sleepers = dir.path().join("sleepers.jsonl");
    std::fs::write(&sleepers, "{\"sleep_ms\": 60000}\n{\"sleep_ms\": 60000}\n").expect("write");
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let tag = tag("sockets");
        let mut child = run_command(
            "ssh:2/offload-a",
            &tag,
            &["--inputs", sleepers.to_str().expect("utf-8")],
        )
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
        let until = Instant::now() + Duration::from_secs(60);
        while tagged(&tag).len() < 2 {
            assert!(Instant::now() < until, "the jobs never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let _ = child.wait();
        assert!(wait_untagged(&tag, SETTLE * 3).is_empty(), "{signal}");
        if signal == libc::SIGINT {
            assert_eq!(left(), Vec::<std::ffi::OsString>::new(), "after Ctrl-C");
        }
    }
    run_quick();
    assert_eq!(
        left(),
        Vec::<std::ffi::OsString>::new(),
        "after kill -9 and another run"
    );
}

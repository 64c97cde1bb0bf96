//! Persistent workers (PROTOCOL.md, section 18), with real processes: every fault of a worker
//! fails only the job it was running, with the same kinds as a one-shot run, and the engine
//! keeps, recycles, replaces and ends its workers as documented.
//!
//! Two workers are used: `offload-diag` (the Rust SDK) and `tests/workers/offload-rawworker`,
//! written in Python from PROTOCOL.md alone, which misbehaves in ways the SDK never would.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::{diag_job, field, on_main_context, wait_group_gone, SETTLE};
use offload::{
    FailureKind, Finished, Job, Persistence, Processor, Queue, RunLimits, WorkerSettings,
};
use serde_json::json;

fn rawworker_path() -> PathBuf {
    common::root().join("tests/workers/offload-rawworker")
}

fn rawworker() -> Job {
    Job::new(Processor::at(rawworker_path())).persistence(Persistence::Always)
}

fn raw(what: &str, value: i64) -> serde_json::Value {
    json!({"do": what, "value": value})
}

/// One slot: the jobs run one after another, on one worker unless it is replaced.
fn run_all(job: &Job, inputs: &[serde_json::Value]) -> Vec<Finished<Value>> {
    common::run_jobs(job, inputs, 1, None)
}

fn pid_of(finished: &Finished<Value>) -> u32 {
    finished.stats.pid.expect("a pid")
}

fn value_of(finished: &Finished<Value>) -> Option<i128> {
    let result = finished.result.as_ref().ok()?;
    field(result, "value")
        .and_then(Value::as_integer)
        .map(i128::from)
}

fn echo_of(finished: &Finished<Value>) -> Option<i128> {
    let result = finished.result.as_ref().ok()?;
    field(result, "echo")
        .and_then(Value::as_integer)
        .map(i128::from)
}

fn error_of(finished: &Finished<Value>) -> &offload::JobError {
    finished.result.as_ref().expect_err("the job fails")
}

/// Whether process `pid` is alive (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    common::processes()
        .iter()
        .any(|p| p.pid == pid && p.state != 'Z')
}

fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn a_worker_serves_many_jobs_in_one_process() {
    let inputs: Vec<_> = (0..60).map(|i| json!({"echo": i})).collect();
    let results = common::run_jobs(&diag_job(), &inputs, 2, None);
    for (i, finished) in results.iter().enumerate() {
        assert_eq!(echo_of(finished), Some(i as i128), "{:?}", finished.result);
        assert!(finished.stats.worker.is_some(), "job {i} ran on a worker");
    }
    let pids: BTreeSet<u32> = results.iter().map(pid_of).collect();
    assert!(
        (1..=2).contains(&pids.len()),
        "{} processes for 60 jobs at -j 2",
        pids.len()
    );
    let cold = results
        .iter()
        .filter(|f| f.stats.worker.is_some_and(|w| w.is_cold()))
        .count();
    assert_eq!(cold, pids.len(), "one cold start per worker");
    // The result says which process ran it: the worker's.
    let reported = results[10]
        .result
        .as_ref()
        .ok()
        .and_then(|r| field(r, "pid"))
        .and_then(Value::as_integer)
        .map(i128::from);
    assert_eq!(reported, Some(i128::from(pid_of(&results[10]))));
}

#[test]
fn every_example_processor_gives_the_same_results_in_both_modes() {
    for name in [
        "offload-mandelbrot",
        "offload-blur",
        "offload-jitter",
        "offload-diag",
    ] {
        let processor = Processor::at(common::bin(name));
        let description = processor
            .describe(Duration::from_secs(5))
            .expect("describes itself");
        assert!(description.supports_persistent(), "{name}");
        let input = offload::inputs::encode_json(description.example_input.clone())
            .expect("the example input encodes");
        let outcome = |persistence| {
            on_main_context(|| async {
                let queue = Queue::new();
                let job = Job::new(processor.clone()).persistence(persistence);
                let first = queue
                    .submit_cbor::<Value>(&job, input.clone())
                    .expect("submit");
                let again = queue
                    .submit_cbor::<Value>(&job, input.clone())
                    .expect("submit");
                let first = first.finished().await;
                let again = again.finished().await;
                (first.result, again.result, first.stats.worker)
            })
        };
        let (one_shot, _, worker) = outcome(Persistence::Never);
        assert!(worker.is_none());
        let (persistent, second, worker) = outcome(Persistence::Always);
        assert!(worker.is_some(), "{name} ran on a worker");
        let strip = |result: Result<Value, offload::JobError>| -> Value {
            // diag reports its pid and clock: those differ by nature.
            let value = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            match value {
                Value::Map(entries) => Value::Map(
                    entries
                        .into_iter()
                        .filter(|(k, _)| {
                            !matches!(k.as_text(), Some("pid" | "started_ns" | "finished_ns"))
                        })
                        .collect(),
                ),
                other => other,
            }
        };
        let persistent = strip(persistent);
        assert_eq!(strip(one_shot), persistent, "{name}");
        assert_eq!(
            strip(second),
            persistent,
            "{name}, a second job on the same worker"
        );
    }
}

#[test]
fn an_error_response_fails_its_job_and_keeps_the_worker() {
    let results = run_all(
        &rawworker(),
        &[raw("echo", 1), raw("error", 2), raw("echo", 3)],
    );
    let err = error_of(&results[1]);
    assert_eq!(err.kind, FailureKind::Failed, "{err:?}");
    assert_eq!(err.message, "asked to fail");
    assert_eq!(value_of(&results[2]), Some(3));
    assert_eq!(pid_of(&results[0]), pid_of(&results[2]), "the same worker");
}

#[test]
fn a_crash_mid_job_fails_only_that_job_and_a_fresh_worker_takes_the_next() {
    let results = run_all(
        &rawworker(),
        &[raw("echo", 1), raw("crash", 2), raw("echo", 3)],
    );
    let err = error_of(&results[1]);
    assert_eq!(
        (err.kind, err.signal),
        (FailureKind::Killed, Some(libc::SIGSEGV)),
        "{err:?}"
    );
    assert_eq!(value_of(&results[0]), Some(1));
    assert_eq!(value_of(&results[2]), Some(3));
    assert_ne!(pid_of(&results[0]), pid_of(&results[2]));
    assert!(!alive(pid_of(&results[1])), "the crashed worker is reaped");
}

#[test]
fn an_exit_mid_job_is_failed_with_its_code_and_stderr() {
    let results = run_all(&rawworker(), &[raw("exit", 1), raw("echo", 2)]);
    let err = error_of(&results[0]);
    assert_eq!((err.kind, err.exit_code), (FailureKind::Failed, Some(3)));
    assert!(err.stderr_tail.contains("exiting with code 3"), "{err:?}");
    assert!(err.message.contains("exiting with code 3"), "{err:?}");
    assert_eq!(value_of(&results[1]), Some(2));
}

#[test]
fn a_worker_that_exits_between_jobs_loses_no_job() {
    // Each worker answers, then exits at once: the next job finds it gone (while idle, or
    // before it read a byte of the request) and goes to a fresh worker.
    let inputs: Vec<_> = (0..40).map(|i| raw("answer_then_exit", i)).collect();
    let results = common::run_jobs(&rawworker(), &inputs, 2, None);
    for (i, finished) in results.iter().enumerate() {
        assert_eq!(value_of(finished), Some(i as i128), "{:?}", finished.result);
    }
}

#[test]
fn a_hung_worker_times_out_and_leaves_no_process() {
    // The timeout holds for the echo after it too: ample for it on a loaded machine.
    let job = rawworker().limits(RunLimits {
        timeout: Some(Duration::from_secs(2)),
        grace: Duration::from_millis(200),
        ..RunLimits::default()
    });
    let results = run_all(&job, &[raw("hang", 1), raw("echo", 2)]);
    assert_eq!(error_of(&results[0]).kind, FailureKind::TimedOut);
    let pid = pid_of(&results[0]);
    assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
    assert_eq!(value_of(&results[1]), Some(2));
}

#[test]
fn garbage_wrong_ids_and_stray_prints_are_bad_output_and_replace_the_worker() {
    for what in ["garbage", "wrong_id", "stray"] {
        let results = run_all(
            &rawworker(),
            &[raw("echo", 1), raw(what, 2), raw("echo", 3)],
        );
        let err = error_of(&results[1]);
        assert_eq!(err.kind, FailureKind::BadOutput, "{what}: {err:?}");
        assert!(
            err.message.contains("broke the frame protocol"),
            "{what}: {}",
            err.message
        );
        assert_eq!(value_of(&results[2]), Some(3), "{what}");
        assert_ne!(pid_of(&results[0]), pid_of(&results[2]), "{what}");
        assert!(wait_dead(pid_of(&results[1]), SETTLE), "{what}");
    }
}

#[test]
fn an_sdk_processors_stray_prints_go_to_stderr_not_into_the_frames() {
    let results = run_all(
        &diag_job().persistence(Persistence::Always),
        &[
            json!({"echo": 1, "print": "a line on stdout"}),
            json!({"echo": 2}),
        ],
    );
    assert_eq!(echo_of(&results[0]), Some(1), "{:?}", results[0].result);
    assert_eq!(echo_of(&results[1]), Some(2));
    assert_eq!(
        pid_of(&results[0]),
        pid_of(&results[1]),
        "the worker carried on"
    );
}

#[test]
fn one_crash_among_a_thousand_jobs_fails_only_itself() {
    let inputs: Vec<_> = (0..1000)
        .map(|i| {
            if i == 500 {
                json!({"fail": "segv"})
            } else {
                json!({"echo": i})
            }
        })
        .collect();
    let results = common::run_jobs(&diag_job(), &inputs, 2, None);
    for (i, finished) in results.iter().enumerate() {
        if i == 500 {
            assert_eq!(error_of(finished).kind, FailureKind::Killed);
        } else {
            assert_eq!(
                echo_of(finished),
                Some(i as i128),
                "job {i}: {:?}",
                finished.result
            );
        }
    }
    let pids: BTreeSet<u32> = results.iter().map(pid_of).collect();
    assert!(
        pids.len() <= 3,
        "{} workers for 1,000 jobs and one crash",
        pids.len()
    );
}

#[test]
fn cancelling_a_running_job_stops_its_worker_and_leaves_no_process() {
    let (cancelled, next) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job().limits(RunLimits {
            grace: Duration::from_millis(300),
            ..RunLimits::default()
        });
        let slow = queue
            .submit::<_, Value>(&job, &json!({"sleep_ms": 20_000}))
            .expect("submit");
        let next = queue
            .submit::<_, Value>(&job, &json!({"echo": 5}))
            .expect("submit");
        let id = slow.id();
        // Cancelled once it runs on its worker, however long the worker takes to start.
        started(&queue, id).await;
        assert!(queue.cancel(id));
        (slow.finished().await, next.finished().await)
    });
    assert_eq!(error_of(&cancelled).kind, FailureKind::Cancelled);
    let pid = pid_of(&cancelled);
    assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
    assert_eq!(echo_of(&next), Some(5));
    assert_ne!(pid_of(&next), pid);
}

#[test]
fn workers_are_replaced_after_their_job_limit() {
    let settings = WorkerSettings {
        max_jobs: 5,
        ..WorkerSettings::default()
    };
    let inputs: Vec<_> = (0..20).map(|i| json!({"echo": i})).collect();
    let results = common::run_jobs(&diag_job(), &inputs, 1, Some(settings));
    let pids: Vec<u32> = results.iter().map(pid_of).collect();
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{pids:?}");
    for finished in &results {
        let run = finished.stats.worker.expect("on a worker");
        assert!((1..=5).contains(&run.job), "{run:?}");
    }
    for pid in distinct {
        assert!(wait_dead(pid, SETTLE), "worker {pid} ended");
    }
}

#[test]
fn workers_are_replaced_after_a_job_that_grew_them_too_large() {
    let settings = WorkerSettings {
        max_memory_bytes: Some(64 << 20),
        ..WorkerSettings::default()
    };
    // 128 MiB of result makes the worker's peak go past 64 MiB.
    let inputs = [
        json!({"echo": 1}),
        json!({"echo": 2, "output_bytes": 128 << 20}),
        json!({"echo": 3}),
    ];
    let results = common::run_jobs(&diag_job(), &inputs, 1, Some(settings));
    assert_eq!(echo_of(&results[1]), Some(2));
    assert!(
        results[1].stats.peak_rss_bytes > 64 << 20,
        "{:?}",
        results[1].stats
    );
    assert_eq!(pid_of(&results[0]), pid_of(&results[1]));
    assert_ne!(
        pid_of(&results[1]),
        pid_of(&results[2]),
        "replaced after the big job"
    );
}

#[test]
fn idle_workers_end_after_the_idle_timeout() {
    let pid = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        // Long enough that the worker is still there when this thread looks, even on a
        // loaded machine.
        queue.set_worker_settings(WorkerSettings {
            idle_timeout: Duration::from_secs(2),
            ..WorkerSettings::default()
        });
        let finished = queue
            .submit::<_, Value>(&diag_job(), &json!({"echo": 1}))
            .expect("submit")
            .finished()
            .await;
        let pid = pid_of(&finished);
        assert!(alive(pid), "the worker waits for more");
        assert_eq!(queue.live_workers(), 1);
        let until = Instant::now() + Duration::from_secs(2) + SETTLE;
        while queue.live_workers() > 0 && Instant::now() < until {
            common::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(queue.live_workers(), 0, "the idle worker ended");
        pid
    });
    assert!(wait_dead(pid, SETTLE));
}

#[test]
fn a_changed_executable_is_picked_up_by_the_next_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("offload-rawcopy");
    // The file is written by a child process: a file open for writing in this (threaded)
    // process could be inherited by another test's fork and make exec fail with ETXTBSY.
    let write = |extra: &str| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("cat \"$0\" > \"$1\" && printf '%s' \"$2\" >> \"$1\" && chmod +x \"$1\"")
            .arg(rawworker_path())
            .arg(&copy)
            .arg(extra)
            .status()
            .expect("sh");
        assert!(status.success());
    };
    write("");
    let job = Job::new(Processor::at(&copy));
    let (first, second) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let first = queue
            .submit::<_, Value>(&job, &raw("echo", 1))
            .expect("submit")
            .finished()
            .await;
        // A rebuild: new contents (and so size and time) at the same path.
        write("\n# rebuilt\n");
        let second = queue
            .submit::<_, Value>(&job, &raw("echo", 2))
            .expect("submit")
            .finished()
            .await;
        (first, second)
    });
    assert_eq!(value_of(&first), Some(1), "{:?}", first.result);
    assert_eq!(value_of(&second), Some(2), "{:?}", second.result);
    assert!(first.stats.worker.is_some() && second.stats.worker.is_some());
    assert_ne!(
        pid_of(&first),
        pid_of(&second),
        "a new worker for the new file"
    );
    assert!(wait_dead(pid_of(&first), SETTLE));
}

/// Writes an executable file through a child process: a file open for writing in this
/// (threaded) process could be inherited by another test's fork and make its exec fail with
/// ETXTBSY.
fn write_executable(path: &Path, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat > \"$0\" && chmod +x \"$0\"")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

/// A processor file in `dir` from a Python `body`, which declares persistent mode in its
/// description.
fn python_worker(dir: &Path, name: &str, body: &str) -> Job {
    let path = dir.join(name);
    let script = format!(
        "#!/usr/bin/env python3\nimport sys, os, time\n\
         if '--describe' in sys.argv:\n    \
         print('{{\"name\": \"x\", \"summary\": \"x\", \"protocol\": 2, \"persistent\": true, \"example_input\": null}}')\n    \
         sys.exit(0)\n{body}\n"
    );
    write_executable(&path, &script);
    Job::new(Processor::at(path))
}

#[test]
fn workers_that_fail_to_start_fail_the_job_with_the_kinds_of_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The workers that end or write garbage get all the time they need to do it (Python
    // starts slowly on a loaded machine); the silent one is stopped at a short timeout.
    let settings = WorkerSettings {
        start_timeout: Duration::from_secs(30),
        ..WorkerSettings::default()
    };
    let short = WorkerSettings {
        start_timeout: Duration::from_millis(500),
        ..WorkerSettings::default()
    };
    let exits = python_worker(
        dir.path(),
        "offload-exits",
        "sys.stderr.write('offload-exits: no model file\\n'); sys.exit(4)",
    );
    let err = common::run_jobs(&exits, &[json!(1)], 1, Some(settings)).remove(0);
    let err = error_of(&err);
    assert_eq!(
        (err.kind, err.exit_code),
        (FailureKind::Failed, Some(4)),
        "{err:?}"
    );
    assert!(err.message.contains("did not start") && err.message.contains("no model file"));

    let silent = python_worker(dir.path(), "offload-silent", "time.sleep(60)");
    let finished = common::run_jobs(&silent, &[json!(1)], 1, Some(short)).remove(0);
    let err = error_of(&finished);
    assert_eq!(err.kind, FailureKind::TimedOut, "{err:?}");
    assert!(err.message.contains("no hello"), "{err:?}");

    let garbage = python_worker(
        dir.path(),
        "offload-garbage",
        "os.write(1, b'\\xff\\xff nonsense'); time.sleep(60)",
    );
    let err = common::run_jobs(&garbage, &[json!(1)], 1, Some(settings)).remove(0);
    assert_eq!(
        error_of(&err).kind,
        FailureKind::BadOutput,
        "{:?}",
        err.result
    );
}

#[test]
fn a_processor_without_persistent_mode_is_never_started_persistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("offload-argv");
    // A version-1 processor: answers with its arguments (as a CBOR array of texts).
    write_executable(
        &path,
        "#!/usr/bin/env python3\nimport sys, cbor2\n\
         if '--describe' in sys.argv:\n    \
         print('{\"name\": \"argv\", \"summary\": \"x\", \"protocol\": 1, \"example_input\": null}')\n    \
         sys.exit(0)\n\
         sys.stdin.buffer.read()\nsys.stdout.buffer.write(cbor2.dumps(sys.argv[1:]))\n",
    );
    let job = Job::new(Processor::at(&path));
    let results = run_all(&job, &[json!(1), json!(2)]);
    for finished in &results {
        assert_eq!(
            finished.result,
            Ok(Value::Array(Vec::new())),
            "no --persistent"
        );
        assert!(finished.stats.worker.is_none());
    }
    assert_ne!(
        pid_of(&results[0]),
        pid_of(&results[1]),
        "a process per job"
    );

    let results = run_all(&job.persistence(Persistence::Always), &[json!(1)]);
    let err = error_of(&results[0]);
    assert_eq!(err.kind, FailureKind::CouldNotStart);
    assert!(
        err.message.contains("does not support persistent mode"),
        "{err:?}"
    );
}

#[test]
fn a_worker_gets_only_stdio_leads_its_group_and_has_no_progress_fd() {
    let results = run_all(&rawworker(), &[json!({"do": "inspect"})]);
    let value = results[0].result.as_ref().expect("inspect");
    let value = field(value, "value").expect("value");
    let fds: Vec<i128> = field(value, "fds")
        .and_then(Value::as_array)
        .expect("fds")
        .iter()
        .filter_map(|v| v.as_integer().map(i128::from))
        .collect();
    assert_eq!(fds, vec![0, 1, 2]);
    let env = field(value, "env").and_then(Value::as_map).expect("env");
    assert!(!env
        .iter()
        .any(|(k, _)| k.as_text() == Some("OFFLOAD_PROGRESS_FD")));
    let pgrp = field(value, "pgrp")
        .and_then(Value::as_integer)
        .map(i128::from);
    assert_eq!(
        pgrp,
        Some(i128::from(pid_of(&results[0]))),
        "it leads its own group"
    );
}

#[test]
fn progress_frames_arrive_as_events_for_their_job() {
    let events = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = seen.clone();
        queue.connect_events(move |event| {
            if let offload::QueueEvent::Progress { id, fraction, .. } = event {
                log.borrow_mut().push((*id, *fraction));
            }
        });
        let handle = queue
            .submit::<_, Value>(
                &diag_job(),
                &json!({"echo": 1, "sleep_ms": 400, "progress_steps": 4}),
            )
            .expect("submit");
        let id = handle.id();
        handle.result().await.expect("succeeds");
        let seen = seen.borrow().clone();
        (id, seen)
    });
    let (id, seen) = events;
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|(job, _)| *job == id));
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
}

#[test]
fn a_jobs_stats_are_its_own_not_its_workers() {
    let results = run_all(&diag_job(), &[json!({"burn_ms": 300}), json!({"echo": 2})]);
    assert_eq!(pid_of(&results[0]), pid_of(&results[1]));
    let (burn, echo) = (results[0].stats.clone(), results[1].stats.clone());
    assert!(burn.cpu >= Duration::from_millis(250), "{burn:?}");
    assert!(echo.cpu < Duration::from_millis(100), "{echo:?}");
    assert!(echo.wall < burn.wall, "{echo:?} {burn:?}");
    let second = echo.worker.expect("a worker");
    assert_eq!((second.job, second.startup), (2, None));
    assert!(burn.worker.expect("a worker").startup.is_some());
    assert!(
        echo.peak_rss_bytes > 0 && echo.peak_rss_bytes < 64 << 20,
        "{echo:?}"
    );
}

#[test]
fn workers_die_with_the_host() {
    let mut command = common::offload();
    command.args([
        "run",
        rawworker_path().to_str().expect("utf-8"),
        "--inputs",
        "-",
        "-j",
        "2",
    ]);
    let mut child = common::spawn_with_input(command, b"{\"do\": \"hang\"}\n{\"do\": \"hang\"}\n");
    let host = child.id();
    let until = Instant::now() + Duration::from_secs(60);
    let workers = loop {
        // The workers (Python, through env) run below guards, the host's children.
        let workers: Vec<u32> = common::processors_below(host, "python3")
            .into_iter()
            .map(|p| p.pid)
            .collect();
        if workers.len() == 2 || Instant::now() > until {
            break workers;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(workers.len(), 2, "two workers started");
    child.kill().expect("SIGKILL the host");
    child.wait().expect("reaped");
    for pid in workers {
        assert!(wait_dead(pid, SETTLE), "worker {pid} outlived its host");
    }
}

#[test]
fn a_result_over_the_output_limit_stops_the_worker_with_bounded_host_memory() {
    let mut command = common::offload();
    command.args([
        "run",
        "diag",
        "--persistent",
        "--max-output",
        "16M",
        "--input",
        "-",
    ]);
    let child = common::spawn_with_input(command, br#"{"output_bytes": 536870912}"#);
    let (out, peak) = common::wait_sampling_peak_rss(child);
    let text = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!(line["error"]["kind"], "bad_output", "{line}");
    assert!(line["error"]["message"]
        .as_str()
        .expect("text")
        .contains("over the limit of 16777216 bytes"));
    assert!(peak < 100 << 20, "host peak RSS {} MiB", peak >> 20);
}

/// Waits until the queue has told that job `id` started (on its worker, once the worker is up).
async fn started(queue: &Queue, id: offload::JobId) {
    let seen = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = seen.clone();
    queue.connect_events(move |event| {
        if matches!(event, offload::QueueEvent::Started { id: started, .. } if *started == id) {
            flag.set(true);
        }
    });
    while !seen.get() {
        common::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_job_on_deck_stays_queued_and_cancels_at_once() {
    on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job().persistence(Persistence::Always);
        let running = queue
            .submit::<_, Value>(&job, &json!({"sleep_ms": 3000, "echo": 1}))
            .expect("submit");
        started(&queue, running.id()).await;
        // The worker is busy: the next job goes on deck there, and still counts as queued.
        let decked = queue
            .submit::<_, Value>(&job, &json!({"echo": 2}))
            .expect("submit");
        let after = queue
            .submit::<_, Value>(&job, &json!({"echo": 3}))
            .expect("submit");
        let counts = queue.counts();
        assert_eq!((counts.running, counts.queued), (1, 2));
        assert_eq!(
            queue.job_state(decked.id()),
            Some(offload::JobState::Queued)
        );
        assert!(queue.cancel(decked.id()));
        let cancelled = decked.finished().await;
        assert_eq!(
            queue.job_state(running.id()),
            Some(offload::JobState::Running),
            "ends at once, not after the job running before it"
        );
        let err = error_of(&cancelled);
        assert_eq!(err.kind, FailureKind::Cancelled);
        assert!(err.message.contains("before it started"), "{err:?}");
        assert_eq!(echo_of(&running.finished().await), Some(1));
        let after = after.finished().await;
        assert_eq!(echo_of(&after), Some(3));
    });
}

#[test]
fn pausing_takes_jobs_back_from_deck() {
    on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job().persistence(Persistence::Always);
        let first = queue
            .submit::<_, Value>(&job, &json!({"sleep_ms": 1000, "echo": 1}))
            .expect("submit");
        // The worker runs it: the next job goes on deck there.
        started(&queue, first.id()).await;
        let second = queue
            .submit::<_, Value>(&job, &json!({"echo": 2}))
            .expect("submit");
        let id = second.id();
        queue.set_paused(true);
        assert_eq!(echo_of(&first.finished().await), Some(1));
        common::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            queue.job_state(id),
            Some(offload::JobState::Queued),
            "paused"
        );
        assert_eq!(queue.counts().running, 0);
        queue.set_paused(false);
        assert_eq!(echo_of(&second.finished().await), Some(2));
    });
}

#[test]
fn many_short_jobs_on_one_worker_start_in_order() {
    // Many short jobs at -j 1 on one worker, most of them taken from deck: all in order.
    let inputs: Vec<_> = (0..300).map(|i| json!({"echo": i})).collect();
    let results = common::run_jobs(&diag_job(), &inputs, 1, None);
    let mut last_start = 0u64;
    for (i, finished) in results.iter().enumerate() {
        assert_eq!(echo_of(finished), Some(i as i128));
        let started = finished
            .result
            .as_ref()
            .ok()
            .and_then(|r| field(r, "started_ns"))
            .and_then(Value::as_integer)
            .and_then(|n| u64::try_from(n).ok())
            .expect("started_ns");
        assert!(started > last_start, "job {i} started in order");
        last_start = started;
    }
}

#[test]
fn a_job_that_does_not_watch_for_cancel_dies_at_sigterm_even_after_one_that_did() {
    // The first job watches for cancellation (it sleeps in steps); the second never asks, so
    // SIGTERM must kill it at once, not after the 60 s grace period.
    let job = diag_job()
        .persistence(Persistence::Always)
        .limits(RunLimits {
            timeout: Some(Duration::from_secs(2)),
            grace: Duration::from_secs(60),
            ..RunLimits::default()
        });
    let started = Instant::now();
    let results = run_all(
        &job,
        &[
            json!({"sleep_ms": 40, "progress_steps": 2, "echo": 1}),
            json!({"fail": "hang"}),
        ],
    );
    assert_eq!(echo_of(&results[0]), Some(1));
    assert_eq!(pid_of(&results[0]), pid_of(&results[1]), "the same worker");
    let err = error_of(&results[1]);
    assert_eq!(err.kind, FailureKind::TimedOut);
    assert!(!err.message.contains("ignored SIGTERM"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no grace period waited"
    );
}

/// Generous: these runs take well under a second; a hang is what they would show.
const HANG: Duration = Duration::from_secs(120);

#[test]
fn a_worker_that_answers_a_job_twice_fails_no_job_and_is_replaced() {
    let inputs: Vec<_> = (0..40)
        .map(|i| raw(if i % 5 == 2 { "answer_twice" } else { "echo" }, i))
        .collect();
    let results = common::run_jobs_within(HANG, &rawworker(), &inputs, 1).expect("no hang");
    for (i, finished) in results.iter().enumerate() {
        assert_eq!(
            value_of(finished),
            Some(i as i128),
            "job {i}: {:?}",
            finished.result
        );
    }
    for i in (2..39).step_by(5) {
        assert_ne!(
            pid_of(&results[i]),
            pid_of(&results[i + 1]),
            "the worker that answered job {i} twice was replaced"
        );
    }
}

#[test]
fn a_worker_that_closes_its_stdin_and_lives_on_loses_no_job_and_hangs_none() {
    let inputs = [
        raw("echo", 0),
        raw("close_stdin", 1),
        raw("echo", 2),
        raw("echo", 3),
    ];
    let results = common::run_jobs_within(HANG, &rawworker(), &inputs, 1)
        .expect("the jobs after a worker closed its stdin do not hang");
    for (i, finished) in results.iter().enumerate() {
        assert_eq!(
            value_of(finished),
            Some(i as i128),
            "job {i}: {:?}",
            finished.result
        );
    }
    assert_ne!(pid_of(&results[1]), pid_of(&results[2]));
}

#[test]
fn a_worker_that_closes_its_stdout_fails_its_job_at_once_and_is_replaced() {
    let inputs = [raw("echo", 0), raw("close_stdout", 1), raw("echo", 2)];
    let results = common::run_jobs_within(HANG, &rawworker(), &inputs, 1)
        .expect("a worker that closed its stdout does not hang its job (no timeout set)");
    assert_eq!(value_of(&results[0]), Some(0));
    let err = error_of(&results[1]);
    assert_eq!(err.kind, FailureKind::BadOutput, "{err:?}");
    assert!(err.message.contains("closed its stdout"), "{}", err.message);
    assert_eq!(value_of(&results[2]), Some(2));
    assert_ne!(pid_of(&results[0]), pid_of(&results[2]));
}

#[test]
fn late_progress_and_progress_for_another_job_are_ignored() {
    // One job at a time, so that the late frames reach the worker while it is idle (and,
    // the second time, while the next job runs).
    let job = rawworker();
    let pids: Vec<u32> = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let mut pids = Vec::new();
        for (i, what) in ["late_progress", "late_progress", "echo"]
            .iter()
            .enumerate()
        {
            let finished = queue
                .submit::<_, Value>(&job, &raw(what, i as i64))
                .expect("submit")
                .finished()
                .await;
            assert_eq!(
                value_of(&finished),
                Some(i as i128),
                "{:?}",
                finished.result
            );
            pids.push(pid_of(&finished));
        }
        pids
    });
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "harmless frames do not cost the worker: {pids:?}"
    );
}

#[test]
fn a_hello_with_another_protocol_version_is_refused() {
    let job = rawworker().env("RAWWORKER_PROTOCOL", "99");
    let results = run_all(&job, &[raw("echo", 0)]);
    let err = error_of(&results[0]);
    assert_eq!(err.kind, FailureKind::BadOutput, "{err:?}");
    assert!(err.message.contains("protocol 99"), "{}", err.message);
}

#[test]
fn workers_that_keep_failing_to_start_fail_the_waiting_jobs_at_once_and_a_retry_tries_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("starts");
    let job = rawworker().env("RAWWORKER_FAIL_SETUP", &log);
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let parallel = 2;
    on_main_context(|| async {
        let queue = Queue::with_max_running(parallel);
        let handles: Vec<_> = (0..30)
            .map(|i| {
                queue
                    .submit::<_, Value>(&job, &raw("echo", i))
                    .expect("submit")
            })
            .collect();
        for handle in handles {
            let finished = handle.finished().await;
            let err = finished.result.expect_err("fails");
            assert_eq!(err.kind, FailureKind::Failed, "{err:?}");
            assert!(err.message.contains("no model here"), "{}", err.message);
        }
        // Three failed in a row, then the waiting jobs failed without trying; a few more
        // may have been starting at the same moment (a slot's thread is counted free only
        // once it reported).
        let tries = starts();
        let max = offload::MAX_FAILED_STARTS as usize;
        assert!(
            (max..max + 4 * parallel).contains(&tries),
            "{tries} workers started for 30 jobs"
        );
        // A job submitted after is a retry: it tries again, once.
        let again = queue
            .submit::<_, Value>(&job, &raw("echo", 99))
            .expect("submit")
            .finished()
            .await;
        let err = again.result.expect_err("fails again");
        assert!(err.message.contains("no model here"), "{}", err.message);
        assert_eq!(starts(), tries + 1);
    });
}

/// Runs `offload-diag --persistent` (the Rust SDK's worker) on `frames` as its whole stdin:
/// its exit code and the frames it wrote.
fn sdk_worker_on(frames: &[serde_json::Value], extra: &[u8]) -> (Option<i32>, Vec<Value>) {
    let mut stdin = Vec::new();
    for frame in frames {
        let value = offload::sdk::json::json_to_cbor(frame.clone()).expect("a frame");
        ciborium::into_writer(&value, &mut stdin).expect("encode");
    }
    stdin.extend_from_slice(extra);
    let mut command = std::process::Command::new(common::bin("offload-diag"));
    command.arg("--persistent");
    let out = common::run_with_input(command, &stdin);
    let mut written = Vec::new();
    let mut rest = &out.stdout[..];
    while !rest.is_empty() {
        let value: Value = ciborium::from_reader(&mut rest).expect("frames only on stdout");
        written.push(value);
    }
    (out.status.code(), written)
}

fn frame_type(frame: &Value) -> Option<&str> {
    field(frame, "type").and_then(Value::as_text)
}

#[test]
fn a_worker_answers_nothing_to_a_broken_host_frame_and_exits_65() {
    let hello = json!({"type": "hello", "protocol": 2});
    let (code, frames) = sdk_worker_on(&[hello], b"\xff\xfe not CBOR");
    assert_eq!(code, Some(65));
    let types: Vec<_> = frames.iter().map(frame_type).collect();
    assert_eq!(types, [Some("hello")], "its hello, then nothing");
    // A job frame without an id is broken too.
    let (code, frames) = sdk_worker_on(
        &[
            json!({"type": "hello", "protocol": 2}),
            json!({"type": "job", "input": {"echo": 1}}),
        ],
        b"",
    );
    assert_eq!((code, frames.len()), (Some(65), 1));
}

#[test]
fn a_worker_refuses_a_host_below_its_protocol_and_ignores_a_second_hello() {
    let (code, frames) = sdk_worker_on(&[json!({"type": "hello", "protocol": 1})], b"");
    assert_eq!(
        (code, frames.len()),
        (Some(65), 0),
        "no hello to a version-1 host"
    );
    let (code, frames) = sdk_worker_on(
        &[
            json!({"type": "hello", "protocol": 2}),
            json!({"type": "hello", "protocol": 2}),
            json!({"type": "job", "id": 4, "input": {"echo": 9}}),
        ],
        b"",
    );
    assert_eq!(code, Some(0), "end of input between frames");
    let types: Vec<_> = frames.iter().map(frame_type).collect();
    assert_eq!(
        types,
        [Some("hello"), Some("result")],
        "the second hello ignored"
    );
}

#[test]
fn a_request_over_the_workers_input_limit_fails_that_job_only() {
    let job = diag_job()
        .persistence(Persistence::Always)
        .env("OFFLOAD_MAX_INPUT_BYTES", "1000");
    let big = "x".repeat(5000);
    let results = run_all(
        &job,
        &[json!({"echo": 1}), json!({"echo": big}), json!({"echo": 3})],
    );
    assert_eq!(echo_of(&results[0]), Some(1));
    let err = error_of(&results[1]);
    assert_eq!(
        (err.kind, err.exit_code),
        (FailureKind::Failed, Some(65)),
        "{err:?}"
    );
    assert_eq!(echo_of(&results[2]), Some(3));
}

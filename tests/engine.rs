//! The engine against real processor processes: limits on parallelism, ordering, results that
//! never mix, large payloads, every outcome kind, and cleanup.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use common::{diag_job, on_main_context, wait_group_gone, SETTLE};
use offload::{FailureKind, Finished, Job, JobError, JobId, Processor, Queue, QueueEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The parts of `offload-diag`'s result the tests read.
#[derive(Debug, Deserialize)]
struct DiagOut {
    pid: u32,
    started_ns: u64,
    finished_ns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The most intervals open at any one instant.
fn max_overlap(intervals: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    // Ends sort before starts at the same instant.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        open += step;
        most = most.max(open);
    }
    most as usize
}

/// Runs `count` sleeping jobs with at most `n` at once; returns their (start, end) times.
fn run_sleepers(n: usize, count: usize, sleep_ms: u64) -> Vec<(u64, u64)> {
    on_main_context(|| async move {
        let queue = Queue::with_max_running(n);
        let job = diag_job();
        let handles: Vec<_> = (0..count)
            .map(|_| {
                queue
                    .submit::<_, DiagOut>(&job, &json!({"sleep_ms": sleep_ms}))
                    .expect("submit")
            })
            .collect();
        let mut times = Vec::new();
        for handle in handles {
            let out = handle.result().await.expect("sleeper succeeds");
            times.push((out.started_ns, out.finished_ns));
        }
        times
    })
}

#[test]
fn never_more_than_n_processors_run_at_once() {
    for n in [1, 2, 4] {
        // Long enough that the last worker to start (late on a loaded machine) still finds
        // jobs to run beside the others.
        let times = run_sleepers(n, 3 * n + 2, 400);
        let most = max_overlap(&times);
        assert!(most <= n, "with -j {n}, {most} jobs overlapped");
        assert_eq!(
            most, n,
            "with -j {n} and enough jobs, {n} should run together"
        );
    }
}

#[test]
fn changing_the_limit_mid_run_takes_effect() {
    // Each phase lasts a number of finished jobs, not a time, so that a loaded machine only
    // makes it longer; jobs are long enough that three started together overlap.
    let (times, raised_at, lowered_at, drained) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job();
        let handles: Vec<_> = (0..16)
            .map(|_| {
                queue
                    .submit::<_, DiagOut>(&job, &json!({"sleep_ms": 300}))
                    .expect("submit")
            })
            .collect();
        let finished_at_least = |n: usize| {
            let queue = queue.clone();
            async move {
                while queue.counts().succeeded < n {
                    common::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        finished_at_least(2).await;
        let raised_at = now_ns();
        queue.set_max_running(3);
        assert_eq!(
            queue.counts().running,
            3,
            "raising the limit starts more jobs at once"
        );
        finished_at_least(11).await;
        let lowered_at = now_ns();
        queue.set_max_running(1);
        // The jobs running now finish; after them, one at a time.
        let last_three: Vec<JobId> = handles
            .iter()
            .map(|h| h.id())
            .filter(|id| queue.job_state(*id) == Some(offload::JobState::Running))
            .collect();
        let mut times = Vec::new();
        let mut drained = lowered_at;
        for handle in handles {
            let id = handle.id();
            let out = handle.result().await.expect("sleeper succeeds");
            times.push((out.started_ns, out.finished_ns));
            if last_three.contains(&id) {
                drained = drained.max(out.finished_ns);
            }
        }
        (times, raised_at, lowered_at, drained)
    });
    let clip = |from: u64, to: u64| -> Vec<(u64, u64)> {
        times
            .iter()
            .filter(|(s, e)| *e > from && *s < to)
            .map(|&(s, e)| (s.max(from), e.min(to)))
            .collect()
    };
    assert_eq!(max_overlap(&clip(0, raised_at)), 1, "before raising");
    assert_eq!(
        max_overlap(&clip(raised_at, lowered_at)),
        3,
        "between raising and lowering"
    );
    // Jobs already running when the limit dropped finish; after them, one at a time.
    assert_eq!(max_overlap(&clip(drained, u64::MAX)), 1, "after lowering");
}

#[test]
fn jobs_start_in_submission_order() {
    let (starts, started_events) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let started = Rc::new(RefCell::new(Vec::new()));
        let seen = started.clone();
        queue.connect_events(move |event| {
            if let QueueEvent::Started { id, .. } = event {
                seen.borrow_mut().push(*id);
            }
        });
        let job = diag_job();
        let handles: Vec<_> = (0..15)
            .map(|_| {
                queue
                    .submit::<_, DiagOut>(&job, &json!({"sleep_ms": 5}))
                    .expect("submit")
            })
            .collect();
        let mut starts = Vec::new();
        for handle in handles {
            starts.push(handle.result().await.expect("ok").started_ns);
        }
        let events = started.borrow().clone();
        (starts, events)
    });
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "start times out of order: {starts:?}"
    );
    let expected: Vec<JobId> = (0..15).map(JobId).collect();
    assert_eq!(started_events, expected);
}

#[derive(Debug, Serialize)]
struct EchoIn {
    echo: u64,
}

#[derive(Debug, Deserialize)]
struct EchoOut {
    echo: u64,
}

#[test]
fn a_thousand_typed_jobs_each_get_their_own_result() {
    let echoes = on_main_context(|| async {
        let queue = Queue::new();
        let job = diag_job();
        let handles: Vec<_> = (0..1000u64)
            .map(|i| {
                queue
                    .submit::<_, EchoOut>(&job, &EchoIn { echo: i * 7 })
                    .expect("submit")
            })
            .collect();
        let mut echoes = Vec::new();
        for handle in handles {
            echoes.push(handle.result().await.expect("echo succeeds").echo);
        }
        echoes
    });
    let expected: Vec<u64> = (0..1000).map(|i| i * 7).collect();
    assert_eq!(echoes, expected);
}

#[test]
fn a_thousand_untyped_jobs_each_get_their_own_result_through_callbacks() {
    let results = on_main_context(|| async {
        let queue = Queue::new();
        let job = diag_job();
        let results: Rc<RefCell<HashMap<JobId, Value>>> = Rc::default();
        let mut ids = Vec::new();
        for i in 0..1000u64 {
            let input = Value::Map(vec![(
                Value::Text("echo".into()),
                Value::Text(format!("job-{i}")),
            )]);
            let handle = queue.submit::<_, Value>(&job, &input).expect("submit");
            ids.push(handle.id());
            let results = results.clone();
            handle.on_finished(move |finished| {
                let value = finished.result.expect("echo succeeds");
                let previous = results.borrow_mut().insert(finished.id, value);
                assert!(previous.is_none(), "job {} delivered twice", finished.id);
            });
        }
        while results.borrow().len() < 1000 {
            common::sleep(Duration::from_millis(20)).await;
        }
        let results = results.borrow();
        ids.iter().map(|id| results[id].clone()).collect::<Vec<_>>()
    });
    for (i, value) in results.iter().enumerate() {
        let echo = value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("echo")))
            .and_then(|(_, v)| v.as_text());
        assert_eq!(echo, Some(format!("job-{i}").as_str()));
    }
}

#[test]
fn a_callback_attached_after_the_result_arrived_still_runs_once() {
    let (first, second) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job();
        let early = queue
            .submit::<_, Value>(&job, &json!({"echo": "early"}))
            .expect("submit");
        let late = queue
            .submit::<_, Value>(&job, &json!({"echo": "late"}))
            .expect("submit");
        // Both jobs end while nobody listens to `late`.
        let first = early.result().await.expect("early job succeeds");
        while queue.counts().succeeded < 2 {
            common::sleep(Duration::from_millis(10)).await;
        }
        let calls: Rc<RefCell<Vec<Value>>> = Rc::default();
        let sink = calls.clone();
        late.on_finished(move |finished| sink.borrow_mut().push(finished.result.expect("late")));
        // Never from inside `on_finished` itself.
        assert!(calls.borrow().is_empty());
        while calls.borrow().is_empty() {
            common::sleep(Duration::from_millis(10)).await;
        }
        common::sleep(Duration::from_millis(50)).await;
        let calls = calls.borrow();
        assert_eq!(calls.len(), 1);
        (first, calls[0].clone())
    });
    assert_eq!(
        common::field(&first, "echo"),
        Some(&Value::Text("early".into()))
    );
    assert_eq!(
        common::field(&second, "echo"),
        Some(&Value::Text("late".into()))
    );
}

#[test]
fn a_jobs_result_reaches_its_handle_before_observers_hear_it_finished() {
    let (seen_first, all_done_results) = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        let ended: Rc<RefCell<Vec<JobId>>> = Rc::default();
        let results: Rc<RefCell<usize>> = Rc::default();
        // What the observer saw when the queue said the last job had ended: how many results
        // had arrived by then ("all done" in an observer sees every result).
        let all_done_results: Rc<RefCell<Option<usize>>> = Rc::default();
        {
            let (ended, results, all_done) =
                (ended.clone(), results.clone(), all_done_results.clone());
            let queue_ref = queue.clone();
            queue.connect_events(move |event| {
                if let QueueEvent::Finished { id, .. } = event {
                    ended.borrow_mut().push(*id);
                    let counts = queue_ref.counts();
                    if counts.queued + counts.running == 0 {
                        *all_done.borrow_mut() = Some(*results.borrow());
                    }
                }
            });
        }
        let job = diag_job();
        let seen_first: Rc<RefCell<Vec<bool>>> = Rc::default();
        for i in 0..20 {
            let handle = queue
                .submit::<_, Value>(&job, &json!({"echo": i}))
                .expect("submit");
            let (ended, seen_first, results) = (ended.clone(), seen_first.clone(), results.clone());
            handle.on_finished(move |finished| {
                let seen = ended.borrow().contains(&finished.id);
                seen_first.borrow_mut().push(seen);
                *results.borrow_mut() += 1;
            });
        }
        while ended.borrow().len() < 20 {
            common::sleep(Duration::from_millis(10)).await;
        }
        let seen_first = seen_first.borrow().clone();
        let all_done = *all_done_results.borrow();
        (seen_first, all_done)
    });
    // No callback found its job's Finished already told.
    assert_eq!(seen_first, vec![false; 20]);
    assert_eq!(all_done_results, Some(20));
}

#[test]
fn no_observer_or_callback_runs_inside_a_call_the_caller_made() {
    let log = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        // The app's own state, held mutably across every call below: an observer or a
        // callback run from inside one of them would find it borrowed and panic.
        let app: Rc<RefCell<Vec<String>>> = Rc::default();
        {
            let app = app.clone();
            queue.connect_events(move |event| {
                let what = match event {
                    QueueEvent::Queued { id, .. } => format!("queued {}", id.0),
                    QueueEvent::Started { id, .. } => format!("started {}", id.0),
                    QueueEvent::Finished { id, error, .. } => format!(
                        "finished {} {}",
                        id.0,
                        error.as_ref().map_or("ok".into(), |e| e.kind.to_string())
                    ),
                    // Progress (and an event added later): not what this test is about.
                    _ => return,
                };
                app.borrow_mut().push(what);
            });
        }
        let job = diag_job();
        let submit = |input: serde_json::Value| {
            let mut held = app.borrow_mut();
            let handle = queue.submit::<_, Value>(&job, &input).expect("submit");
            held.push(format!("submitted {}", handle.id().0));
            drop(held);
            let app = app.clone();
            handle.on_finished(move |finished| {
                app.borrow_mut().push(format!("result {}", finished.id.0));
            });
        };
        submit(json!({"sleep_ms": 10_000}));
        submit(json!({"echo": 1}));
        submit(json!({"echo": 2}));
        while !app.borrow().iter().any(|l| l.starts_with("started")) {
            common::sleep(Duration::from_millis(5)).await;
        }
        for call in ["set_max_running", "set_paused", "cancel", "cancel_queued"] {
            let mut held = app.borrow_mut();
            match call {
                "set_max_running" => queue.set_max_running(1),
                "set_paused" => queue.set_paused(true),
                "cancel" => {
                    queue.cancel(JobId(1));
                }
                _ => queue.cancel_queued(),
            }
            held.push(format!("called {call}"));
        }
        {
            let mut held = app.borrow_mut();
            queue.cancel_all();
            held.push("called cancel_all".into());
        }
        {
            let mut held = app.borrow_mut();
            queue.shutdown();
            held.push("called shutdown".into());
        }
        while queue.counts().running + queue.counts().queued > 0
            || !app.borrow().iter().any(|l| l == "finished 0 cancelled")
        {
            common::sleep(Duration::from_millis(5)).await;
        }
        let log = app.borrow().clone();
        log
    });
    let position = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {log:?}"))
    };
    // Each job: queued after its submit returned, then its result, then Finished.
    for id in 0..3 {
        assert!(position(&format!("submitted {id}")) < position(&format!("queued {id}")));
        assert!(position(&format!("result {id}")) < position(&format!("finished {id} cancelled")));
    }
    assert!(
        position("called cancel") < position("finished 1 cancelled"),
        "{log:?}"
    );
    assert!(
        position("called cancel_queued") < position("finished 2 cancelled"),
        "{log:?}"
    );
}

#[test]
fn dropping_the_queue_tells_waiting_callbacks_and_futures_their_job_was_cancelled() {
    let (from_callback, from_future) = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let job = diag_job();
        let running = queue
            .submit::<_, Value>(&job, &json!({"sleep_ms": 10_000}))
            .expect("submit");
        let queued = queue
            .submit::<_, Value>(&job, &json!({"echo": 1}))
            .expect("submit");
        let told: Rc<RefCell<Option<JobError>>> = Rc::default();
        let sink = told.clone();
        queued.on_finished(move |finished| *sink.borrow_mut() = finished.result.err());
        drop(queue);
        let from_future = running.finished().await.result.err();
        while told.borrow().is_none() {
            common::sleep(Duration::from_millis(10)).await;
        }
        let from_callback = told.borrow_mut().take();
        (from_callback, from_future)
    });
    for error in [from_callback, from_future] {
        let error = error.expect("a cancelled job has no result");
        assert_eq!(error.kind, FailureKind::Cancelled, "{error}");
        assert!(error.message.contains("queue was dropped"), "{error}");
    }
}

#[derive(Serialize)]
struct BytesIn {
    #[serde(with = "serde_bytes")]
    echo: Vec<u8>,
}

#[derive(Deserialize)]
struct BytesOut {
    #[serde(with = "serde_bytes")]
    echo: Vec<u8>,
}

#[test]
fn a_256_mib_byte_string_goes_through_intact() {
    const SIZE: usize = 256 << 20;
    let payload: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let back = on_main_context(|| {
        let payload = &payload;
        async move {
            let queue = Queue::new();
            let handle = queue
                .submit::<_, BytesOut>(
                    &diag_job(),
                    &BytesIn {
                        echo: payload.clone(),
                    },
                )
                .expect("submit");
            handle.result().await
        }
    });
    let back = back.expect("the echo succeeds").echo;
    assert_eq!(back.len(), SIZE);
    assert!(back == payload, "the echoed bytes differ");
}

/// Runs one diag job with `input` and returns how it ended.
fn run_one(job: &Job, input: serde_json::Value) -> Finished<Value> {
    on_main_context(|| async {
        let queue = Queue::new();
        queue
            .submit::<_, Value>(job, &input)
            .expect("submit")
            .finished()
            .await
    })
}

fn expect_failure(job: &Job, input: serde_json::Value, kind: FailureKind) -> JobError {
    let finished = run_one(job, input.clone());
    let err = finished.result.expect_err(&format!("{input} should fail"));
    assert_eq!(err.kind, kind, "{input}: {err:?}");
    err
}

#[test]
fn a_non_zero_exit_is_failed_with_code_and_stderr_tail() {
    let err = expect_failure(
        &diag_job(),
        json!({"fail": "exit:3", "stderr": "disk full\n"}),
        FailureKind::Failed,
    );
    assert_eq!(err.exit_code, Some(3));
    assert!(err.stderr_tail.contains("disk full"), "{err:?}");
    let err = expect_failure(
        &diag_job(),
        json!({"fail": "error:no such tile"}),
        FailureKind::Failed,
    );
    assert!(
        err.message.contains("no such tile"),
        "structured error report used: {err:?}"
    );
}

#[test]
fn death_by_signal_is_killed_with_the_signal_named() {
    let err = expect_failure(&diag_job(), json!({"fail": "segv"}), FailureKind::Killed);
    assert_eq!(err.signal, Some(libc::SIGSEGV));
    assert!(err.message.contains("SIGSEGV"), "{err:?}");
    let err = expect_failure(&diag_job(), json!({"fail": "abort"}), FailureKind::Killed);
    assert_eq!(err.signal, Some(libc::SIGABRT));
}

#[test]
fn bad_output_names_the_problem_and_shows_the_first_bytes() {
    // A process of its own: its raw stdout is the result (a worker's raw prints go to stderr;
    // tests/persistent.rs covers a worker's broken frames).
    let job = diag_job().persistence(offload::Persistence::Never);
    for (fault, says) in [
        ("not_cbor", "not valid CBOR"),
        ("truncated", "truncated"),
        ("two_items", "trailing bytes"),
        ("trailing", "trailing bytes"),
    ] {
        let err = expect_failure(&job, json!({"fail": fault}), FailureKind::BadOutput);
        assert!(err.message.contains(says), "{fault}: {}", err.message);
        assert!(
            err.message.contains("stdout began with"),
            "{fault}: {}",
            err.message
        );
    }
}

#[test]
fn a_result_of_the_wrong_type_is_bad_output() {
    let finished = on_main_context(|| async {
        let queue = Queue::new();
        // diag returns a map; ask for a number.
        queue
            .submit::<_, u64>(&diag_job(), &json!({}))
            .expect("submit")
            .finished()
            .await
    });
    let err = finished.result.expect_err("wrong type");
    assert_eq!(err.kind, FailureKind::BadOutput);
    assert!(err.message.contains("unexpected shape"), "{err:?}");
}

#[test]
fn a_hung_job_times_out_and_leaves_no_process() {
    let job = diag_job().timeout(Duration::from_millis(300));
    let finished = run_one(&job, json!({"fail": "hang"}));
    let err = finished.result.expect_err("hangs");
    assert_eq!(err.kind, FailureKind::TimedOut);
    let pid = finished.stats.pid.expect("it started");
    assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
}

#[test]
fn a_job_ignoring_sigterm_is_killed_after_the_grace_period() {
    let mut limits = *diag_job().run_limits();
    // Time for the processor to start and ignore SIGTERM first, on a loaded machine too.
    limits.timeout = Some(Duration::from_secs(2));
    limits.grace = Duration::from_millis(300);
    let job = diag_job().limits(limits);
    let finished = run_one(&job, json!({"fail": "ignore_term"}));
    let err = finished.result.expect_err("ignores SIGTERM");
    assert_eq!(err.kind, FailureKind::TimedOut);
    assert_eq!(err.signal, Some(libc::SIGKILL));
    assert!(err.message.contains("ignored SIGTERM"), "{err:?}");
    // It got its grace period, and was then killed (it would sleep for an hour).
    assert!(
        finished.stats.wall >= Duration::from_millis(2300) && finished.stats.wall < SETTLE * 3,
        "{:?}",
        finished.stats.wall
    );
}

#[test]
fn a_grandchild_is_killed_with_its_job() {
    let finished = run_one(&diag_job(), json!({"fail": "grandchild"}));
    let pid = finished.stats.pid.expect("it started");
    finished.result.expect("the job itself succeeds");
    assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
}

#[test]
fn cancelling_queued_and_running_jobs_leaves_no_process() {
    let (outcomes, pids) = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        let pids = Rc::new(RefCell::new(Vec::new()));
        let seen = pids.clone();
        queue.connect_events(move |event| {
            if let QueueEvent::Started { pid, .. } = event {
                seen.borrow_mut().push(*pid);
            }
        });
        let job = diag_job();
        let handles: Vec<_> = (0..6)
            .map(|_| {
                queue
                    .submit::<_, Value>(&job, &json!({"sleep_ms": 30_000}))
                    .expect("submit")
            })
            .collect();
        while pids.borrow().len() < 2 {
            common::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queue.counts().running, 2);
        assert!(queue.cancel(handles[0].id()), "a running job is cancelled");
        assert!(queue.cancel(handles[5].id()), "a queued job is cancelled");
        queue.cancel_queued();
        queue.cancel_all();
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.push(handle.finished().await.result.map(drop));
        }
        let pids = pids.borrow().clone();
        (outcomes, pids)
    });
    for outcome in &outcomes {
        let err = outcome.as_ref().expect_err("every job was cancelled");
        assert_eq!(err.kind, FailureKind::Cancelled, "{err:?}");
    }
    assert_eq!(pids.len(), 2, "queued jobs never started");
    for pid in pids {
        assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
    }
}

#[test]
fn shutdown_kills_running_jobs_without_a_grace_period() {
    // A grace period far longer than any machine's delay: ending well before it proves that
    // shutdown did not wait for it.
    let grace = Duration::from_secs(60);
    let (outcomes, pids, took) = on_main_context(|| async {
        let queue = Queue::with_max_running(3);
        let mut limits = *diag_job().run_limits();
        limits.grace = grace;
        let job = diag_job().limits(limits);
        let handles: Vec<_> = (0..5)
            .map(|_| {
                queue
                    .submit::<_, DiagOut>(&job, &json!({"fail": "ignore_term"}))
                    .expect("submit")
            })
            .collect();
        let pids = Rc::new(RefCell::new(Vec::new()));
        let seen = pids.clone();
        queue.connect_events(move |event| {
            if let QueueEvent::Started { pid, .. } = event {
                seen.borrow_mut().push(*pid);
            }
        });
        while pids.borrow().len() < 3 {
            common::sleep(Duration::from_millis(10)).await;
        }
        let shutdown = std::time::Instant::now();
        queue.shutdown();
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.push(handle.finished().await.result.map(drop));
        }
        let pids = pids.borrow().clone();
        (outcomes, pids, shutdown.elapsed())
    });
    assert!(took < grace / 2, "{took:?}");
    for outcome in outcomes {
        assert_eq!(outcome.expect_err("cancelled").kind, FailureKind::Cancelled);
    }
    for pid in pids {
        assert_eq!(wait_group_gone(pid, SETTLE), Vec::<u32>::new());
    }
}

#[test]
fn processors_that_cannot_start_say_what_was_tried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_executable = dir.path().join("offload-plain-file");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
    let missing = dir.path().join("offload-missing");
    for (path, says) in [
        (missing.clone(), "does not exist"),
        (not_executable, "not executable"),
        (dir.path().to_path_buf(), "is a directory"),
    ] {
        let err = expect_failure(
            &Job::new(Processor::at(&path)),
            json!({}),
            FailureKind::CouldNotStart,
        );
        assert!(
            err.message.contains(says),
            "{}: {}",
            path.display(),
            err.message
        );
        assert!(
            err.message.contains(&path.display().to_string()),
            "{}",
            err.message
        );
    }
    let lookup = Processor::find("no-such-processor-anywhere").expect_err("not found");
    let text = lookup.to_string();
    assert!(
        text.contains("offload-no-such-processor-anywhere"),
        "{text}"
    );
    assert!(
        text.contains(&common::bin_dir().display().to_string()),
        "names the places searched: {text}"
    );
}

#[test]
fn progress_items_arrive_as_events() {
    let progress = on_main_context(|| async {
        let queue = Queue::new();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = seen.clone();
        queue.connect_events(move |event| {
            if let QueueEvent::Progress {
                fraction, message, ..
            } = event
            {
                sink.borrow_mut().push((*fraction, message.clone()));
            }
        });
        let handle = queue
            .submit::<_, Value>(&diag_job(), &json!({"sleep_ms": 400, "progress_steps": 4}))
            .expect("submit");
        handle.result().await.expect("succeeds");
        let seen = seen.borrow().clone();
        seen
    });
    assert!(progress.len() >= 3, "progress events: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|(_, m)| m.as_deref() == Some("step 2 of 4")),
        "{progress:?}"
    );
}

#[test]
fn stats_report_cpu_time_and_peak_memory() {
    // burn_ms is CPU time, so this holds however busy the machine is.
    let finished = run_one(&diag_job(), json!({"burn_ms": 200}));
    finished.result.expect("succeeds");
    assert!(
        finished.stats.cpu >= Duration::from_millis(200),
        "{:?}",
        finished.stats
    );
    assert!(
        finished.stats.peak_rss_bytes > 100 * 1024,
        "{:?}",
        finished.stats
    );
    assert!(
        finished.stats.wall >= finished.stats.cpu,
        "{:?}",
        finished.stats
    );
}

#[test]
fn oversized_input_is_refused_at_submission() {
    on_main_context(|| async {
        let queue = Queue::new();
        let mut limits = *diag_job().run_limits();
        limits.max_input_bytes = 100;
        let job = diag_job().limits(limits);
        let err = queue
            .submit::<_, Value>(&job, &json!({"echo": "x".repeat(200)}))
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("over the limit of 100 bytes"),
            "{err}"
        );
        assert_eq!(queue.counts().queued, 0);
    });
}

#[test]
fn the_engine_reaps_every_processor() {
    for persistence in [offload::Persistence::Never, offload::Persistence::Always] {
        reaps_every_processor(persistence);
    }
}

fn reaps_every_processor(persistence: offload::Persistence) {
    let pids: Vec<u32> = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        let job = diag_job().persistence(persistence);
        let handles: Vec<_> = (0..6)
            .map(|_| {
                queue
                    .submit::<_, DiagOut>(&job, &json!({"sleep_ms": 10}))
                    .expect("submit")
            })
            .collect();
        let mut pids = Vec::new();
        for handle in handles {
            pids.push(handle.result().await.expect("ok").pid);
        }
        // One-shot results are delivered only after the runner reaped the processor; workers
        // outlive their jobs and are reaped when they end (here, at shutdown).
        queue.shutdown();
        while queue.live_workers() > 0 {
            common::sleep(std::time::Duration::from_millis(5)).await;
        }
        pids
    });
    let zombies: Vec<u32> = common::zombie_children()
        .into_iter()
        .filter(|p| pids.contains(p))
        .collect();
    assert_eq!(
        zombies,
        Vec::<u32>::new(),
        "{persistence:?}: unreaped processors"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{persistence:?}: process {pid} still exists"
        );
    }
}

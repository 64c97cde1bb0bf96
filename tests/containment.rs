//! The figures a job reports are its processor's own, and nothing a job started outlives it:
//! the guard process between the host and every processor (src/runner/guard.c).

mod common;

use std::time::Duration;

use ciborium::Value;
use common::{diag_job, field, run_jobs};
use offload::{Job, Persistence, Processor, WorkerSettings};
use serde_json::json;

const BOTH: [Persistence; 2] = [Persistence::Never, Persistence::Always];

fn alive(pid: u32) -> bool {
    common::processes()
        .iter()
        .any(|p| p.pid == pid && p.state != 'Z')
}

fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let until = std::time::Instant::now() + timeout;
    while alive(pid) {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

#[test]
fn a_small_processor_under_a_large_host_reports_its_own_peak() {
    // The host (this test) holds 600 MiB, touched: a CLONE_VM child used to report that.
    let ballast = vec![7u8; 600 << 20];
    std::hint::black_box(&ballast);
    for persistence in BOTH {
        let job = diag_job().persistence(persistence);
        let results = run_jobs(&job, &[json!({"echo": 1}), json!({"echo": 2})], 1, None);
        for finished in results {
            let peak = finished.stats.peak_rss_bytes;
            assert!(finished.result.is_ok(), "{:?}", finished.result);
            assert!(
                peak > 0 && peak < 64 << 20,
                "{persistence:?}: diag reported {} MiB under a 600 MiB host",
                mib(peak)
            );
        }
    }
    // And a processor that is not an SDK one, with its exit status: /bin/true, ~1-2 MiB.
    let results = run_jobs(
        &Job::new(Processor::at("/bin/true")),
        &[json!(null)],
        1,
        None,
    );
    let peak = results[0].stats.peak_rss_bytes;
    assert!(
        peak > 0 && peak < 16 << 20,
        "/bin/true reported {} MiB",
        mib(peak)
    );
    drop(ballast);
}

#[test]
fn a_processor_that_holds_a_known_amount_reports_it() {
    for persistence in BOTH {
        let job = diag_job().persistence(persistence);
        let results = run_jobs(&job, &[json!({"hold_bytes": 300 << 20})], 1, None);
        let peak = results[0].stats.peak_rss_bytes;
        assert!(results[0].result.is_ok(), "{:?}", results[0].result);
        assert!(
            (300 << 20..364 << 20).contains(&peak),
            "{persistence:?}: held 300 MiB, reported {} MiB",
            mib(peak)
        );
    }
}

#[test]
fn a_job_after_a_large_one_below_the_same_guard_reports_its_own_peak() {
    // One slot: both jobs run on one runner thread, below its one guard, which forked both
    // processors; the guard's own high-water mark (which a fork passes on) stays small.
    let job = diag_job().persistence(Persistence::Never);
    let results = run_jobs(
        &job,
        &[json!({"hold_bytes": 300 << 20}), json!({"echo": 1})],
        1,
        None,
    );
    assert!(results[0].result.is_ok(), "{:?}", results[0].result);
    assert!(results[0].stats.peak_rss_bytes >= 300 << 20);
    let peak = results[1].stats.peak_rss_bytes;
    assert!(results[1].result.is_ok(), "{:?}", results[1].result);
    assert!(
        peak > 0 && peak < 64 << 20,
        "an echo job after a 300 MiB one reported {} MiB",
        mib(peak)
    );
}

#[test]
fn a_guard_killed_under_a_job_fails_that_job_and_the_next_job_runs() {
    // The sleeping job's processor is found by its environment (tests run in parallel in this
    // process), and its parent, the guard, is killed from outside.
    const MARK: &str = "OFFLOAD_TEST_GUARD_KILLED=1";
    let job = diag_job()
        .persistence(Persistence::Never)
        .env("OFFLOAD_TEST_GUARD_KILLED", "1");
    let killer = std::thread::spawn(|| {
        let until = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let marked = common::processors_below(std::process::id(), "offload-diag")
                .into_iter()
                .find(|p| {
                    std::fs::read(format!("/proc/{}/environ", p.pid))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == MARK.as_bytes()))
                });
            if let Some(processor) = marked {
                let guard = common::stat(processor.parent).expect("the guard");
                assert_eq!(guard.1, "offload-guard", "the processor's parent");
                // SAFETY: SIGKILL to our own child, the guard.
                unsafe { libc::kill(processor.parent as i32, libc::SIGKILL) };
                return processor.pid;
            }
            assert!(std::time::Instant::now() < until, "no marked processor");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let results = run_jobs(
        &job,
        &[json!({"sleep_ms": 600_000}), json!({"echo": 2})],
        1,
        None,
    );
    let processor = killer.join().expect("the killer thread");
    let err = results[0]
        .result
        .as_ref()
        .expect_err("its guard was killed");
    assert_eq!(err.kind, offload::FailureKind::Killed, "{err:?}");
    assert!(
        wait_dead(processor, common::SETTLE),
        "the processor {processor} outlived its guard"
    );
    let echoed = results[1].result.as_ref().expect("the next job runs");
    assert_eq!(
        field(echoed, "echo").and_then(Value::as_integer),
        Some(2.into())
    );
}

fn daemon_pid(finished: &offload::Finished<Value>) -> u32 {
    let value = finished.result.as_ref().expect("the job succeeds");
    field(value, "daemon_pid")
        .and_then(Value::as_integer)
        .and_then(|n| u32::try_from(n).ok())
        .expect("daemon_pid")
}

#[test]
fn a_daemon_a_one_shot_job_started_is_gone_when_it_ends() {
    let job = diag_job().persistence(Persistence::Never);
    let results = run_jobs(&job, &[json!({"daemon": true})], 1, None);
    let daemon = daemon_pid(&results[0]);
    assert!(
        wait_dead(daemon, common::SETTLE),
        "the setsid daemon {daemon} outlived its job"
    );
}

#[test]
fn a_daemon_a_worker_started_is_gone_when_the_worker_ends() {
    // On a persistent worker, what a job starts belongs to the worker: it goes with it, here
    // when the worker is replaced after its one job, and at the queue's shutdown.
    let settings = WorkerSettings {
        max_jobs: 1,
        ..WorkerSettings::default()
    };
    let job = diag_job().persistence(Persistence::Always);
    let results = run_jobs(&job, &[json!({"daemon": true})], 1, Some(settings));
    let daemon = daemon_pid(&results[0]);
    assert!(
        wait_dead(daemon, common::SETTLE),
        "the setsid daemon {daemon} outlived its worker"
    );
}

#[test]
fn a_daemon_of_a_cancelled_or_timed_out_job_is_gone() {
    for persistence in BOTH {
        let job = diag_job()
            .persistence(persistence)
            .limits(offload::RunLimits {
                // Time to start the daemon first, on a loaded machine too.
                timeout: Some(Duration::from_secs(3)),
                grace: Duration::from_millis(200),
                ..offload::RunLimits::default()
            });
        // The daemon starts, then the job hangs and times out; diag named its daemon on stderr.
        let results = run_jobs(&job, &[json!({"daemon": true, "fail": "hang"})], 1, None);
        let err = results[0].result.as_ref().expect_err("times out");
        assert_eq!(err.kind, offload::FailureKind::TimedOut, "{persistence:?}");
        let daemon: u32 = err
            .stderr_tail
            .lines()
            .find_map(|l| l.strip_prefix("offload-diag: daemon "))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("{persistence:?}: no daemon pid in {err:?}"));
        assert!(
            wait_dead(daemon, common::SETTLE),
            "{persistence:?}: the daemon {daemon} of a timed-out job escaped"
        );
    }
}

/// The peak resident memory (VmHWM) of `pid` as last seen before it ended, read every 2 ms
/// from outside; the kernel keeps the high-water mark, so a late read still sees a burst.
fn watch_peak(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib * 1024);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    })
}

#[test]
fn two_gib_at_once_under_a_256_mib_limit_is_stopped_and_never_held() {
    for persistence in BOTH {
        let limits = offload::RunLimits {
            max_memory_bytes: Some(256 << 20),
            ..offload::RunLimits::default()
        };
        let job = diag_job().persistence(persistence).limits(limits);
        let (finished, peak) = common::on_main_context(|| async {
            let queue = offload::Queue::with_max_running(1);
            let watcher = std::rc::Rc::new(std::cell::RefCell::new(None));
            let seen = watcher.clone();
            queue.connect_events(move |event| {
                if let offload::QueueEvent::Started { pid, .. } = event {
                    seen.borrow_mut().get_or_insert_with(|| watch_peak(*pid));
                }
            });
            let finished = queue
                .submit::<_, Value>(&job, &json!({"fail": "alloc:2147483648"}))
                .expect("submit")
                .finished()
                .await;
            queue.shutdown();
            let handle = watcher.borrow_mut().take().expect("it started");
            (finished, handle.join().expect("the watcher"))
        });
        let err = finished.result.expect_err("over the limit");
        assert_eq!(
            err.kind,
            offload::FailureKind::ResourceLimit,
            "{persistence:?}: {err:?}"
        );
        let kind = finished.stats.memory_limit.expect("a memory limit");
        assert!(
            peak < (256 + 48) << 20,
            "{persistence:?} ({kind:?}): the processor held {} MiB under a 256 MiB limit",
            mib(peak)
        );
        eprintln!(
            "{persistence:?}: {kind:?}, peak seen from outside {} MiB: {}",
            mib(peak),
            err.message
        );
    }
}

#[test]
fn without_a_cgroup_the_limit_is_an_rlimit_and_still_holds() {
    for mode in ["--no-persistent", "--persistent"] {
        let mut command = common::offload();
        command.env(offload::MEMORY_LIMIT_ENV, "rlimit").args([
            "run",
            "diag",
            mode,
            "--memory-limit",
            "256M",
            "--input",
            "-",
        ]);
        let out = common::run_with_input(command, br#"{"fail": "alloc:2147483648"}"#);
        let text = String::from_utf8_lossy(&out.stdout);
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
        assert_eq!(line["error"]["kind"], "resource_limit", "{mode}: {line}");
        assert_eq!(line["stats"]["memory_limit"], "rlimit", "{mode}: {line}");
        let message = line["error"]["message"].as_str().expect("text");
        assert!(message.contains("RLIMIT_DATA"), "{mode}: {message}");
        if mode == "--no-persistent" {
            // The allocation failed outright: nothing near 2 GiB was ever resident.
            let peak = line["stats"]["peak_rss_bytes"].as_u64().expect("a peak");
            assert!(peak < 64 << 20, "{} MiB", mib(peak));
        }
    }
}

fn probes(finished: &offload::Finished<Value>) -> Vec<String> {
    let value = finished.result.as_ref().expect("the job succeeds");
    field(value, "probes")
        .and_then(Value::as_array)
        .expect("probes")
        .iter()
        .map(|p| p.as_text().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn a_sandboxed_processor_cannot_reach_the_network_the_home_or_the_system() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let home = std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let secret = home.join(format!(".offload-sandbox-test-{}", std::process::id()));
    std::fs::write(&secret, "secret").expect("a file in the home directory");
    let outside = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sandbox-write-{}", std::process::id()));
    let private = format!("/tmp/offload-sandbox-private-{}", std::process::id());
    let input = json!({"probe": [
        format!("connect:127.0.0.1:{port}"),
        format!("read:{}", secret.display()),
        format!("write:{}", outside.display()),
        format!("write:{private}"),
    ]});
    for persistence in BOTH {
        let plain = diag_job().persistence(persistence);
        let results = run_jobs(&plain, std::slice::from_ref(&input), 1, None);
        assert_eq!(
            probes(&results[0]),
            ["ok", "ok", "ok", "ok"],
            "{persistence:?}"
        );
        std::fs::remove_file(&outside).expect("written outside");
        std::fs::remove_file(&private).expect("written in /tmp");

        let sandboxed = plain.sandbox(offload::Sandbox::new());
        let results = run_jobs(&sandboxed, std::slice::from_ref(&input), 1, None);
        let got = probes(&results[0]);
        assert!(
            got[0].starts_with("error"),
            "{persistence:?}: network {got:?}"
        );
        assert!(got[1].starts_with("error"), "{persistence:?}: home {got:?}");
        assert!(
            got[2].starts_with("error"),
            "{persistence:?}: system {got:?}"
        );
        assert_eq!(got[3], "ok", "{persistence:?}: its own /tmp is writable");
        assert!(!outside.exists());
        assert!(
            !std::path::Path::new(&private).exists(),
            "{persistence:?}: its /tmp is private"
        );
    }
    std::fs::remove_file(&secret).expect("clean up");
}

#[test]
fn a_processor_gives_the_same_results_sandboxed_and_its_crashes_are_still_signals() {
    for persistence in BOTH {
        let job = |sandboxed: bool| {
            let job =
                Job::new(Processor::at(common::bin("offload-mandelbrot"))).persistence(persistence);
            if sandboxed {
                job.sandbox(offload::Sandbox::new())
            } else {
                job
            }
        };
        let tile = json!({"x0": -2.0, "y0": -1.0, "x1": 0.5, "y1": 1.0,
                          "width": 48, "height": 32, "max_iter": 100});
        let plain = run_jobs(&job(false), std::slice::from_ref(&tile), 1, None);
        let boxed = run_jobs(&job(true), std::slice::from_ref(&tile), 1, None);
        assert_eq!(
            plain[0].result.as_ref().expect("renders"),
            boxed[0].result.as_ref().expect("renders sandboxed"),
            "{persistence:?}"
        );
        let crash = run_jobs(
            &diag_job()
                .persistence(persistence)
                .sandbox(offload::Sandbox::new()),
            &[json!({"fail": "segv"})],
            1,
            None,
        );
        let err = crash[0].result.as_ref().expect_err("crashes");
        assert_eq!(
            (err.kind, err.signal),
            (offload::FailureKind::Killed, Some(libc::SIGSEGV)),
            "{persistence:?}: {err:?}"
        );
    }
}

#[test]
fn without_bubblewrap_the_sandbox_says_what_to_install() {
    let mut command = std::process::Command::new(common::bin("offload"));
    command
        .env("PATH", "/nonexistent")
        .arg("run")
        .arg(common::bin("offload-diag"))
        .args(["--sandbox", "--input", "-"]);
    let out = common::run_with_input(command, br#"{"echo": 1}"#);
    let text = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!(line["error"]["kind"], "could_not_start", "{line}");
    let message = line["error"]["message"].as_str().expect("text");
    assert!(message.contains("apt install bubblewrap"), "{message}");
}

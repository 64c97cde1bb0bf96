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
        wait_dead(daemon, Duration::from_secs(2)),
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
        wait_dead(daemon, Duration::from_secs(4)),
        "the setsid daemon {daemon} outlived its worker"
    );
}

#[test]
fn a_daemon_of_a_cancelled_or_timed_out_job_is_gone() {
    for persistence in BOTH {
        let job = diag_job()
            .persistence(persistence)
            .limits(offload::RunLimits {
                timeout: Some(Duration::from_millis(400)),
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
            wait_dead(daemon, Duration::from_secs(3)),
            "{persistence:?}: the daemon {daemon} of a timed-out job escaped"
        );
    }
}

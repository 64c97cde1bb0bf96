//! Runner threads are kept between jobs and end once idle. Alone in its test binary, so that
//! no other test's jobs share the pool it counts.

mod common;

use std::time::{Duration, Instant};

use common::{diag_job, on_main_context};
use offload::Queue;
use serde_json::json;

/// Threads of this process named `offload-runner`.
fn runner_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.trim() == "offload-runner")
        .count()
}

#[test]
fn runner_threads_are_reused_across_jobs_and_end_when_idle() {
    assert_eq!(runner_threads(), 0);
    let most = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        // One-shot runs use the pooled threads (workers have threads of their own).
        let job = diag_job().persistence(offload::Persistence::Never);
        let handles: Vec<_> = (0..60)
            .map(|i| {
                queue
                    .submit::<_, ciborium::Value>(&job, &json!({"echo": i}))
                    .expect("submit")
            })
            .collect();
        let mut most = 0;
        for handle in handles {
            handle.result().await.expect("echo succeeds");
            most = most.max(runner_threads());
        }
        most
    });
    // Two run at once, and a thread counts as free before its job's end is reported.
    assert!((1..=2).contains(&most), "{most} runner threads for 60 jobs");
    let until = Instant::now() + Duration::from_secs(15);
    while runner_threads() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(runner_threads(), 0, "idle runner threads end");
}

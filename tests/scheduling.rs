//! Which job starts when (src/queue.rs, `schedule`): no job waits on a busy worker's deck while
//! a slot is free; a higher priority starts first; one priority starts in submission order.
//! The assertions are on the order of the queue's events, with jobs long enough (seconds)
//! that a loaded machine keeps the order, not on how long anything took.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{diag_job, on_main_context};
use offload::{JobId, Persistence, Queue, QueueEvent};
use serde_json::json;

const BOTH: [Persistence; 2] = [Persistence::Never, Persistence::Always];

/// What the queue told, in order: ("started", id) or ("finished", id).
type Told = Rc<RefCell<Vec<(&'static str, JobId)>>>;

fn record(queue: &Queue) -> Told {
    let told: Told = Rc::default();
    let seen = told.clone();
    queue.connect_events(move |event| match event {
        QueueEvent::Started { id, .. } => seen.borrow_mut().push(("started", *id)),
        QueueEvent::Finished { id, .. } => seen.borrow_mut().push(("finished", *id)),
        _ => {}
    });
    told
}

fn at(told: &Told, what: &str, id: JobId) -> usize {
    told.borrow()
        .iter()
        .position(|(w, i)| *w == what && *i == id)
        .unwrap_or_else(|| panic!("no {what} {id} in {:?}", told.borrow()))
}

/// Waits on the main context until `id` has started.
async fn started(told: &Told, id: JobId) {
    while !told.borrow().contains(&("started", id)) {
        common::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[test]
fn a_short_job_never_waits_on_a_deck_while_a_slot_is_free() {
    // 3000, 100 and 3000 ms at -j 2: job 2 goes on deck behind job 0 (both slots busy), and
    // must take job 1's slot when that frees, not wait for job 0.
    for persistence in BOTH {
        let told = on_main_context(|| async {
            let queue = Queue::with_max_running(2);
            let told = record(&queue);
            let job = diag_job().persistence(persistence);
            let handles: Vec<_> = [3000, 100, 3000]
                .iter()
                .map(|ms| {
                    queue
                        .submit::<_, ciborium::Value>(&job, &json!({"sleep_ms": ms}))
                        .expect("submit")
                })
                .collect();
            for handle in handles {
                handle.result().await.expect("sleeps");
            }
            told
        });
        assert!(
            at(&told, "started", JobId(2)) < at(&told, "finished", JobId(0)),
            "{persistence:?}: job 2 started only after job 0 ended: {:?}",
            told.borrow()
        );
    }
}

fn quick_stop() -> offload::RunLimits {
    offload::RunLimits {
        grace: std::time::Duration::from_millis(50),
        ..offload::RunLimits::default()
    }
}

/// The jobs that start one after another as each running one is cancelled: no job ends by
/// itself (they sleep for minutes), so the order is the scheduler's alone, whatever the
/// machine's load. `first` have started already.
async fn starts_as_each_is_cancelled(
    queue: &Queue,
    told: &Told,
    first: usize,
    count: usize,
) -> Vec<u64> {
    let starts = || -> Vec<u64> {
        told.borrow()
            .iter()
            .filter(|(what, _)| *what == "started")
            .map(|(_, id)| id.0)
            .collect()
    };
    let mut seen = first;
    while seen < count {
        let running = starts()[seen - first];
        queue.cancel(JobId(running));
        while starts().len() <= seen {
            common::sleep(std::time::Duration::from_millis(5)).await;
        }
        seen += 1;
    }
    starts()
}

#[test]
fn a_high_priority_job_submitted_behind_a_thousand_starts_next() {
    for persistence in BOTH {
        let starts = on_main_context(|| async {
            let queue = Queue::with_max_running(2);
            let told = record(&queue);
            // Cancelled jobs go at once (diag sleeps through SIGTERM).
            let job = diag_job().persistence(persistence).limits(quick_stop());
            let mut handles = Vec::new();
            for _ in 0..1000 {
                let handle = queue
                    .submit::<_, ciborium::Value>(&job, &json!({"sleep_ms": 600_000}))
                    .expect("submit");
                handles.push(handle);
            }
            // Two run, two wait on deck (on workers); then the urgent one comes.
            started(&told, JobId(0)).await;
            started(&told, JobId(1)).await;
            let urgent = queue
                .submit::<_, ciborium::Value>(
                    &job.clone().priority(5),
                    &json!({"sleep_ms": 600_000}),
                )
                .expect("submit");
            assert_eq!(urgent.id(), JobId(1000));
            let starts = starts_as_each_is_cancelled(&queue, &told, 2, 5).await;
            queue.cancel_all();
            for handle in handles {
                let _ = handle.finished().await;
            }
            let _ = urgent.finished().await;
            starts
        });
        let mut first_two = starts[..2].to_vec();
        first_two.sort_unstable();
        assert_eq!(first_two, [0, 1], "{persistence:?}: {starts:?}");
        assert_eq!(
            &starts[2..5],
            &[1000, 2, 3],
            "{persistence:?}: the urgent job starts in the first slot that frees"
        );
    }
}

#[test]
fn jobs_of_one_priority_start_in_submission_order_and_run_next_goes_first() {
    for persistence in BOTH {
        let starts = on_main_context(|| async {
            let queue = Queue::with_max_running(1);
            let told = record(&queue);
            let job = diag_job().persistence(persistence).limits(quick_stop());
            let handles: Vec<_> = (0..12)
                .map(|i| {
                    queue
                        .submit::<_, ciborium::Value>(
                            &job,
                            &json!({"sleep_ms": 600_000, "echo": i}),
                        )
                        .expect("submit")
                })
                .collect();
            started(&told, JobId(0)).await;
            assert!(queue.run_next(JobId(9)), "job 9 is queued");
            assert_eq!(queue.priority(JobId(9)), Some(1));
            let starts = starts_as_each_is_cancelled(&queue, &told, 1, 8).await;
            queue.cancel_all();
            for handle in handles {
                let _ = handle.finished().await;
            }
            starts
        });
        assert_eq!(
            &starts[..8],
            &[0, 9, 1, 2, 3, 4, 5, 6],
            "{persistence:?}: run next, then the rest in submission order"
        );
    }
}

#[test]
fn a_batch_raised_with_run_next_overtakes_a_long_batch_in_its_own_order() {
    let starts = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let told = record(&queue);
        let job = diag_job()
            .persistence(Persistence::Never)
            .limits(quick_stop());
        let long: offload::Batch<usize, ciborium::Value> = offload::Batch::new(&queue);
        for i in 0..200 {
            long.submit(&job, &json!({"sleep_ms": 600_000}), i)
                .expect("submit");
        }
        started(&told, JobId(0)).await;
        // A preview batch of three comes after the 200 and is raised as a whole.
        let preview: offload::Batch<usize, ciborium::Value> = offload::Batch::new(&queue);
        for i in 0..3 {
            preview
                .submit(&job, &json!({"sleep_ms": 600_000}), i)
                .expect("submit");
        }
        assert_eq!(preview.run_next(), 3);
        let starts = starts_as_each_is_cancelled(&queue, &told, 1, 6).await;
        long.cancel();
        preview.cancel();
        while queue.counts().queued + queue.counts().running > 0 {
            common::sleep(std::time::Duration::from_millis(5)).await;
        }
        starts
    });
    assert_eq!(
        starts,
        [0, 200, 201, 202, 1, 2],
        "the raised batch starts next, in submission order, then the long one goes on"
    );
}

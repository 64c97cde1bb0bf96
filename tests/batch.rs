//! Batches: many jobs as one, with their own cancel, counts, progress, tags and results in
//! completion order; real processors.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ciborium::Value;
use common::{diag_job, on_main_context};
use offload::{Batch, Counts, FailureKind, Queue, QueueEvent};
use serde_json::json;

#[test]
fn results_come_in_completion_order_with_their_tags() {
    let (order, counts, after) = on_main_context(|| async {
        let queue = Queue::with_max_running(3);
        let batch: Batch<&'static str, Value> = Batch::new(&queue);
        let job = diag_job();
        for (tag, ms) in [("slow", 900), ("fast", 50), ("middle", 450)] {
            batch
                .submit(&job, &json!({"sleep_ms": ms, "echo": tag}), tag)
                .expect("submit");
        }
        let mut order = Vec::new();
        while let Some(ended) = batch.next().await {
            let echoed = ended.finished.result.expect("ok");
            // The tag comes back with the job's own result.
            assert_eq!(
                common::field(&echoed, "echo"),
                Some(&Value::Text(ended.tag.into()))
            );
            order.push(ended.tag);
        }
        let counts = batch.counts();
        let after = batch.next().await.is_none();
        (order, counts, after)
    });
    assert_eq!(order, ["fast", "middle", "slow"]);
    assert_eq!(
        counts,
        Counts {
            succeeded: 3,
            ..Counts::default()
        }
    );
    assert!(after, "the stream ends once every result was taken");
}

#[test]
fn cancelling_a_batch_leaves_the_other_batches_running() {
    let (cancelled, other, took) = on_main_context(|| async {
        let queue = Queue::with_max_running(6);
        let job = diag_job();
        let long: Batch<usize, Value> = Batch::new(&queue);
        let short: Batch<usize, Value> = Batch::new(&queue);
        for i in 0..4 {
            long.submit(&job, &json!({"sleep_ms": 120_000}), i)
                .expect("submit");
        }
        for i in 0..2 {
            short
                .submit(&job, &json!({"sleep_ms": 400, "echo": i}), i)
                .expect("submit");
        }
        let started = Instant::now();
        while long.counts().running < 4 {
            common::sleep(Duration::from_millis(10)).await;
        }
        long.cancel();
        let cancelled = long.finished().await;
        let other = short.finished().await;
        let mut kinds = Vec::new();
        while let Some(ended) = long.next().await {
            kinds.push(ended.finished.result.err().map(|e| e.kind));
        }
        assert_eq!(kinds, vec![Some(FailureKind::Cancelled); 4]);
        (cancelled, other, started.elapsed())
    });
    assert_eq!(
        (cancelled.cancelled, cancelled.total()),
        (4, 4),
        "{cancelled:?}"
    );
    assert_eq!((other.succeeded, other.total()), (2, 2), "{other:?}");
    // Far less than the long jobs' two minutes: they were stopped, not waited for.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(common::zombie_children().is_empty());
}

#[test]
fn counts_progress_and_tagged_events_follow_the_jobs() {
    let (midway, end, events) = on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        let batch: Batch<String, Value> = Batch::new(&queue);
        let events: Rc<RefCell<Vec<(String, &'static str)>>> = Rc::default();
        {
            let events = events.clone();
            batch.connect_events(move |tag, event| {
                let what = match event {
                    QueueEvent::Queued { .. } => "queued",
                    QueueEvent::Started { .. } => "started",
                    QueueEvent::Progress { .. } => "progress",
                    QueueEvent::Finished { error: None, .. } => "succeeded",
                    QueueEvent::Finished { .. } => "failed",
                    _ => "another event",
                };
                events.borrow_mut().push((tag.clone(), what));
            });
        }
        let job = diag_job();
        let input = json!({"sleep_ms": 1200, "progress_steps": 4});
        for name in ["a.png", "b.png", "c.png"] {
            batch.submit(&job, &input, name.to_owned()).expect("submit");
        }
        batch
            .submit(&job, &json!({"fail": "exit"}), "broken.png".to_owned())
            .expect("submit");
        // A job of another batch (or none) is not this batch's business.
        let _other = queue
            .submit::<_, Value>(&job, &json!({"echo": 1}))
            .expect("submit");
        // Two running with progress reported, the rest queued.
        let midway = loop {
            let (counts, progress) = (batch.counts(), batch.fraction());
            if counts.running == 2 && progress > 0.0 {
                break (counts, progress);
            }
            common::sleep(Duration::from_millis(5)).await;
        };
        let end = batch.finished().await;
        assert_eq!(batch.fraction(), 1.0);
        let events = events.borrow().clone();
        (midway, end, events)
    });
    let (counts, progress) = midway;
    assert_eq!((counts.queued, counts.total()), (2, 4), "{counts:?}");
    assert!(progress > 0.0 && progress < 0.5, "{progress}");
    assert_eq!(
        end,
        Counts {
            succeeded: 3,
            failed: 1,
            ..Counts::default()
        }
    );
    let of = |tag: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, what)| *what)
            .filter(|what| *what != "progress")
            .collect()
    };
    assert_eq!(of("a.png"), ["queued", "started", "succeeded"]);
    assert_eq!(of("broken.png"), ["queued", "started", "failed"]);
    assert!(events.iter().any(|(t, w)| t == "c.png" && *w == "progress"));
    assert_eq!(
        events.len(),
        events.iter().filter(|(t, _)| t.ends_with(".png")).count()
    );
}

#[test]
fn a_batch_calls_nothing_back_inside_submit_or_cancel() {
    let ended = on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let batch: Batch<u32, Value> = Batch::new(&queue);
        let app: Rc<RefCell<u32>> = Rc::default();
        {
            let app = app.clone();
            batch.connect_events(move |_, _| *app.borrow_mut() += 1);
        }
        let job = diag_job();
        {
            let _held = app.borrow_mut();
            for i in 0..3 {
                batch
                    .submit(&job, &json!({"sleep_ms": 5000}), i)
                    .expect("submit");
            }
            batch.cancel();
        }
        batch.finished().await
    });
    assert_eq!((ended.cancelled, ended.total()), (3, 3));
}

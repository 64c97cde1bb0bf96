//! The job model: a gio::ListModel of job objects whose properties follow real jobs, and the
//! list's counts as notifiable properties.

#![cfg(feature = "model")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{diag_job, on_main_context};
use offload::gio::prelude::*;
use offload::model::{JobList, JobObject};
use offload::{JobState, Queue, QueueEvent};
use serde_json::json;

fn rows(list: &JobList) -> Vec<JobObject> {
    (0..list.n_items())
        .filter_map(|i| list.item(i).and_downcast::<JobObject>())
        .collect()
}

#[test]
fn rows_and_counts_follow_a_batch_through_every_end_state() {
    on_main_context(|| async {
        let queue = Queue::with_max_running(2);
        let list = JobList::new(&queue);
        // What a progress bar bound to "fraction" and a label bound to "running" would see.
        let fractions: Rc<RefCell<Vec<f64>>> = Rc::default();
        {
            let fractions = fractions.clone();
            list.connect_fraction_notify(move |list| fractions.borrow_mut().push(list.fraction()));
        }
        let added: Rc<RefCell<Vec<u32>>> = Rc::default();
        {
            let added = added.clone();
            list.connect_items_changed(move |_, _, _, n| added.borrow_mut().push(n));
        }
        let job = diag_job();
        let inputs = [
            // Long enough that this thread sees it running, even on a loaded machine.
            json!({"sleep_ms": 1500, "progress_steps": 3, "echo": "ok"}),
            json!({"fail": "exit"}),
            json!({"sleep_ms": 20_000}),
            json!({"sleep_ms": 20_000}),
        ];
        let ids: Vec<_> = inputs
            .iter()
            .map(|input| {
                queue
                    .submit::<_, ciborium::Value>(&job, input)
                    .expect("submit")
                    .id()
            })
            .collect();
        // Nothing is told inside submit: the rows come from the queue's dispatch.
        assert_eq!(list.n_items(), 0);
        while list.n_items() < 4 {
            common::sleep(Duration::from_millis(5)).await;
        }
        // One change for the four rows told in one dispatch.
        assert_eq!(*added.borrow(), [4]);
        assert_eq!(list.total(), 4);
        let all = rows(&list);
        assert_eq!(
            all.iter().map(JobObject::job_id).collect::<Vec<_>>(),
            ids,
            "rows in submission order"
        );
        assert!(all.iter().all(|row| row.processor() == "diag"));

        // The first job runs and reports progress with a message.
        let first = list.job(ids[0]).expect("row");
        while !(first.state() == JobState::Running && first.progress() > 0.0) {
            common::sleep(Duration::from_millis(5)).await;
        }
        assert!(first.pid() > 0);
        assert!(first.message().starts_with("step"), "{}", first.message());
        // The second fails at once; a long one takes its slot.
        let second = list.job(ids[1]).expect("row");
        while second.state() != JobState::Failed {
            common::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(second.failure_kind(), "failed");
        assert!(
            second.reason().contains("exited with code"),
            "{}",
            second.reason()
        );
        while first.state() != JobState::Succeeded {
            common::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(first.progress(), 1.0);
        assert!(first.elapsed_ms() >= 1500.0, "{}", first.elapsed_ms());
        assert!(first.peak_rss() > 0);
        while list.running() < 2 {
            common::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((list.queued(), list.running()), (0, 2));
        // A timer makes the running rows' elapsed time live.
        common::sleep(Duration::from_millis(50)).await;
        list.refresh_elapsed();
        let long = list.job(ids[2]).expect("row");
        assert!(long.elapsed_ms() > 0.0, "{}", long.elapsed_ms());
        queue.cancel_all();
        while list.cancelled() < 2 {
            common::sleep(Duration::from_millis(5)).await;
        }
        for id in &ids[2..] {
            let row = list.job(*id).expect("row");
            assert_eq!(row.state(), JobState::Cancelled);
            assert_eq!(row.failure_kind(), "cancelled");
        }
        assert_eq!(
            (
                list.succeeded(),
                list.failed(),
                list.cancelled(),
                list.running()
            ),
            (1, 1, 2, 0)
        );
        assert_eq!(list.fraction(), 1.0);
        let fractions = fractions.borrow().clone();
        // A bound progress bar only ever moves forward.
        assert!(
            fractions.windows(2).all(|w| w[0] <= w[1] + 1e-9),
            "{fractions:?}"
        );
        assert!(
            fractions.iter().any(|f| *f > 0.0 && *f < 1.0),
            "{fractions:?}"
        );

        // Removing rows: the counts are of the rows left.
        list.remove_finished(&[ids[1]]);
        assert_eq!((list.n_items(), list.failed(), list.total()), (3, 0, 3));
        list.clear_finished();
        assert_eq!((list.n_items(), list.total(), list.succeeded()), (0, 0, 0));
    });
}

#[test]
fn a_row_is_there_when_its_job_is_told_queued() {
    on_main_context(|| async {
        let queue = Queue::with_max_running(1);
        let list = JobList::new(&queue);
        let seen: Rc<RefCell<Vec<bool>>> = Rc::default();
        {
            // An observer connected after the list: by its Queued event the row exists.
            let (list, seen) = (list.clone(), seen.clone());
            queue.connect_events(move |event| {
                if let QueueEvent::Queued { id, .. } = event {
                    seen.borrow_mut().push(list.job(*id).is_some());
                }
            });
        }
        let job = diag_job();
        let handle = queue
            .submit::<_, ciborium::Value>(&job, &json!({"echo": 1}))
            .expect("submit");
        let finished = handle.finished().await;
        assert!(finished.result.is_ok());
        assert_eq!(*seen.borrow(), [true]);
        let row = list.job(finished.id).expect("row");
        // The result reaches the handle before the list hears Finished: wait for it.
        while row.state() != JobState::Succeeded {
            common::sleep(Duration::from_millis(5)).await;
        }
    });
}

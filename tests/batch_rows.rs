//! A batch for an embedder's widgets, under Xvfb: its rows as a `gio::ListModel` behind a real
//! GTK list, its counts and fraction as properties bound to a real progress bar and label, a
//! Cancel that leaves the bar where the work got to, and an observer that can be disconnected.
//! Real processors; every wait is for a condition, with a generous bound.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ciborium::Value;
use common::diag_job;
use gtk::glib;
use gtk::prelude::*;
use offload::model::JobObject;
use offload::{Batch, Counts, JobId, JobState, Queue, QueueEvent};
use serde_json::json;

/// Turns the default main context (GTK's) until `done`, or gives `false` after `timeout`.
fn run_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let context = glib::MainContext::default();
    let until = Instant::now() + timeout;
    while !done() {
        if Instant::now() > until {
            return false;
        }
        if !context.iteration(false) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    true
}

/// The rows a GTK list model over `model` gives, as a view sees them.
fn rows(model: &impl IsA<gtk::gio::ListModel>) -> Vec<JobObject> {
    (0..model.n_items())
        .filter_map(|i| model.item(i).and_downcast::<JobObject>())
        .collect()
}

#[gtk::test]
fn rows_follow_the_batch_and_a_cancel_does_not_fill_the_bar() {
    let queue = Queue::with_max_running(1);
    let batch: Batch<String, Value> = Batch::with_labels(&queue, |name| format!("{name}.png"));
    // The widgets an embedder binds: a list of the batch's jobs, a bar, a label.
    let list = gtk::NoSelection::new(Some(batch.rows()));
    let bar = gtk::ProgressBar::new();
    batch
        .rows()
        .bind_property("fraction", &bar, "fraction")
        .build();
    let cancelled = gtk::Label::new(None);
    batch
        .rows()
        .bind_property("cancelled", &cancelled, "label")
        .transform_to(|_, n: u32| Some(n.to_string()))
        .sync_create()
        .build();

    let job = diag_job();
    let mut ids: Vec<JobId> = Vec::new();
    for name in ["a", "b"] {
        ids.push(
            batch
                .submit(&job, &json!({"echo": name}), name.to_owned())
                .expect("submit"),
        );
    }
    for name in ["c", "d", "e"] {
        ids.push(
            batch
                .submit(&job, &json!({"sleep_ms": 120_000}), name.to_owned())
                .expect("submit"),
        );
    }
    // A job of the queue outside the batch has no row in it.
    let outsider = queue
        .submit::<_, Value>(&job, &json!({"echo": "x"}))
        .expect("submit");
    assert_eq!(list.n_items(), 0, "rows join from the queue's dispatch");
    assert!(run_until(Duration::from_secs(5), || list.n_items() == 5));
    let listed = rows(&list);
    assert_eq!(
        listed.iter().map(JobObject::label).collect::<Vec<_>>(),
        ["a.png", "b.png", "c.png", "d.png", "e.png"]
    );
    assert_eq!(
        listed.iter().map(JobObject::job_id).collect::<Vec<_>>(),
        ids,
        "in submission order"
    );
    assert!(!listed.iter().any(|row| row.job_id() == outsider.id()));

    // Two done and "c" running: the rows and the list's properties say so.
    assert!(run_until(Duration::from_secs(30), || {
        let rows = rows(&list);
        rows[0].state() == JobState::Succeeded
            && rows[1].state() == JobState::Succeeded
            && rows[2].state() == JobState::Running
    }));
    let rows_now = batch.rows();
    assert_eq!((rows_now.succeeded(), rows_now.running()), (2, 1));
    assert_eq!((rows_now.queued(), rows_now.total()), (2, 5));
    assert!((bar.fraction() - 0.4).abs() < 1e-9, "{}", bar.fraction());

    batch.cancel();
    assert!(run_until(Duration::from_secs(30), || batch
        .counts()
        .is_done()));
    assert!(run_until(Duration::from_secs(5), || {
        rows(&list)[2..]
            .iter()
            .all(|row| row.state() == JobState::Cancelled)
    }));
    let end = Counts {
        succeeded: 2,
        cancelled: 3,
        ..Counts::default()
    };
    assert_eq!(batch.counts(), end);
    assert_eq!(batch.rows().counts(), end);
    assert_eq!(cancelled.label(), "3");
    // The bar stays where the work got to: two jobs of five, not 100%.
    assert!(
        (batch.fraction() - 0.4).abs() < 1e-9,
        "{}",
        batch.fraction()
    );
    assert!((bar.fraction() - 0.4).abs() < 1e-9, "{}", bar.fraction());
    assert_eq!(list.n_items(), 5, "ended rows stay");
}

#[gtk::test]
fn a_disconnected_observer_hears_nothing_more() {
    let queue = Queue::with_max_running(1);
    let batch: Batch<u32, Value> = Batch::new(&queue);
    let (heard_first, heard_second): (Rc<Cell<u32>>, Rc<RefCell<Vec<u32>>>) = Default::default();
    let first = {
        let heard = heard_first.clone();
        batch.connect_events(move |_, _| heard.set(heard.get() + 1))
    };
    {
        let heard = heard_second.clone();
        batch.connect_events(move |tag, event| {
            if let QueueEvent::Finished { .. } = event {
                heard.borrow_mut().push(*tag);
            }
        });
    }
    let job = diag_job();
    batch.submit(&job, &json!({"echo": 0}), 0).expect("submit");
    assert!(run_until(Duration::from_secs(30), || batch
        .counts()
        .is_done()));
    let before = heard_first.get();
    assert!(before >= 3, "queued, started and finished: {before}");

    batch.disconnect(first);
    for tag in 1..=2 {
        batch
            .submit(&job, &json!({"echo": tag}), tag)
            .expect("submit");
    }
    assert!(run_until(Duration::from_secs(30), || batch
        .counts()
        .is_done()));
    assert_eq!(
        *heard_second.borrow(),
        [0, 1, 2],
        "the other observer goes on"
    );
    assert_eq!(heard_first.get(), before, "nothing after its disconnect");
}

/// A job the caller submitted itself joins a batch: counted, listed, cancelled with it; its
/// result stays with the caller's handle. A succeeded job that fails after all moves the
/// counts and its row.
#[gtk::test]
fn adopted_jobs_count_and_a_late_failure_moves_the_counts() {
    let queue = Queue::with_max_running(1);
    let batch: Batch<String, Value> = Batch::with_labels(&queue, Clone::clone);
    let job = diag_job();
    let handle = queue
        .submit::<_, Value>(&job, &json!({"echo": "mine"}))
        .expect("submit");
    let id = handle.id();
    assert!(batch.adopt(id, "mine".to_owned()));
    assert!(!batch.adopt(id, "twice".to_owned()), "once");
    let result: Rc<RefCell<Option<bool>>> = Rc::default();
    {
        let result = result.clone();
        handle.on_finished(move |finished| *result.borrow_mut() = Some(finished.result.is_ok()));
    }
    assert!(run_until(Duration::from_secs(30), || batch
        .counts()
        .is_done()
        && result.borrow().is_some()));
    assert_eq!(*result.borrow(), Some(true), "the caller's handle has it");
    assert!(
        !batch.adopt(id, "ended".to_owned()),
        "an ended job is not adopted"
    );
    assert_eq!(batch.counts().succeeded, 1);
    let row = batch.rows().job(id).expect("its row");
    assert_eq!(
        (row.label(), row.state()),
        ("mine".into(), JobState::Succeeded)
    );

    let error = offload::JobError::new(offload::FailureKind::OutputNotWritten, "disk full");
    assert!(batch.fail(id, &error));
    assert!(!batch.fail(id, &error), "only a job that succeeded");
    assert_eq!((batch.counts().succeeded, batch.counts().failed), (0, 1));
    assert_eq!(batch.rows().failed(), 1);
    assert_eq!(row.state(), JobState::Failed);
    assert_eq!(batch.fraction(), 1.0, "a failed job's work is done");
}

//! A batch's rows: the `gio::ListModel` a [`Batch`](crate::Batch) is, for an embedder's
//! per-batch widgets (a list of its jobs, a bar bound to its `fraction`, a label to its counts).
//!
//! The batch feeds it: a row joins when the queue tells of its job (rows told of in one
//! dispatch join with one `items-changed`), its properties change with the job's events, and
//! the list's counts and fraction are the batch's own, set with them. So the list changes only
//! from the queue's dispatch on the main context, never inside a call the caller made.

use std::cell::Cell;

use gio::prelude::*;
use gio::subclass::prelude::*;
use glib::Properties;

use super::{count, notify_counts, JobObject};
use crate::outcome::JobError;
use crate::queue::QueueEvent;
use crate::{Counts, JobId};

mod imp {
    use super::*;

    #[derive(Default, Properties)]
    #[properties(wrapper_type = super::BatchList)]
    pub struct BatchList {
        pub(in crate::model) rows: super::super::rows::Rows,
        /// The batch's jobs by state: the list's `queued`, `running`, `succeeded`, `failed`,
        /// `cancelled` and `total` properties.
        #[property(name = "queued", get = |l: &Self| count(l.counts.get().queued), type = u32)]
        #[property(name = "running", get = |l: &Self| count(l.counts.get().running), type = u32)]
        #[property(name = "succeeded", get = |l: &Self| count(l.counts.get().succeeded), type = u32)]
        #[property(name = "failed", get = |l: &Self| count(l.counts.get().failed), type = u32)]
        #[property(name = "cancelled", get = |l: &Self| count(l.counts.get().cancelled), type = u32)]
        #[property(name = "total", get = |l: &Self| count(l.counts.get().total()), type = u32)]
        pub counts: Cell<Counts>,
        /// The share of the batch's work done, from 0.0 to 1.0: see
        /// [`Batch::fraction`](crate::Batch::fraction).
        #[property(get, minimum = 0.0, maximum = 1.0)]
        pub fraction: Cell<f64>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for BatchList {
        const NAME: &'static str = "OffloadBatchList";
        type Type = super::BatchList;
        type Interfaces = (gio::ListModel,);
    }

    #[glib::derived_properties]
    impl ObjectImpl for BatchList {}

    impl ListModelImpl for BatchList {
        fn item_type(&self) -> glib::Type {
            JobObject::static_type()
        }

        fn n_items(&self) -> u32 {
            self.rows.n_items()
        }

        fn item(&self, position: u32) -> Option<glib::Object> {
            self.rows.item(position)
        }
    }
}

glib::wrapper! {
    /// One batch's jobs, in submission order, as a `gio::ListModel` of [`JobObject`]s whose
    /// `label` is the caller's tag as the batch labels it; its properties are the batch's
    /// counts and fraction. [`Batch::rows`](crate::Batch::rows) gives it.
    pub struct BatchList(ObjectSubclass<imp::BatchList>)
        @implements gio::ListModel;
}

impl BatchList {
    pub(crate) fn new() -> Self {
        glib::Object::new()
    }

    /// The batch's jobs by state, as the count properties give them one by one.
    pub fn counts(&self) -> Counts {
        self.imp().counts.get()
    }

    /// The row of job `id`, once the queue has told of it.
    pub fn job(&self, id: JobId) -> Option<JobObject> {
        self.imp().rows.get(id)
    }

    /// Applies one of the batch's events to its row (`label`: the row's, for a new one), and
    /// the batch's counts and fraction after it.
    pub(crate) fn on_event(&self, event: &QueueEvent, label: &str, counts: Counts, fraction: f64) {
        let imp = self.imp();
        if !matches!(event, QueueEvent::Queued { .. }) {
            // A row changes only once it is listed: views and the counts agree.
            self.flush_pending();
        }
        let _guard = self.freeze_notify();
        match event {
            QueueEvent::Queued { id, processor } => {
                let row = JobObject::new(*id, processor);
                row.set_label(label);
                // After this dispatch: every row it tells of joins the list at once.
                imp.rows.add(row, self, Self::flush_pending);
            }
            QueueEvent::Started { id, pid, worker } => {
                if let Some(row) = self.job(*id) {
                    row.started(*pid, *worker);
                }
            }
            QueueEvent::Progress {
                id,
                fraction,
                message,
            } => {
                if let Some(row) = self.job(*id) {
                    row.progressed(*fraction, message.as_deref());
                }
            }
            QueueEvent::Finished { id, error, stats } => {
                if let Some(row) = self.job(*id) {
                    row.finished(error.as_ref(), stats);
                }
            }
        }
        self.set_summary(counts, fraction);
    }

    /// Job `id`, which succeeded, failed after all (see [`Batch::fail`](crate::Batch::fail)).
    pub(crate) fn failed_after(&self, id: JobId, error: &JobError, counts: Counts, fraction: f64) {
        self.flush_pending();
        let _guard = self.freeze_notify();
        if let Some(row) = self.job(id) {
            row.failed_after(error);
        }
        self.set_summary(counts, fraction);
    }

    fn set_summary(&self, counts: Counts, fraction: f64) {
        let imp = self.imp();
        let before = imp.counts.replace(counts);
        notify_counts(self.upcast_ref(), before, counts);
        let fraction = fraction.clamp(0.0, 1.0);
        if imp.fraction.replace(fraction) != fraction {
            self.notify_fraction();
        }
    }

    /// Appends the pending rows, with one `items-changed`.
    fn flush_pending(&self) {
        if let Some((position, added)) = self.imp().rows.flush() {
            self.items_changed(position, 0, added);
        }
    }
}

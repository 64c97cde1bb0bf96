//! The queue's events and results, beside the rows (which the job model keeps): the records
//! for the inspector and retries, the batches' counts, the mosaic's tiles, and when the
//! window is idle.

use super::*;

impl Window {
    /// Changes a job's record in place; the inspector follows if it shows the job.
    pub(super) fn update_record(&self, id: JobId, change: impl FnOnce(&mut JobRecord)) {
        let changed = match self.imp().records.borrow_mut().get_mut(&id) {
            Some(record) => {
                change(record);
                true
            }
            None => false,
        };
        if changed {
            self.refresh_inspector(id);
        }
    }

    /// The tile a demo job renders.
    pub(super) fn tile(&self, id: JobId) -> Option<Tile> {
        match &self.imp().records.borrow().get(&id)?.kind {
            JobKind::Tile(tile) => Some(tile.clone()),
            JobKind::Batch { .. } | JobKind::File { .. } => None,
        }
    }

    fn batch_of(&self, id: JobId) -> Option<Rc<AppBatch>> {
        self.imp().records.borrow().get(&id)?.batch.clone()
    }

    /// What the window does with the queue's events besides the rows (which the job model
    /// keeps): the rows' labels, the records for the inspector, the batches, the mosaic's
    /// tiles, the unattended steps.
    pub(super) fn on_queue_event(&self, event: &QueueEvent) {
        match event {
            QueueEvent::Queued { id, .. } => {
                let label = self.imp().records.borrow().get(id).map(JobRecord::label);
                if let (Some(job), Some(label)) = (self.job(*id), label) {
                    job.set_label(&label);
                }
            }
            QueueEvent::Progress { .. } => {}
            QueueEvent::Started { id, pid, worker } => {
                self.update_record(*id, |r| {
                    r.started_at = Some(Instant::now());
                    r.stats.pid = Some(*pid);
                    r.stats.worker = *worker;
                });
                if let Some(tile) = self.tile(*id) {
                    self.imp()
                        .mosaic_view
                        .set_tile_state(tile.x, tile.y, TileState::Running);
                }
                self.imp().filter_stale.set(true);
            }
            QueueEvent::Finished { id, error, stats } => {
                self.update_record(*id, |r| {
                    r.stats = stats.clone();
                    r.error = error.clone();
                });
                if error.is_some() {
                    if let Some(tile) = self.tile(*id) {
                        self.imp()
                            .mosaic_view
                            .set_tile_state(tile.x, tile.y, TileState::Failed);
                    }
                }
                self.imp().filter_stale.set(true);
                self.maybe_screenshot_midway();
                if !self.imp().file_feeds.borrow().is_empty() {
                    self.feed_files();
                }
                self.check_batches();
                // The queue hands a job's result over before it tells `Finished`: the last
                // job's end is where the window finds itself idle.
                if self.is_idle() {
                    self.refresh_status();
                    self.when_idle();
                }
            }
        }
    }

    /// A job's result has been handled (`wrote`: its output file written).
    pub(super) fn result_arrived(&self, id: JobId, wrote: bool) {
        let imp = self.imp();
        imp.outstanding.set(imp.outstanding.get().saturating_sub(1));
        if let Some(batch) = self.batch_of(id) {
            batch.handled(wrote);
        }
        self.check_batches();
        if self.is_idle() {
            self.refresh_status();
            self.when_idle();
        }
    }

    pub(super) fn on_value_finished(&self, finished: Finished<ciborium::Value>) {
        if let Ok(value) = finished.result {
            self.update_record(finished.id, |r| {
                r.output = Some(JobOutput::Value(Rc::new(value)))
            });
        }
        self.result_arrived(finished.id, false);
    }
}

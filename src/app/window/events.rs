//! The queue's events and results, beside the rows (which the job model keeps): the records
//! for the inspector and retries, the mosaic's tiles, and when the window is idle.

use super::*;

impl Window {
    /// Changes a job's record in place.
    pub(super) fn update_record(&self, id: JobId, change: impl FnOnce(&mut JobRecord)) {
        if let Some(record) = self.imp().records.borrow_mut().get_mut(&id) {
            change(record);
        }
    }

    /// The tile a demo job renders.
    pub(super) fn tile(&self, id: JobId) -> Option<Tile> {
        match &self.imp().records.borrow().get(&id)?.kind {
            JobKind::Tile(tile) => Some(tile.clone()),
            JobKind::Batch | JobKind::File { .. } => None,
        }
    }

    /// What the window does with the queue's events besides the rows (which the job model
    /// keeps): the records for the inspector, the mosaic's tiles, the rate, the unattended
    /// steps.
    pub(super) fn on_queue_event(&self, event: &QueueEvent) {
        match event {
            QueueEvent::Queued { .. } | QueueEvent::Progress { .. } => {}
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
                self.imp()
                    .finish_times
                    .borrow_mut()
                    .push_back(Instant::now());
                self.maybe_screenshot_midway();
                if !self.imp().file_feeds.borrow().is_empty() {
                    self.feed_files();
                }
                // The queue hands a job's result over before it tells `Finished`: the last
                // job's end is where the window finds itself idle.
                if self.is_idle() {
                    self.refresh_status();
                    self.when_idle();
                }
            }
        }
    }

    pub(super) fn result_arrived(&self) {
        let imp = self.imp();
        imp.outstanding.set(imp.outstanding.get().saturating_sub(1));
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
        self.result_arrived();
    }
}

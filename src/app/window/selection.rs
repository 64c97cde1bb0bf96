//! The job list's selection and the actions on jobs: cancel, retry, clear.

use super::*;

impl Window {
    pub(super) fn selected_jobs(&self) -> Vec<JobObject> {
        let Some(selection) = self.imp().selection.borrow().clone() else {
            return Vec::new();
        };
        let bits = selection.selection();
        (0..bits.size())
            .filter_map(|i| selection.item(bits.nth(i as u32)))
            .filter_map(|o| o.downcast::<JobObject>().ok())
            .collect()
    }

    pub(super) fn show_selected(&self) {
        let inspector = &self.imp().inspector;
        match self.selected_jobs().first() {
            Some(job) => {
                inspector.show_job(job, self.record(job.job_id()));
                inspector.set_visible(true);
            }
            None => inspector.set_visible(false),
        }
    }

    /// Selects exactly the jobs with these ids in the list.
    pub fn select_jobs(&self, ids: &[JobId]) {
        let Some(selection) = self.imp().selection.borrow().clone() else {
            return;
        };
        selection.unselect_all();
        for i in 0..selection.n_items() {
            let is_wanted = selection
                .item(i)
                .and_downcast::<JobObject>()
                .is_some_and(|j| ids.contains(&j.job_id()));
            if is_wanted {
                selection.select_item(i, false);
            }
        }
    }

    pub(super) fn cancel_selected(&self) {
        let queue = self.queue();
        for job in self.selected_jobs() {
            queue.cancel(job.job_id());
        }
    }

    pub(super) fn retry_failed(&self) {
        let jobs = self.jobs();
        let mut failed: Vec<JobId> = (0..jobs.n_items())
            .filter_map(|i| jobs.item(i).and_downcast::<JobObject>())
            .filter(|j| j.state() == state::FAILED || j.state() == state::CANCELLED)
            .map(|j| j.job_id())
            .collect();
        failed.sort_by_key(|id| id.0);
        jobs.remove_finished(&failed);
        for id in failed {
            let Some(record) = self.imp().records.borrow_mut().remove(&id) else {
                continue;
            };
            if let JobKind::Tile(tile) = &record.kind {
                self.imp()
                    .mosaic_view
                    .set_tile_state(tile.x, tile.y, TileState::Queued);
            }
            match record.kind {
                JobKind::File { path, jobs } => {
                    self.add_file_paths(record.processor, jobs, vec![path]);
                }
                kind => {
                    self.submit(record.processor, kind, record.input);
                }
            }
        }
    }

    pub(super) fn clear_finished(&self) {
        let jobs = self.jobs();
        jobs.clear_finished();
        self.imp()
            .records
            .borrow_mut()
            .retain(|id, _| jobs.job(*id).is_some());
    }
}

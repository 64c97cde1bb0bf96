//! The job list's selection and the actions on jobs: cancel, retry, clear (with undo), and
//! which of them can do something now.

use super::*;

/// How long the Undo of Clear Finished is offered.
const UNDO_SECONDS: u32 = 6;

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

    /// Shows the first selected job in the inspector, or hides it when nothing (still listed)
    /// is selected: a job the filter hid or that was cleared leaves the inspector.
    pub(super) fn show_selected(&self) {
        let imp = self.imp();
        let inspector = &imp.inspector;
        match self.selected_jobs().first() {
            Some(job) => {
                if inspector.shown_id() != Some(job.id()) {
                    inspector.show_job(job, self.record(job.job_id()));
                    trace(&format!("inspector shows: {}", job.label()));
                }
                imp.inspector_flap.set_reveal_flap(true);
            }
            None => {
                inspector.clear();
                imp.inspector_flap.set_reveal_flap(false);
            }
        }
        self.update_actions();
    }

    /// Shows job `id` again in the inspector if it is the one shown: its state, result or
    /// output changed.
    pub(super) fn refresh_inspector(&self, id: JobId) {
        let inspector = &self.imp().inspector;
        if inspector.shown_id() == Some(id.0) {
            if let Some(job) = self.job(id) {
                inspector.show_job(&job, self.record(id));
            }
        }
    }

    /// Makes each action on jobs sensitive only when it can do something.
    pub(super) fn update_actions(&self) {
        let counts = self.state_counts();
        let waiting = self.imp().unsubmitted.get() > 0;
        let selected = self.selected_jobs().iter().any(|job| !job.is_finished());
        self.action_set_enabled("win.cancel-selected", selected);
        self.action_set_enabled(
            "win.cancel-all",
            counts.queued + counts.running > 0 || waiting,
        );
        self.action_set_enabled("win.retry-failed", counts.failed + counts.cancelled > 0);
        let cleared = self.imp().cleared.borrow().len();
        let finished = counts.succeeded + counts.failed + counts.cancelled;
        self.action_set_enabled("win.clear-finished", finished > cleared);
        self.action_set_enabled("win.cancel-batch", self.current_batch_running());
        self.action_set_enabled(
            "win.copy-command",
            !self.imp().inspector.command_line().is_empty(),
        );
    }

    /// How many rows the list shows (after the state filter and Clear Finished).
    pub fn listed_jobs(&self) -> u32 {
        self.imp()
            .selection
            .borrow()
            .as_ref()
            .map_or(0, |s| s.n_items())
    }

    /// Shows only the jobs in `state`, or all of them (`None`), as the state filter does.
    pub fn set_state_filter(&self, state: Option<JobState>) {
        self.imp().state_filter.set_selected(filter_position(state));
    }

    /// The state the filter shows, `None` for all jobs.
    pub fn state_filter(&self) -> Option<JobState> {
        STATE_FILTER
            .get(self.imp().state_filter.selected() as usize)
            .copied()
            .flatten()
    }

    /// Whether the inspector shows a job.
    pub fn inspector_revealed(&self) -> bool {
        self.imp().inspector_flap.reveals_flap()
    }

    /// Whether the window's buttons for `action` ("win.cancel-all") are sensitive: what a
    /// person sees.
    pub fn action_sensitive(&self, action: &str) -> Option<bool> {
        fn find(widget: &gtk::Widget, action: &str) -> Option<bool> {
            if let Some(actionable) = widget.dynamic_cast_ref::<gtk::Actionable>() {
                if actionable.action_name().as_deref() == Some(action) {
                    return Some(widget.is_sensitive());
                }
            }
            let mut child = widget.first_child();
            while let Some(widget) = child {
                if let Some(found) = find(&widget, action) {
                    return Some(found);
                }
                child = widget.next_sibling();
            }
            None
        }
        find(self.upcast_ref(), action)
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

    /// Cancels everything: every batch stops submitting what waits, and every job in the
    /// queue is cancelled.
    pub(super) fn cancel_all(&self) {
        let queue = self.queue();
        for batch in self.imp().batches.borrow().iter() {
            batch.cancel();
        }
        self.drop_cancelled_feeds();
        queue.cancel_all();
        self.refresh_status();
    }

    pub(super) fn retry_failed(&self) {
        let jobs = self.jobs();
        let mut failed: Vec<JobId> = (0..jobs.n_items())
            .filter_map(|i| jobs.item(i).and_downcast::<JobObject>())
            .filter(|j| matches!(j.state(), JobState::Failed | JobState::Cancelled))
            .map(|j| j.job_id())
            .collect();
        if failed.is_empty() {
            return;
        }
        failed.sort_by_key(|id| id.0);
        jobs.remove_finished(&failed);
        let records: Vec<JobRecord> = {
            let mut all = self.imp().records.borrow_mut();
            failed.iter().filter_map(|id| all.remove(id)).collect()
        };
        let Some(first) = records.first() else {
            return;
        };
        let batch = Rc::new(AppBatch::new(
            &self.queue(),
            format!(
                "Retrying {}",
                crate::app::batch::count(records.len(), "job", "jobs")
            ),
            &first.processor,
            first
                .batch
                .as_ref()
                .map(|b| b.params().to_vec())
                .unwrap_or_default(),
            first
                .batch
                .as_ref()
                .and_then(|b| b.output_dir().map(Into::into)),
        ));
        self.start_batch(&batch);
        batch.add_waiting(records.len());
        for record in records {
            if let JobKind::Tile(tile) = &record.kind {
                self.imp()
                    .mosaic_view
                    .set_tile_state(tile.x, tile.y, TileState::Queued);
            }
            match record.kind {
                JobKind::File { path, jobs } => {
                    batch.drop_waiting(1);
                    self.add_file_paths(record.processor, jobs, &batch, vec![path]);
                }
                kind => {
                    self.submit(record.processor, kind, record.input, &batch);
                }
            }
        }
        self.refilter();
    }

    /// Takes the finished jobs out of the list, with a toast to undo it for a few seconds;
    /// then they are gone.
    pub(super) fn clear_finished(&self) {
        let imp = self.imp();
        let jobs = self.jobs();
        let ids: Vec<u64> = (0..jobs.n_items())
            .filter_map(|i| jobs.item(i).and_downcast::<JobObject>())
            .filter(|j| j.is_finished() && !imp.cleared.borrow().contains(&j.id()))
            .map(|j| j.id())
            .collect();
        if ids.is_empty() {
            return;
        }
        imp.cleared.borrow_mut().extend(ids.iter().copied());
        self.refilter();
        self.show_list_or_empty();
        let toast = adw::Toast::builder()
            .title(format!(
                "{} cleared",
                crate::app::batch::count(ids.len(), "job", "jobs")
            ))
            .button_label("_Undo")
            .timeout(UNDO_SECONDS)
            .build();
        let undone = Rc::new(Cell::new(false));
        toast.connect_button_clicked(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[strong]
            undone,
            #[strong]
            ids,
            move |_| {
                undone.set(true);
                let mut cleared = window.imp().cleared.borrow_mut();
                for id in &ids {
                    cleared.remove(id);
                }
                drop(cleared);
                window.refilter();
                window.show_list_or_empty();
            }
        ));
        toast.connect_dismissed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| {
                if !undone.get() {
                    window.forget_cleared(&ids);
                }
            }
        ));
        imp.toasts.add_toast(toast);
    }

    /// Removes cleared rows for good, with their records.
    fn forget_cleared(&self, ids: &[u64]) {
        let imp = self.imp();
        {
            let mut cleared = imp.cleared.borrow_mut();
            for id in ids {
                cleared.remove(id);
            }
        }
        let ids: Vec<JobId> = ids.iter().map(|id| JobId(*id)).collect();
        let jobs = self.jobs();
        jobs.remove_finished(&ids);
        imp.records
            .borrow_mut()
            .retain(|id, _| jobs.job(*id).is_some());
        self.show_list_or_empty();
        self.update_actions();
    }
}

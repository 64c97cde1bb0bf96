//! The status bar: the current batch's progress, time left and counts, with its own Cancel;
//! refreshed by a tick, which also runs the state filter again when rows changed state.

use super::*;

use crate::app::batch::count;

impl Window {
    pub(super) fn on_tick(&self) {
        // Only running jobs change on their own; the model looks at those alone.
        self.jobs().refresh_elapsed();
        if self.imp().filter_stale.get() && self.imp().state_filter.selected() != 0 {
            self.refilter();
        }
        self.refresh_status();
    }

    /// Updates the status bar: the batch shown, its progress and time left, its counts.
    pub fn refresh_status(&self) {
        let imp = self.imp();
        let paused = imp.queue.borrow().as_ref().is_some_and(Queue::is_paused);
        let batch = self.current_batch();
        match &batch {
            Some(batch) => {
                let others = self
                    .running_batches()
                    .saturating_sub(usize::from(!batch.is_done()));
                let more = if others > 0 {
                    format!(" (and {} more)", count(others, "batch", "batches"))
                } else {
                    String::new()
                };
                imp.batch_label.set_label(&format!(
                    "{}{more} · {}",
                    batch.title(),
                    batch.progress_text(paused)
                ));
                imp.overall_progress.set_fraction(batch.fraction());
                let counts = batch.counts();
                let waiting = counts.queued + batch.waiting();
                let mut parts = Vec::new();
                if counts.running > 0 {
                    parts.push(format!("{} running", counts.running));
                }
                if waiting > 0 {
                    parts.push(format!("{waiting} waiting"));
                }
                parts.push(format!("{} done", counts.succeeded));
                if counts.failed > 0 {
                    parts.push(format!("{} failed", counts.failed));
                }
                if counts.cancelled > 0 {
                    parts.push(format!("{} cancelled", counts.cancelled));
                }
                let rate = batch.rate();
                if rate > 0.0 && !batch.is_done() {
                    parts.push(format!("{rate:.1} jobs/s"));
                }
                imp.counts_label.set_label(&parts.join(" · "));
            }
            None => {
                imp.batch_label.set_label(if paused {
                    "Paused: new jobs wait"
                } else {
                    "Ready"
                });
                imp.overall_progress.set_fraction(0.0);
                imp.counts_label
                    .set_label("Choose what to run (F9), then add a folder or drop files");
            }
        }
        self.describe_empty_page();
        let running = batch
            .as_ref()
            .is_some_and(|b| !b.is_done() && !b.is_cancelled());
        imp.cancel_batch_button.set_visible(running);
        let spinning = self.state_counts().running > 0 && !paused;
        imp.spinner.set_spinning(spinning);
        imp.spinner.set_visible(spinning);
        self.update_actions();
    }

    /// The empty page says what a drop or Add Folder... will do, and where the outputs go.
    fn describe_empty_page(&self) {
        let imp = self.imp();
        if imp.jobs_stack.visible_child_name().as_deref() != Some("empty") {
            return;
        }
        let text = match self.selected_processor() {
            Some((processor, Some(description))) if description.files.is_some() => format!(
                "{}, into {}. Change it in What to Run (F9).",
                super::processors::action_phrase(
                    processor.name(),
                    &description,
                    &self.form_values()
                ),
                imp.output_row.subtitle().unwrap_or_default()
            ),
            _ => "Choose an action that works on files in What to Run (F9)".to_owned(),
        };
        if imp.empty_page.description().as_deref() != Some(text.as_str()) {
            imp.empty_page.set_description(Some(&text));
        }
    }

    /// The status bar's texts (for tests): the batch line and the counts line.
    pub fn status_text(&self) -> (String, String) {
        let imp = self.imp();
        (
            imp.batch_label.label().to_string(),
            imp.counts_label.label().to_string(),
        )
    }
}

/// "1 job is running and 42 are waiting", for the question before quitting.
pub(super) fn running_and_waiting(running: usize, waiting: usize) -> String {
    let running = match running {
        0 => "No job is running".to_owned(),
        1 => "1 job is running".to_owned(),
        n => format!("{n} jobs are running"),
    };
    match waiting {
        0 => running,
        1 => format!("{running} and 1 is waiting"),
        n => format!("{running} and {n} are waiting"),
    }
}

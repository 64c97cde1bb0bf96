//! The end of a batch: a toast that offers the output folder when files were written, and one
//! desktop notification ("38 done, 2 failed") when the window is not focused, withdrawn when
//! the next batch starts.

use super::*;

/// The notification's id: one at a time, replaced or withdrawn.
const NOTIFICATION_ID: &str = "batch-done";

/// Where a batch started from.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchStart {
    counts: StateCounts,
    files_written: usize,
}

impl Window {
    /// Marks the start of a batch, if none is running: withdraws the last batch's
    /// notification.
    pub(super) fn batch_starts(&self) {
        let imp = self.imp();
        if imp.batch_start.get().is_some() {
            return;
        }
        imp.batch_start.set(Some(BatchStart {
            counts: self.state_counts(),
            files_written: imp.files_written.get(),
        }));
        if imp.notification.take().is_some() {
            if let Some(app) = self.application() {
                app.withdraw_notification(NOTIFICATION_ID);
            }
        }
    }

    /// Called once idle: reports the batch that just ended, if one did.
    pub(super) fn batch_ended(&self) {
        let imp = self.imp();
        let Some(start) = imp.batch_start.take() else {
            return;
        };
        let now = self.state_counts();
        let done = now.succeeded.saturating_sub(start.counts.succeeded);
        let failed = (now.failed + now.cancelled)
            .saturating_sub(start.counts.failed + start.counts.cancelled);
        let written = imp.files_written.get().saturating_sub(start.files_written);
        let summary = if failed == 0 {
            format!("{done} done")
        } else {
            format!("{done} done, {failed} failed")
        };
        if written > 0 {
            let toast = adw::Toast::builder()
                .title(format!(
                    "{summary} · {written} file{} written",
                    if written == 1 { "" } else { "s" }
                ))
                .button_label("Open Folder")
                .action_name("win.open-output-folder")
                .build();
            imp.toasts.add_toast(toast);
        }
        let wanted =
            imp.notify_when_done.get() && self.settings().is_none_or(|s| s.notifications());
        if wanted && !self.is_active() {
            let notification = gio::Notification::new("Jobs finished");
            notification.set_body(Some(&summary));
            if let Some(app) = self.application() {
                app.send_notification(Some(NOTIFICATION_ID), &notification);
            }
            imp.notification.replace(Some(summary));
        }
    }

    /// The body of the notification sent at the end of the last batch, while it stands
    /// (`None` once withdrawn, or when none was sent).
    pub fn notification(&self) -> Option<String> {
        self.imp().notification.borrow().clone()
    }

    /// Whether a batch that ends while the window is not focused sends a notification.
    pub fn set_notify_when_done(&self, notify: bool) {
        self.imp().notify_when_done.set(notify);
    }

    /// Opens the output folder in the file manager.
    pub(super) fn open_output_folder(&self) {
        let uri = gio::File::for_path(self.output_dir()).uri();
        #[allow(deprecated)] // gtk::FileLauncher needs GTK 4.10; Debian 12 has 4.8.
        gtk::show_uri(Some(self), &uri, gdk::CURRENT_TIME);
    }
}

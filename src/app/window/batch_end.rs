//! Batches in the window: each action's jobs as one [`AppBatch`], the one the status bar shows
//! (with its own Cancel), and its end: a toast that offers the output folder when files were
//! written, and one desktop notification ("38 done, 2 failed") when the window is not
//! focused, withdrawn when the next batch starts.

use super::*;

/// The notification's id: one at a time, replaced or withdrawn.
const NOTIFICATION_ID: &str = "batch-done";

/// Ended batches kept for the status bar, besides the running ones.
const ENDED_KEPT: usize = 1;

impl Window {
    /// Starts `batch`: the status bar follows it; the last batch's notification goes.
    pub(super) fn start_batch(&self, batch: &Rc<AppBatch>) {
        let imp = self.imp();
        {
            let mut batches = imp.batches.borrow_mut();
            // Keep the running batches and the last ended one.
            let ended: Vec<usize> = batches
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_done())
                .map(|(i, _)| i)
                .collect();
            let drop = ended.len().saturating_sub(ENDED_KEPT);
            for i in ended.into_iter().take(drop).rev() {
                batches.remove(i);
            }
            batches.push(batch.clone());
        }
        // The batch hears a job's end after the window's own observer (it connected later):
        // its end is known from its own events.
        batch.connect_events(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |event| {
                if let QueueEvent::Finished { .. } = event {
                    window.check_batches();
                }
            }
        ));
        imp.work_started.set(true);
        if imp.notification.take().is_some() {
            if let Some(app) = self.application() {
                app.withdraw_notification(NOTIFICATION_ID);
            }
        }
        trace(&format!("batch started: {}", batch.title()));
        self.refresh_status();
    }

    /// The batch the status bar shows: the newest one still running, else the newest.
    pub fn current_batch(&self) -> Option<Rc<AppBatch>> {
        let batches = self.imp().batches.borrow();
        batches
            .iter()
            .rev()
            .find(|b| !b.is_done())
            .or_else(|| batches.last())
            .cloned()
    }

    pub(super) fn current_batch_running(&self) -> bool {
        self.current_batch()
            .is_some_and(|b| !b.is_done() && !b.is_cancelled())
    }

    /// Batches that have not ended.
    pub(super) fn running_batches(&self) -> usize {
        self.imp()
            .batches
            .borrow()
            .iter()
            .filter(|b| !b.is_done())
            .count()
    }

    /// Cancels the batch the status bar shows, what waits of it included.
    pub(super) fn cancel_batch(&self) {
        let Some(batch) = self.current_batch().filter(|b| !b.is_done()) else {
            return;
        };
        batch.cancel();
        self.drop_cancelled_feeds();
        self.check_batches();
        self.refresh_status();
    }

    /// Reports each batch that has just ended.
    pub(super) fn check_batches(&self) {
        let ended: Vec<Rc<AppBatch>> = self
            .imp()
            .batches
            .borrow()
            .iter()
            .filter(|b| b.take_end())
            .cloned()
            .collect();
        for batch in ended {
            self.batch_ended(&batch);
        }
    }

    /// A batch's end: a toast, and a notification when the window is not focused.
    fn batch_ended(&self, batch: &AppBatch) {
        let imp = self.imp();
        let summary = batch.summary();
        // Said once the window shows the end, so that a screenshot then shows it.
        let line = format!("batch ended: {} · {summary}", batch.title());
        self.after_next_paint(move |_| trace(&line));
        let written = batch.files_written();
        let title = if batch.is_cancelled() {
            format!("{}: cancelled · {summary}", batch.title())
        } else {
            format!("{}: {summary}", batch.title())
        };
        let toast = adw::Toast::builder().title(&title).build();
        if written > 0 {
            toast.set_title(&format!(
                "{title} · {} written",
                crate::app::batch::count(written, "file", "files")
            ));
            toast.set_button_label(Some("_Open Folder"));
            toast.set_action_name(Some("win.open-output-folder"));
        }
        imp.toasts.add_toast(toast);
        let wanted =
            imp.notify_when_done.get() && self.settings().is_none_or(|s| s.notifications());
        if wanted && !self.is_active() {
            let notification = gio::Notification::new(batch.title());
            notification.set_body(Some(&summary));
            if let Some(app) = self.application() {
                app.send_notification(Some(NOTIFICATION_ID), &notification);
            }
            imp.notification.replace(Some(summary));
        }
        self.refresh_status();
    }

    /// Drops the file feeds of cancelled batches (what they held waiting is counted
    /// cancelled by the batch).
    pub(super) fn drop_cancelled_feeds(&self) {
        let imp = self.imp();
        let mut dropped = 0;
        imp.file_feeds.borrow_mut().retain(|feed| {
            let keep = !feed.batch.is_cancelled();
            if !keep {
                dropped += feed.paths.len();
            }
            keep
        });
        imp.unsubmitted
            .set(imp.unsubmitted.get().saturating_sub(dropped));
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

/// With `OFFLOAD_TRACE=1`, prints what the window does (a batch starts or ends, a drop is
/// offered) on stdout, one line each: tests that drive the app with real input wait on these
/// lines instead of guessing how long a step takes.
pub(super) fn trace(line: &str) {
    thread_local! {
        static ON: bool = std::env::var_os("OFFLOAD_TRACE").is_some_and(|v| v != "0");
    }
    if ON.with(|on| *on) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "offload-trace: {line}");
        let _ = out.flush();
    }
}

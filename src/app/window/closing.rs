//! Closing the window: asking first while jobs run, and stopping every process.

use super::*;

impl Window {
    pub(super) fn confirm_close(&self, counts: StateCounts) {
        let dialog = adw::MessageDialog::new(
            Some(self),
            Some("Stop Running Jobs?"),
            Some(&format!(
                "{} jobs are running and {} are queued. Quitting stops them all; finished results are kept.",
                counts.running, counts.queued
            )),
        );
        dialog.add_response("cancel", "_Keep Running");
        dialog.add_response("quit", "_Stop and Quit");
        dialog.set_response_appearance("quit", adw::ResponseAppearance::Destructive);
        dialog.set_default_response(Some("cancel"));
        dialog.set_close_response("cancel");
        dialog.connect_response(
            None,
            glib::clone!(
                #[weak(rename_to = window)]
                self,
                move |_, response| {
                    if response == "quit" {
                        window.imp().close_confirmed.set(true);
                        window.close();
                    }
                }
            ),
        );
        dialog.present();
    }

    /// Kills every processor now and waits (at most two seconds) until each runner has
    /// reported, so that no child outlives the window.
    pub fn stop_all_jobs(&self) {
        let queue = self.queue();
        queue.shutdown();
        let context = glib::MainContext::default();
        let until = Instant::now() + Duration::from_secs(2);
        while queue.counts().running > 0 && Instant::now() < until {
            context.iteration(false);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

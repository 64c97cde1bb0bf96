//! Closing the window: asking first while jobs run or wait, and stopping every process.

use super::*;

impl Window {
    pub(super) fn confirm_close(&self, running: usize, waiting: usize) {
        let dialog = adw::MessageDialog::new(
            Some(self),
            Some("Stop the Jobs and Quit?"),
            Some(&format!(
                "{}. Quitting stops them all; finished outputs are kept.",
                super::status::running_and_waiting(running, waiting)
            )),
        );
        // Named for window lists (and for tests that find it by its title).
        dialog.set_title(Some("Stop the Jobs and Quit?"));
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
        let imp = self.imp();
        imp.file_feeds.borrow_mut().clear();
        let queue = self.queue();
        for batch in imp.batches.borrow().iter() {
            batch.cancel();
        }
        queue.shutdown();
        let context = glib::MainContext::default();
        let until = Instant::now() + Duration::from_secs(2);
        while queue.counts().running > 0 && Instant::now() < until {
            context.iteration(false);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

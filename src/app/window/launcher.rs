//! Where new jobs run: the Run On entry, applied as it is edited (a moment after the last
//! key, or at once with Enter), parsed and counted off the main thread.

use super::*;

/// How long after the last edit the Run On entry applies.
const EDIT_PAUSE: Duration = Duration::from_millis(600);

impl Window {
    pub(super) fn setup_launcher_entry(&self) {
        let entry = &self.imp().launcher_entry;
        entry.connect_entry_activated(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.apply_launcher_entry()
        ));
        entry.connect_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |entry| {
                let imp = window.imp();
                if let Some(pending) = imp.launcher_edit.take() {
                    pending.remove();
                }
                if entry.text() == *imp.launcher_text.borrow() {
                    return;
                }
                let id = glib::timeout_add_local_once(
                    EDIT_PAUSE,
                    glib::clone!(
                        #[weak]
                        window,
                        move || {
                            window.imp().launcher_edit.take();
                            window.apply_launcher_entry();
                        }
                    ),
                );
                imp.launcher_edit.replace(Some(id));
            }
        ));
    }

    /// Changes how many jobs run at once; takes effect at once.
    /// Runs new jobs' processors through `launcher` (as Slurm job steps, or over ssh); the job
    /// list's Worker column then says where each ran.
    pub fn set_launcher(&self, launcher: Option<std::sync::Arc<crate::Launcher>>) {
        let text = launcher.as_ref().map(|l| l.spec()).unwrap_or_default();
        let entry = &self.imp().launcher_entry;
        self.imp().launcher_text.replace(text.clone());
        if entry.text() != text {
            entry.set_text(&text);
        }
        self.imp().launcher.replace(launcher);
    }

    /// The "Run On" entry (for tests).
    #[doc(hidden)]
    pub fn launcher_entry(&self) -> adw::EntryRow {
        self.imp().launcher_entry.get()
    }

    /// Where new jobs' processors run (`None`: on this machine).
    pub fn launcher(&self) -> Option<std::sync::Arc<crate::Launcher>> {
        self.imp().launcher.borrow().clone()
    }

    /// Applies the "Run On" entry: `local` (or nothing), `slurm` or `ssh:HOST,...`, then srun
    /// or ssh arguments. It is parsed and its slots counted (an ssh host may be asked) on a
    /// worker thread; then new jobs run through it, at most its slots at once.
    pub(super) fn apply_launcher_entry(&self) {
        if let Some(pending) = self.imp().launcher_edit.take() {
            pending.remove();
        }
        let entry = &self.imp().launcher_entry;
        let text = entry.text().to_string();
        self.imp().launcher_text.replace(text.clone());
        entry.remove_css_class("error");
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let parsed = gio::spawn_blocking(move || {
                    let mut words = text.split_whitespace();
                    let spec = words.next().unwrap_or("local").to_owned();
                    let args = words.map(Into::into).collect();
                    crate::Launcher::parse(&spec, args).map(|launcher| {
                        let slots = launcher.slots();
                        (launcher, slots)
                    })
                })
                .await;
                let entry = &window.imp().launcher_entry;
                match parsed {
                    Ok(Ok((launcher, slots))) => {
                        let remote = !launcher.is_local();
                        // The text stays as typed: it applied.
                        window
                            .imp()
                            .launcher
                            .replace(remote.then(|| std::sync::Arc::new(launcher)));
                        if remote && slots > 0 {
                            window.set_max_running(slots);
                        }
                    }
                    Ok(Err(err)) => {
                        entry.add_css_class("error");
                        window.toast(&format!("Run On: {err}"));
                    }
                    Err(_) => {}
                }
            }
        ));
    }
}

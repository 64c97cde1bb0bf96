//! The primary menu's windows: Preferences (bound to the app's GSettings), Keyboard Shortcuts
//! and About.

use super::*;

use crate::app::settings::AppSettings;

impl Window {
    /// The app's settings, when a schema was found.
    pub fn settings(&self) -> Option<AppSettings> {
        self.imp().settings.borrow().clone()
    }

    /// The processors' nice level (Preferences; the library's default without a schema, and
    /// the schema's default is the same, as tests/desktop.rs checks).
    pub(super) fn job_nice(&self) -> i32 {
        self.settings()
            .map_or(crate::job::DEFAULT_NICE, |s| s.nice())
    }

    /// Loads the settings and follows their changes.
    pub(super) fn setup_settings(&self) {
        let Some(settings) = AppSettings::load() else {
            return;
        };
        if let Some(n) = settings.parallel_jobs() {
            self.set_max_running(n);
        }
        settings.connect_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |key| {
                if key == "output-folder" {
                    window.show_output_dir();
                }
                if key == "parallel-jobs" {
                    let cores = std::thread::available_parallelism().map_or(1, usize::from);
                    let n = window
                        .settings()
                        .and_then(|s| s.parallel_jobs())
                        .unwrap_or(cores);
                    window.set_max_running(n);
                }
            }
        ));
        self.imp().settings.replace(Some(settings));
    }

    /// The Preferences window: the output folder, parallel jobs, notifications, and how
    /// much the processors yield the CPU.
    pub fn preferences_window(&self) -> adw::PreferencesWindow {
        let window = adw::PreferencesWindow::builder()
            .transient_for(self)
            .modal(true)
            .search_enabled(false)
            .build();
        let page = adw::PreferencesPage::new();
        let jobs = adw::PreferencesGroup::builder().title("Jobs").build();
        let settings = self.settings();
        let folder = adw::ActionRow::builder()
            .title("_Output Folder")
            .use_underline(true)
            .subtitle(self.output_dir_label())
            .activatable(true)
            .build();
        let choose = gtk::Button::builder()
            .label("_Choose…")
            .use_underline(true)
            .valign(gtk::Align::Center)
            .build();
        choose.connect_clicked(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.choose_output_folder()
        ));
        folder.connect_activated(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.choose_output_folder()
        ));
        folder.add_suffix(&choose);
        // The row follows the folder, wherever it is chosen.
        self.imp().output_row.connect_subtitle_notify(glib::clone!(
            #[weak]
            folder,
            #[weak(rename_to = window)]
            self,
            move |_| folder.set_subtitle(&window.output_dir_label())
        ));
        jobs.add(&folder);
        // One value: the queue's. The spin shows it and sets it; the settings remember it.
        let parallel = gtk::SpinButton::with_range(1.0, 256.0, 1.0);
        parallel.set_valign(gtk::Align::Center);
        parallel.set_value(self.queue().max_running() as f64);
        parallel.connect_value_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |spin| {
                let n = spin.value() as usize;
                if n != window.queue().max_running() {
                    window.set_max_running(n);
                    if let Some(settings) = window.settings() {
                        settings.set_parallel_jobs(n);
                    }
                }
            }
        ));
        let parallel_row = adw::ActionRow::builder()
            .title("_Parallel Jobs")
            .use_underline(true)
            .subtitle(format!(
                "How many run at once (this computer has {} cores)",
                std::thread::available_parallelism().map_or(1, usize::from)
            ))
            .activatable_widget(&parallel)
            .build();
        parallel_row.add_suffix(&parallel);
        jobs.add(&parallel_row);
        let notify = gtk::Switch::builder().valign(gtk::Align::Center).build();
        notify.set_active(true);
        if let Some(settings) = &settings {
            settings
                .gsettings()
                .bind("notifications", &notify, "active")
                .build();
        }
        let notify_row = adw::ActionRow::builder()
            .title("_Notify When a Batch Ends")
            .use_underline(true)
            .subtitle("Once, when the window is not focused")
            .activatable_widget(&notify)
            .build();
        notify_row.add_suffix(&notify);
        jobs.add(&notify_row);
        let yield_spin = gtk::SpinButton::with_range(0.0, 19.0, 1.0);
        yield_spin.set_valign(gtk::Align::Center);
        if let Some(settings) = &settings {
            settings
                .gsettings()
                .bind("nice", &yield_spin, "value")
                .build();
        }
        let yield_row = adw::ActionRow::builder()
            .title("_Keep the Computer Responsive")
            .use_underline(true)
            .subtitle(
                "How much the jobs give way to other programs, from 0 (not at all) to 19 \
                 (most); 10 keeps windows smooth while every core is busy",
            )
            .activatable_widget(&yield_spin)
            .build();
        yield_row.add_suffix(&yield_spin);
        jobs.add(&yield_row);
        page.add(&jobs);
        window.add(&page);
        window
    }

    /// Asks for the output folder (from the What to Run pane or Preferences).
    pub(super) fn choose_output_folder(&self) {
        self.choose_paths(
            "Output Folder",
            "_Choose",
            gtk::FileChooserAction::SelectFolder,
            false,
            move |window, paths| {
                let Some(path) = paths.into_iter().next() else {
                    return;
                };
                if let Some(settings) = window.settings() {
                    settings.set_output_folder(&path);
                }
                window.set_output_dir(Some(path.clone()));
                window.toast(&format!("Outputs go to {}", path.display()));
                trace(&format!("output folder: {}", path.display()));
            },
        );
    }

    /// The About window.
    pub fn about_window(&self) -> adw::AboutWindow {
        adw::AboutWindow::builder()
            .transient_for(self)
            .modal(true)
            .application_name("Offload")
            .application_icon(crate::app::settings::SCHEMA_ID)
            .version(env!("CARGO_PKG_VERSION"))
            .developer_name("The Offload developers")
            .comments(
                "Runs heavy work in parallel processor processes while the window stays \
                 responsive: thumbnails of a folder of photos, or any processor you write.",
            )
            .license_type(gtk::License::MitX11)
            .build()
    }

    /// The Keyboard Shortcuts window.
    pub(super) fn setup_shortcuts_window(&self) {
        let builder = gtk::Builder::from_string(&shortcuts_ui());
        if let Some(shortcuts) = builder.object::<gtk::ShortcutsWindow>("help_overlay") {
            self.set_help_overlay(Some(&shortcuts));
        }
    }
}

/// Keyboard shortcuts: accelerator, action, title and group. They are bound in `class_init`
/// and listed by the Keyboard Shortcuts window, which is made from this same list: every
/// action has one.
pub(super) const SHORTCUTS: [(&str, &str, &str, &str); 22] = [
    (
        "<Control>o",
        "win.add-folder",
        "Add a folder",
        "Adding Jobs",
    ),
    (
        "<Control><Shift>o",
        "win.add-files",
        "Add files",
        "Adding Jobs",
    ),
    (
        "<Control>j",
        "win.add-file",
        "Add jobs from a JSON Lines file",
        "Adding Jobs",
    ),
    (
        "<Control>e",
        "win.add-example",
        "Add an example job",
        "Adding Jobs",
    ),
    (
        "<Control>d",
        "win.start-demo",
        "Start the Mandelbrot demo",
        "Adding Jobs",
    ),
    (
        "F9",
        "win.toggle-pane",
        "Show or hide what to run",
        "Adding Jobs",
    ),
    (
        "<Control><Shift>f",
        "win.choose-output-folder",
        "Choose the output folder",
        "Adding Jobs",
    ),
    (
        "<Control>p",
        "win.pause",
        "Pause or resume starting jobs",
        "Jobs",
    ),
    (
        "<Control>period",
        "win.cancel-batch",
        "Cancel the current batch",
        "Jobs",
    ),
    (
        "Delete",
        "win.cancel-selected",
        "Cancel the selected jobs",
        "Jobs",
    ),
    (
        "<Shift>Delete",
        "win.cancel-all",
        "Cancel every job, waiting ones too",
        "Jobs",
    ),
    (
        "<Control>r",
        "win.retry-failed",
        "Retry the failed and cancelled jobs",
        "Jobs",
    ),
    (
        "<Control>l",
        "win.clear-finished",
        "Clear the finished jobs",
        "Jobs",
    ),
    (
        "<Control><Shift>c",
        "win.copy-command",
        "Copy the selected job's command line",
        "Jobs",
    ),
    (
        "<Control><Shift>g",
        "win.open-output-folder",
        "Open the output folder",
        "Jobs",
    ),
    ("<Control>1", "win.show-jobs", "Show the jobs", "View"),
    ("<Control>2", "win.show-mosaic", "Show the mosaic", "View"),
    (
        "<Control>t",
        "win.show-details",
        "Show the technical columns",
        "View",
    ),
    (
        "<Control>comma",
        "win.preferences",
        "Preferences",
        "General",
    ),
    (
        "<Control>question",
        "win.show-help-overlay",
        "Keyboard shortcuts",
        "General",
    ),
    ("<Control>w", "win.close", "Close the window", "General"),
    ("<Control>q", "win.quit", "Quit", "General"),
];

/// The Keyboard Shortcuts window's UI, from [`SHORTCUTS`].
fn shortcuts_ui() -> String {
    let escape = |text: &str| glib::markup_escape_text(text).to_string();
    let mut groups = String::new();
    for group in ["Adding Jobs", "Jobs", "View", "General"] {
        groups.push_str(&format!(
            "<child><object class=\"GtkShortcutsGroup\"><property name=\"title\">{group}</property>"
        ));
        for (accel, _, title, _) in SHORTCUTS.iter().filter(|s| s.3 == group) {
            groups.push_str(&format!(
                "<child><object class=\"GtkShortcutsShortcut\">\
                 <property name=\"accelerator\">{}</property>\
                 <property name=\"title\">{}</property></object></child>",
                escape(accel),
                escape(title)
            ));
        }
        groups.push_str("</object></child>");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><interface>\
         <object class=\"GtkShortcutsWindow\" id=\"help_overlay\">\
         <property name=\"modal\">true</property><child>\
         <object class=\"GtkShortcutsSection\">\
         <property name=\"section-name\">shortcuts</property>{groups}</object></child>\
         </object></interface>"
    )
}

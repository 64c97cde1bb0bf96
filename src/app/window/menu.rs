//! The primary menu's windows: Preferences (bound to the app's GSettings), Keyboard Shortcuts
//! and About.

use super::*;

use crate::app::settings::AppSettings;

/// The processors' default nice level.
const DEFAULT_NICE: i32 = 10;

impl Window {
    /// The app's settings, when a schema was found.
    pub fn settings(&self) -> Option<AppSettings> {
        self.imp().settings.borrow().clone()
    }

    /// The processors' nice level (Preferences; 10 by default).
    pub(super) fn job_nice(&self) -> i32 {
        self.settings().map_or(DEFAULT_NICE, |s| s.nice())
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

    /// The Preferences window: parallel jobs, the output folder, notifications, nice level.
    pub fn preferences_window(&self) -> adw::PreferencesWindow {
        let window = adw::PreferencesWindow::builder()
            .transient_for(self)
            .modal(true)
            .search_enabled(false)
            .build();
        let page = adw::PreferencesPage::new();
        let jobs = adw::PreferencesGroup::builder().title("Jobs").build();
        let settings = self.settings();
        let spin_row = |title: &str, subtitle: &str, key: &str, low: f64, high: f64| {
            let spin = gtk::SpinButton::with_range(low, high, 1.0);
            spin.set_valign(gtk::Align::Center);
            let row = adw::ActionRow::builder()
                .title(title)
                .subtitle(subtitle)
                .build();
            row.add_suffix(&spin);
            if let Some(settings) = &settings {
                settings.gsettings().bind(key, &spin, "value").build();
            }
            row
        };
        jobs.add(&spin_row(
            "Parallel Jobs",
            "How many processors run at once (0: one per core)",
            "parallel-jobs",
            0.0,
            256.0,
        ));
        jobs.add(&spin_row(
            "Nice Level",
            "How much lower the processors' CPU priority is than the app's",
            "nice",
            0.0,
            19.0,
        ));
        let folder = adw::ActionRow::builder()
            .title("Output Folder")
            .subtitle(self.output_dir().display().to_string())
            .build();
        let choose = gtk::Button::builder()
            .label("Choose…")
            .valign(gtk::Align::Center)
            .build();
        choose.connect_clicked(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[weak]
            folder,
            move |_| window.choose_output_folder(&folder)
        ));
        folder.add_suffix(&choose);
        jobs.add(&folder);
        let notify = gtk::Switch::builder().valign(gtk::Align::Center).build();
        notify.set_active(true);
        if let Some(settings) = &settings {
            settings
                .gsettings()
                .bind("notifications", &notify, "active")
                .build();
        }
        let notify_row = adw::ActionRow::builder()
            .title("Notify When a Batch Ends")
            .subtitle("Once, when the window is not focused")
            .activatable_widget(&notify)
            .build();
        notify_row.add_suffix(&notify);
        jobs.add(&notify_row);
        page.add(&jobs);
        window.add(&page);
        window
    }

    fn choose_output_folder(&self, row: &adw::ActionRow) {
        let row = row.downgrade();
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
                if let Some(row) = row.upgrade() {
                    row.set_subtitle(&path.display().to_string());
                }
            },
        );
    }

    /// The About window.
    pub fn about_window(&self) -> adw::AboutWindow {
        adw::AboutWindow::builder()
            .transient_for(self)
            .modal(true)
            .application_name("offload")
            .application_icon(crate::app::settings::SCHEMA_ID)
            .version(env!("CARGO_PKG_VERSION"))
            .developer_name("The offload developers")
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
/// and listed by the Keyboard Shortcuts window, which is made from this same list.
pub(super) const SHORTCUTS: [(&str, &str, &str, &str); 9] = [
    ("<Control>o", "win.add-files", "Add files", "Jobs"),
    (
        "<Control><Shift>o",
        "win.add-folder",
        "Add a folder",
        "Jobs",
    ),
    (
        "<Control>j",
        "win.add-file",
        "Add jobs from a JSON Lines file",
        "Jobs",
    ),
    (
        "<Control>p",
        "win.pause",
        "Pause or resume starting jobs",
        "Jobs",
    ),
    (
        "Delete",
        "win.cancel-selected",
        "Cancel the selected jobs",
        "Jobs",
    ),
    (
        "<Control>r",
        "win.retry-failed",
        "Retry the failed jobs",
        "Jobs",
    ),
    (
        "<Control>l",
        "win.clear-finished",
        "Clear the finished jobs",
        "Jobs",
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
];

/// The Keyboard Shortcuts window's UI, from [`SHORTCUTS`].
fn shortcuts_ui() -> String {
    let escape = |text: &str| glib::markup_escape_text(text).to_string();
    let mut groups = String::new();
    for group in ["Jobs", "General"] {
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

//! The app's preferences, in GSettings (schema `io.github.offload.Offload`): parallel jobs, the
//! output folder, notifications, the processors' nice level, and each processor's parameters
//! as last used. The schema is looked up where an installed app has it, else where the build
//! compiled it; without either (or with `GSETTINGS_BACKEND=memory`, as the tests run) the
//! values live in memory for the session.

use std::collections::HashMap;
use std::path::PathBuf;

use gtk::gio;
use gtk::gio::prelude::*;
use gtk::glib;

/// The schema's id (also the app's id).
pub const SCHEMA_ID: &str = "io.github.offload.Offload";

/// The app's settings.
#[derive(Clone)]
pub struct AppSettings {
    settings: gio::Settings,
}

impl AppSettings {
    /// The settings, or `None` when no compiled schema can be found.
    pub fn load() -> Option<Self> {
        let installed =
            gio::SettingsSchemaSource::default().and_then(|source| source.lookup(SCHEMA_ID, true));
        let schema = installed.or_else(|| {
            let dir = env!("OFFLOAD_SCHEMA_DIR");
            if dir.is_empty() {
                return None;
            }
            gio::SettingsSchemaSource::from_directory(
                dir,
                gio::SettingsSchemaSource::default().as_ref(),
                false,
            )
            .ok()?
            .lookup(SCHEMA_ID, false)
        })?;
        let settings = gio::Settings::new_full(&schema, None::<&gio::SettingsBackend>, None);
        Some(Self { settings })
    }

    /// The GSettings object, to bind widgets to.
    pub fn gsettings(&self) -> &gio::Settings {
        &self.settings
    }

    /// Parallel jobs; `None` for one per core.
    pub fn parallel_jobs(&self) -> Option<usize> {
        usize::try_from(self.settings.int("parallel-jobs"))
            .ok()
            .filter(|n| *n > 0)
    }

    /// The output folder; `None` for the default.
    pub fn output_folder(&self) -> Option<PathBuf> {
        let folder = self.settings.string("output-folder");
        (!folder.is_empty()).then(|| PathBuf::from(folder.as_str()))
    }

    pub fn set_output_folder(&self, folder: &std::path::Path) {
        let _ = self
            .settings
            .set_string("output-folder", &folder.to_string_lossy());
    }

    /// Sets parallel jobs (at least 1).
    pub fn set_parallel_jobs(&self, n: usize) {
        let _ = self
            .settings
            .set_int("parallel-jobs", i32::try_from(n.max(1)).unwrap_or(i32::MAX));
    }

    /// The processor chosen last, by name.
    pub fn processor(&self) -> Option<String> {
        let name = self.settings.string("processor");
        (!name.is_empty()).then(|| name.to_string())
    }

    pub fn set_processor(&self, name: &str) {
        let _ = self.settings.set_string("processor", name);
    }

    pub fn notifications(&self) -> bool {
        self.settings.boolean("notifications")
    }

    pub fn nice(&self) -> i32 {
        self.settings.int("nice")
    }

    /// The values of a processor's parameters as last used.
    pub fn parameters(&self, processor: &str) -> HashMap<String, String> {
        let all: HashMap<String, HashMap<String, String>> = self.settings.get("parameters");
        all.get(processor).cloned().unwrap_or_default()
    }

    pub fn set_parameters(&self, processor: &str, values: HashMap<String, String>) {
        let mut all: HashMap<String, HashMap<String, String>> = self.settings.get("parameters");
        all.insert(processor.to_owned(), values);
        let _ = self.settings.set("parameters", all);
    }

    /// Calls `changed` with the key's name whenever a setting changes.
    pub fn connect_changed(&self, changed: impl Fn(&str) + 'static) -> glib::SignalHandlerId {
        self.settings
            .connect_changed(None, move |_, key| changed(key))
    }
}

//! The main window: the mosaic, the job list, the inspector and the controls, all fed by the
//! engine's events on the main context. Widgets only: every slow step is the engine's.
//!
//! This file holds the window's state, its construction and its accessors; each concern has
//! an `impl Window` block of its own beside it (as Loupe splits its image view): submitting
//! jobs, the queue's events, the list's selection and actions, the status area, the demo,
//! the processors and the Add Jobs popover, the launcher, unattended runs, and closing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gdk, gio, glib, CompositeTemplate};

use super::batch::AppBatch;
use super::inspector::JobInspector;
use super::mosaic_view::{MosaicView, TileState};
use super::pacing::Pacer;
use super::record::{JobKind, JobOutput, JobRecord};
use crate::model::{JobList, JobObject};
use crate::mosaic::{Mosaic, Tile, TileOutput};
use crate::sdk::Description;
use crate::{Counts, Finished, Job, JobId, JobState, Processor, Queue, QueueEvent};

mod batch_end;
mod closing;
mod demo;
mod drop;
mod events;
mod files;
mod launcher;
mod menu;
mod processors;
mod selection;
mod status;
mod submit;
mod unattended;

use batch_end::trace;
pub use unattended::Unattended;

/// How often the status area, the elapsed times and the state filter refresh.
const TICK: Duration = Duration::from_millis(250);

/// The state filter's items, in order: all jobs, then each state. The drop-down's words are
/// made from this table, and its position means this table's entry: one place says both.
const STATE_FILTER: [Option<JobState>; 6] = [
    None,
    Some(JobState::Queued),
    Some(JobState::Running),
    Some(JobState::Succeeded),
    Some(JobState::Failed),
    Some(JobState::Cancelled),
];

/// The state filter's position for `state`.
fn filter_position(state: Option<JobState>) -> u32 {
    STATE_FILTER
        .iter()
        .position(|s| *s == state)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}

mod imp {
    use super::*;

    #[derive(Default, CompositeTemplate)]
    #[template(file = "window.ui")]
    pub struct Window {
        #[template_child]
        pub toasts: TemplateChild<adw::ToastOverlay>,
        #[template_child]
        pub stack: TemplateChild<adw::ViewStack>,
        #[template_child]
        pub flap: TemplateChild<adw::Flap>,
        #[template_child]
        pub add_button: TemplateChild<gtk::MenuButton>,
        #[template_child]
        pub primary_menu_button: TemplateChild<gtk::MenuButton>,
        #[template_child]
        pub processor_row: TemplateChild<adw::ComboRow>,
        #[template_child]
        pub processor_names: TemplateChild<gtk::StringList>,
        #[template_child]
        pub action_group: TemplateChild<adw::PreferencesGroup>,
        #[template_child]
        pub param_box: TemplateChild<gtk::Box>,
        #[template_child]
        pub output_row: TemplateChild<adw::ActionRow>,
        #[template_child]
        pub launcher_entry: TemplateChild<adw::EntryRow>,
        #[template_child]
        pub jobs_stack: TemplateChild<gtk::Stack>,
        #[template_child]
        pub empty_page: TemplateChild<adw::StatusPage>,
        #[template_child]
        pub inspector_flap: TemplateChild<adw::Flap>,
        #[template_child]
        pub state_filter: TemplateChild<gtk::DropDown>,
        #[template_child]
        pub column_view: TemplateChild<gtk::ColumnView>,
        #[template_child]
        pub inspector: TemplateChild<JobInspector>,
        #[template_child]
        pub mosaic_stack: TemplateChild<gtk::Stack>,
        #[template_child]
        pub mosaic_view: TemplateChild<MosaicView>,
        #[template_child]
        pub drop_overlay: TemplateChild<gtk::Box>,
        #[template_child]
        pub drop_icon: TemplateChild<gtk::Image>,
        #[template_child]
        pub drop_title: TemplateChild<gtk::Label>,
        #[template_child]
        pub drop_detail: TemplateChild<gtk::Label>,
        #[template_child]
        pub spinner: TemplateChild<gtk::Spinner>,
        #[template_child]
        pub batch_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub counts_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub overall_progress: TemplateChild<gtk::ProgressBar>,
        #[template_child]
        pub cancel_batch_button: TemplateChild<gtk::Button>,

        pub queue: RefCell<Option<Queue>>,
        /// The rows: the library's job model, which the queue's events keep up to date.
        pub jobs: RefCell<Option<JobList>>,
        pub selection: RefCell<Option<gtk::MultiSelection>>,
        pub filter: RefCell<Option<gtk::CustomFilter>>,
        /// Whether a row changed state since the filter last ran.
        pub filter_stale: Cell<bool>,
        /// Rows cleared from the list but still undoable (the toast's Undo brings them back).
        pub cleared: RefCell<std::collections::HashSet<u64>>,
        /// What the app keeps of each listed job besides its row.
        pub records: RefCell<HashMap<JobId, JobRecord>>,
        /// The batches, oldest first: each one action's jobs ([`AppBatch`]).
        pub batches: RefCell<Vec<Rc<AppBatch>>>,
        /// Files waiting to be read and submitted, and whether a slice is being read.
        pub(super) file_feeds: RefCell<std::collections::VecDeque<super::files::FileFeed>>,
        pub reading_files: Cell<bool>,
        /// Files not run (not taken, unreadable), and why.
        pub skipped: RefCell<Vec<(PathBuf, String)>>,
        /// Errors that kept files from running, or outputs from being written.
        pub file_errors: RefCell<Vec<String>>,
        /// Output files written.
        pub files_written: Cell<usize>,
        /// The parameter form of the selected processor, and for which one.
        pub param_form: RefCell<Option<(String, crate::app::param_form::ParamForm)>>,
        /// The values last used, per processor.
        pub param_values: RefCell<HashMap<String, HashMap<String, String>>>,
        /// The standing end-of-batch notification's body.
        pub notification: RefCell<Option<String>>,
        /// Whether a batch that ends unfocused sends a notification.
        pub notify_when_done: Cell<bool>,
        /// The app's preferences (`None`: no schema found; defaults apply).
        pub settings: RefCell<Option<crate::app::settings::AppSettings>>,
        /// Where outputs go (`None`: Pictures/offload).
        pub output_dir: RefCell<Option<PathBuf>>,
        /// The file chooser shown: GTK destroys a native chooser that nobody holds, so the
        /// window holds it until it answers.
        pub chooser: RefCell<Option<gtk::FileChooserNative>>,
        /// Results not yet handed back by their handles.
        pub outstanding: Cell<usize>,
        /// Inputs of a large batch not submitted yet.
        pub unsubmitted: Cell<usize>,
        pub mosaic: Cell<Option<Mosaic>>,
        pub processors: RefCell<Vec<(Processor, Option<Description>)>>,
        /// Whether the search for processors has ended.
        pub processors_searched: Cell<bool>,
        /// A chooser asked for before the processors were found (`Some(folder)`).
        pub choose_when_loaded: Cell<Option<bool>>,
        pub unattended: RefCell<Unattended>,
        pub work_started: Cell<bool>,
        pub close_confirmed: Cell<bool>,
        pub screenshot_taken: Cell<bool>,
        pub actual_size: Cell<bool>,
        /// The list shows the technical columns (id, processor, memory, worker).
        pub show_details: Cell<bool>,
        /// New jobs run their processors in a sandbox.
        pub sandboxed: Cell<bool>,
        /// Where new jobs' processors run (`None`: on this machine).
        pub launcher: RefCell<Option<std::sync::Arc<crate::Launcher>>>,
        /// The Run On text last applied, and the pending apply of an edit.
        pub launcher_text: RefCell<String>,
        pub launcher_edit: RefCell<Option<glib::SourceId>>,
        pub tick: RefCell<Option<glib::SourceId>>,
        /// The window, weakly, for the result callbacks of all its jobs to share.
        pub weak_self: Rc<glib::WeakRef<super::Window>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Window {
        const NAME: &'static str = "OffloadWindow";
        type Type = super::Window;
        type ParentType = adw::ApplicationWindow;

        fn class_init(klass: &mut Self::Class) {
            MosaicView::ensure_type();
            JobInspector::ensure_type();
            klass.bind_template();

            klass.install_action("win.start-demo", None, |w, _, _| {
                w.start_demo(Mosaic::default())
            });
            klass.install_action("win.add-example", None, |w, _, _| w.add_example_job());
            klass.install_action("win.add-file", None, |w, _, _| w.choose_jsonl_file());
            klass.install_action("win.add-files", None, |w, _, _| w.choose_files(false));
            klass.install_action("win.add-folder", None, |w, _, _| w.choose_files(true));
            klass.install_action("win.choose-output-folder", None, |w, _, _| {
                w.choose_output_folder()
            });
            klass.install_action("win.open-output-folder", None, |w, _, _| {
                w.open_output_folder()
            });
            klass.install_action("win.preferences", None, |w, _, _| {
                w.preferences_window().present()
            });
            klass.install_action("win.about", None, |w, _, _| w.about_window().present());
            klass.install_action("win.toggle-pane", None, |w, _, _| w.toggle_pane());
            klass.install_action("win.show-jobs", None, |w, _, _| w.show_jobs_page());
            klass.install_action("win.show-mosaic", None, |w, _, _| {
                w.imp().stack.set_visible_child_name("mosaic")
            });
            klass.install_action("win.close", None, |w, _, _| w.close());
            klass.install_action("win.quit", None, |w, _, _| w.quit());
            klass.install_action("win.cancel-selected", None, |w, _, _| w.cancel_selected());
            klass.install_action("win.cancel-all", None, |w, _, _| w.cancel_all());
            klass.install_action("win.cancel-batch", None, |w, _, _| w.cancel_batch());
            klass.install_action("win.retry-failed", None, |w, _, _| w.retry_failed());
            klass.install_action("win.clear-finished", None, |w, _, _| w.clear_finished());
            klass.install_action("win.copy-command", None, |w, _, _| {
                w.imp().inspector.copy_command_line()
            });
            klass.install_action(
                "win.show-toast",
                Some(glib::VariantTy::STRING),
                |w, _, v| {
                    if let Some(text) = v.and_then(|v| v.str()) {
                        w.toast(text);
                    }
                },
            );
            klass.install_property_action("win.pause", "paused");
            klass.install_property_action("win.actual-size", "actual-size");
            klass.install_property_action("win.sandbox", "sandboxed");
            klass.install_property_action("win.show-details", "show-details");
            klass.install_action(
                "win.set-parallel",
                Some(glib::VariantTy::UINT32),
                |w, _, v| {
                    if let Some(n) = v.and_then(u32::from_variant) {
                        w.set_max_running(n as usize);
                    }
                },
            );
            for (accel, action, _, _) in super::menu::SHORTCUTS {
                klass.add_shortcut(&gtk::Shortcut::new(
                    gtk::ShortcutTrigger::parse_string(accel),
                    Some(gtk::NamedAction::new(action)),
                ));
            }
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for Window {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPERTIES: std::sync::OnceLock<Vec<glib::ParamSpec>> =
                std::sync::OnceLock::new();
            PROPERTIES.get_or_init(|| {
                vec![
                    glib::ParamSpecBoolean::builder("paused").build(),
                    glib::ParamSpecBoolean::builder("actual-size").build(),
                    glib::ParamSpecBoolean::builder("sandboxed").build(),
                    glib::ParamSpecBoolean::builder("show-details").build(),
                ]
            })
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            match pspec.name() {
                "paused" => {
                    let paused = value.get().unwrap_or(false);
                    let obj = self.obj();
                    if obj.queue().is_paused() != paused {
                        obj.queue().set_paused(paused);
                        obj.toast(if paused {
                            "Paused: no new job starts; running ones finish"
                        } else {
                            "Resumed"
                        });
                    }
                    obj.refresh_status();
                }
                "sandboxed" => self.sandboxed.set(value.get().unwrap_or(false)),
                "show-details" => {
                    self.show_details.set(value.get().unwrap_or(false));
                    crate::app::job_list::show_details(&self.column_view, self.show_details.get());
                }
                "actual-size" => {
                    self.actual_size.set(value.get().unwrap_or(false));
                    self.mosaic_view.set_actual_size(self.actual_size.get());
                }
                _ => {}
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            match pspec.name() {
                "paused" => self
                    .queue
                    .borrow()
                    .as_ref()
                    .is_some_and(Queue::is_paused)
                    .to_value(),
                "actual-size" => self.actual_size.get().to_value(),
                "sandboxed" => self.sandboxed.get().to_value(),
                "show-details" => self.show_details.get().to_value(),
                _ => false.to_value(),
            }
        }

        fn constructed(&self) {
            self.parent_constructed();
            self.obj().setup();
        }

        fn dispose(&self) {
            if let Some(tick) = self.tick.take() {
                tick.remove();
            }
            if let Some(edit) = self.launcher_edit.take() {
                edit.remove();
            }
        }
    }

    impl WidgetImpl for Window {}

    impl WindowImpl for Window {
        fn close_request(&self) -> glib::Propagation {
            let obj = self.obj();
            let counts = obj.state_counts();
            let waiting = counts.queued + obj.imp().unsubmitted.get();
            if counts.running + waiting == 0 || self.close_confirmed.get() {
                obj.stop_all_jobs();
                return glib::Propagation::Proceed;
            }
            obj.confirm_close(counts.running, waiting);
            glib::Propagation::Stop
        }
    }

    impl ApplicationWindowImpl for Window {}
    impl AdwApplicationWindowImpl for Window {}
}

glib::wrapper! {
    /// offload's main window.
    pub struct Window(ObjectSubclass<imp::Window>)
        @extends adw::ApplicationWindow, gtk::ApplicationWindow, gtk::Window, gtk::Widget,
        @implements gio::ActionGroup, gio::ActionMap, gtk::Buildable,
            gtk::ConstraintTarget, gtk::Native, gtk::Root, gtk::ShortcutManager;
}

impl Window {
    /// A window for `application` (or none, in tests), running at most `max_running` at once.
    pub fn new(application: Option<&adw::Application>, max_running: Option<usize>) -> Self {
        let window: Self = glib::Object::builder()
            .property("application", application)
            .build();
        if let Some(n) = max_running {
            window.set_max_running(n);
        }
        window
    }

    /// The engine this window drives.
    pub fn queue(&self) -> Queue {
        self.imp().queue.borrow().clone().unwrap_or_default()
    }

    /// The job list's model (every job not cleared): the library's [`JobList`].
    pub fn jobs(&self) -> JobList {
        self.imp()
            .jobs
            .borrow()
            .clone()
            .unwrap_or_else(|| JobList::new(&self.queue()))
    }

    /// The row of a job.
    pub fn job(&self, id: JobId) -> Option<JobObject> {
        self.imp().jobs.borrow().as_ref()?.job(id)
    }

    /// What the app keeps of a listed job besides its row.
    pub fn record(&self, id: JobId) -> Option<JobRecord> {
        self.imp().records.borrow().get(&id).cloned()
    }

    /// The inspector pane.
    pub fn inspector(&self) -> JobInspector {
        self.imp().inspector.get()
    }

    /// The mosaic widget.
    pub fn mosaic_view(&self) -> MosaicView {
        self.imp().mosaic_view.get()
    }

    /// Jobs by the state their rows show.
    pub fn state_counts(&self) -> Counts {
        self.imp()
            .jobs
            .borrow()
            .as_ref()
            .map(JobList::counts)
            .unwrap_or_default()
    }

    /// Whether every submitted job has ended and handed back its result.
    pub fn is_idle(&self) -> bool {
        let counts = self.state_counts();
        counts.queued == 0
            && counts.running == 0
            && self.imp().outstanding.get() == 0
            && self.imp().unsubmitted.get() == 0
    }

    /// Asks for files or a folder (`action`; several files with `multiple`) with a native
    /// chooser, then calls `chosen` with the paths picked, unless it was cancelled. The window
    /// holds the chooser while it is open: GTK destroys a native chooser nobody holds, and
    /// then none appears.
    fn choose_paths(
        &self,
        title: &str,
        accept: &str,
        action: gtk::FileChooserAction,
        multiple: bool,
        chosen: impl Fn(&Self, Vec<PathBuf>) + 'static,
    ) {
        if let Some(open) = self.imp().chooser.borrow().as_ref() {
            // One at a time: a second Ctrl+O while one is open changes nothing.
            open.show();
            return;
        }
        let chooser = gtk::FileChooserNative::new(
            Some(title),
            Some(self),
            action,
            Some(accept),
            Some("_Cancel"),
        );
        chooser.set_modal(true);
        chooser.set_select_multiple(multiple);
        chooser.connect_response(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |chooser, response| {
                window.imp().chooser.replace(None);
                if response == gtk::ResponseType::Accept {
                    let files = chooser.files();
                    let paths: Vec<PathBuf> = (0..files.n_items())
                        .filter_map(|i| files.item(i).and_downcast::<gio::File>())
                        .filter_map(|f| f.path())
                        .collect();
                    if !paths.is_empty() {
                        chosen(&window, paths);
                    }
                }
                chooser.destroy();
            }
        ));
        self.imp().chooser.replace(Some(chooser.clone()));
        chooser.show();
    }

    /// Whether a file chooser is open (for tests).
    pub fn is_choosing(&self) -> bool {
        self.imp().chooser.borrow().is_some()
    }

    /// How many jobs run at once: one value, the queue's, which Preferences shows and sets.
    pub fn set_max_running(&self, n: usize) {
        let n = n.max(1);
        self.queue().set_max_running(n);
        self.refresh_status();
    }

    fn setup(&self) {
        let imp = self.imp();
        imp.weak_self.set(Some(self));
        imp.notify_when_done.set(true);
        load_css();
        self.setup_drop_target();
        self.setup_shortcuts_window();
        let queue = Queue::new();
        imp.queue.replace(Some(queue.clone()));
        self.setup_launcher_entry();
        self.setup_settings();
        // The rows' model first: it hears each event before the window's own observer, which
        // reads its counts.
        self.setup_job_list();
        queue.connect_events(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |event| window.on_queue_event(event)
        ));
        self.load_processors();
        self.show_output_dir();
        for (button, name) in [(&imp.add_button, "add"), (&imp.primary_menu_button, "main")] {
            if let Some(popover) = button.popover() {
                popover.connect_map(move |_| trace(&format!("menu shown: {name}")));
            }
        }
        // Said once the pane has finished moving, so that a screenshot then shows it.
        imp.flap.connect_reveal_progress_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |flap| {
                let line = match flap.reveal_progress() {
                    p if p >= 1.0 => "pane shown",
                    p if p <= 0.0 => "pane hidden",
                    _ => return,
                };
                window.after_next_paint(move |_| trace(line));
            }
        ));
        imp.stack.connect_visible_child_name_notify(|stack| {
            trace(&format!(
                "page: {}",
                stack.visible_child_name().unwrap_or_default()
            ))
        });
        imp.inspector_flap.connect_reveal_flap_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |flap| {
                // Closing the inspector (its close button, a swipe) ends the selection.
                if !flap.reveals_flap() && !window.selected_jobs().is_empty() {
                    if let Some(selection) = window.imp().selection.borrow().as_ref() {
                        selection.unselect_all();
                    }
                }
            }
        ));
        let tick = glib::timeout_add_local(
            TICK,
            glib::clone!(
                #[weak(rename_to = window)]
                self,
                #[upgrade_or]
                glib::ControlFlow::Break,
                move || {
                    window.on_tick();
                    glib::ControlFlow::Continue
                }
            ),
        );
        imp.tick.replace(Some(tick));
        self.refresh_status();
    }

    fn setup_job_list(&self) {
        let imp = self.imp();
        let store = JobList::new(&self.queue());
        let words: Vec<&str> = STATE_FILTER
            .iter()
            .map(|state| state.map_or("All Jobs", super::job_list::state_text))
            .collect();
        imp.state_filter
            .set_model(Some(&gtk::StringList::new(&words)));
        let filter = gtk::CustomFilter::new(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[upgrade_or]
            true,
            move |item| {
                let Some(job) = item.downcast_ref::<JobObject>() else {
                    return true;
                };
                if window.imp().cleared.borrow().contains(&job.id()) {
                    return false;
                }
                window
                    .state_filter()
                    .is_none_or(|state| job.state() == state)
            }
        ));
        imp.state_filter.connect_selected_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.refilter()
        ));
        let filtered = gtk::FilterListModel::new(Some(store.clone()), Some(filter.clone()));
        let sorted = gtk::SortListModel::new(Some(filtered), imp.column_view.sorter());
        let selection = gtk::MultiSelection::new(Some(sorted));
        selection.connect_selection_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_, _, _| window.show_selected()
        ));
        selection.connect_items_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_, _, _, _| window.show_selected()
        ));
        imp.column_view.set_model(Some(&selection));
        super::job_list::add_columns(&imp.column_view);
        store.connect_total_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.show_list_or_empty()
        ));
        imp.jobs.replace(Some(store));
        imp.filter.replace(Some(filter));
        imp.selection.replace(Some(selection));
        self.show_list_or_empty();
    }

    /// Runs the state filter again: rows change state, and a filter list keeps a row where
    /// it was until told.
    pub(super) fn refilter(&self) {
        self.imp().filter_stale.set(false);
        if let Some(filter) = self.imp().filter.borrow().as_ref() {
            filter.changed(gtk::FilterChange::Different);
        }
        self.show_selected();
    }

    /// The empty state while there is no job, else the list.
    fn show_list_or_empty(&self) {
        let imp = self.imp();
        let total = imp.jobs.borrow().as_ref().map_or(0, |j| j.total());
        let cleared = imp.cleared.borrow().len() as u32;
        let empty = total <= cleared;
        imp.jobs_stack
            .set_visible_child_name(if empty { "empty" } else { "list" });
    }

    pub(super) fn toast(&self, text: &str) {
        self.imp().toasts.add_toast(adw::Toast::new(text));
    }

    /// Shows the job list (rather than the mosaic).
    pub fn show_jobs_page(&self) {
        self.imp().stack.set_visible_child_name("jobs");
    }

    /// Whether the What to Run pane shows.
    pub fn pane_revealed(&self) -> bool {
        self.imp().flap.reveals_flap()
    }

    /// Shows or hides the What to Run pane; shown, it takes the keyboard focus.
    fn toggle_pane(&self) {
        let flap = &self.imp().flap;
        let reveal = !flap.reveals_flap();
        flap.set_reveal_flap(reveal);
        if reveal {
            self.imp().processor_row.grab_focus();
        }
    }

    /// Quits: closes every window of the app (each asks first while jobs run).
    fn quit(&self) {
        let windows = self
            .application()
            .map(|app| app.windows())
            .unwrap_or_else(|| vec![self.clone().upcast()]);
        for window in windows {
            window.close();
        }
    }
}

/// The app's own style: the drop overlay.
fn load_css() {
    let Some(display) = gdk::Display::default() else {
        return;
    };
    let provider = gtk::CssProvider::new();
    provider.load_from_data(
        ".drop-overlay { background-color: alpha(@accent_bg_color, 0.88); \
         color: @accent_fg_color; }\n\
         .drop-overlay.refused { background-color: alpha(@error_bg_color, 0.88); \
         color: @error_fg_color; }\n\
         .state-failed { color: @error_color; }\n\
         .state-succeeded { color: @success_color; }\n\
         .state-running { color: @accent_color; }\n\
         .state-cancelled, .state-queued { color: alpha(currentColor, 0.55); }\n",
    );
    gtk::style_context_add_provider_for_display(
        &display,
        &provider,
        gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
    );
}

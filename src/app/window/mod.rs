//! The main window: the mosaic, the job list, the inspector and the controls, all fed by the
//! engine's events on the main context. Widgets only: every slow step is the engine's.
//!
//! This file holds the window's state, its construction and its accessors; each concern has
//! an `impl Window` block of its own beside it (as Loupe splits its image view): submitting
//! jobs, the queue's events, the list's selection and actions, the status area, the demo,
//! the processors and the Add Jobs popover, the launcher, unattended runs, and closing.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gdk, gio, glib, CompositeTemplate};

use super::inspector::JobInspector;
use super::mosaic_view::{MosaicView, TileState};
use super::pacing::Pacer;
use super::record::{JobKind, JobOutput, JobRecord};
use crate::model::{state, JobList, JobObject};
use crate::mosaic::{Mosaic, Tile, TileOutput};
use crate::sdk::Description;
use crate::{Finished, Job, JobId, Processor, Queue, QueueEvent};

mod batch_end;
mod closing;
mod demo;
mod events;
mod files;
mod launcher;
mod menu;
mod processors;
mod selection;
mod status;
mod submit;
mod unattended;

pub use unattended::Unattended;

/// How often the status area and the elapsed times refresh.
const TICK: Duration = Duration::from_millis(250);

/// Jobs counted by the state they show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
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
        pub processor_dropdown: TemplateChild<gtk::DropDown>,
        #[template_child]
        pub processor_names: TemplateChild<gtk::StringList>,
        #[template_child]
        pub processor_summary: TemplateChild<gtk::Label>,
        #[template_child]
        pub param_box: TemplateChild<gtk::Box>,

        #[template_child]
        pub parallel_spin: TemplateChild<gtk::SpinButton>,
        #[template_child]
        pub mosaic_view: TemplateChild<MosaicView>,
        #[template_child]
        pub state_filter: TemplateChild<gtk::DropDown>,
        #[template_child]
        pub column_view: TemplateChild<gtk::ColumnView>,
        #[template_child]
        pub inspector: TemplateChild<JobInspector>,
        #[template_child]
        pub spinner: TemplateChild<gtk::Spinner>,
        #[template_child]
        pub counts_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub rate_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub overall_progress: TemplateChild<gtk::ProgressBar>,
        #[template_child]
        pub launcher_entry: TemplateChild<gtk::Entry>,

        pub queue: RefCell<Option<Queue>>,
        /// The rows: the library's job model, which the queue's events keep up to date.
        pub jobs: RefCell<Option<JobList>>,
        pub selection: RefCell<Option<gtk::MultiSelection>>,
        pub filter: RefCell<Option<gtk::CustomFilter>>,
        /// What the app keeps of each listed job besides its row.
        pub records: RefCell<HashMap<JobId, JobRecord>>,
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
        /// Where the running batch started from; `None` while idle.
        pub(super) batch_start: Cell<Option<super::batch_end::BatchStart>>,
        /// The standing end-of-batch notification's body.
        pub notification: RefCell<Option<String>>,
        /// Whether a batch that ends unfocused sends a notification.
        pub notify_when_done: Cell<bool>,
        /// The app's preferences (`None`: no schema found; defaults apply).
        pub settings: RefCell<Option<crate::app::settings::AppSettings>>,
        /// Where outputs go (`None`: Pictures/offload).
        pub output_dir: RefCell<Option<PathBuf>>,
        pub finish_times: RefCell<VecDeque<Instant>>,
        /// Results not yet handed back by their handles.
        pub outstanding: Cell<usize>,
        /// Inputs of a large batch not submitted yet.
        pub unsubmitted: Cell<usize>,
        pub mosaic: Cell<Option<Mosaic>>,
        pub processors: RefCell<Vec<(Processor, Option<Description>)>>,
        pub unattended: RefCell<Unattended>,
        pub work_started: Cell<bool>,
        pub close_confirmed: Cell<bool>,
        pub screenshot_taken: Cell<bool>,
        pub actual_size: Cell<bool>,
        /// New jobs run their processors in a sandbox.
        pub sandboxed: Cell<bool>,
        /// Where new jobs' processors run (`None`: on this machine).
        pub launcher: RefCell<Option<std::sync::Arc<crate::Launcher>>>,
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
            klass.install_action("win.open-output-folder", None, |w, _, _| {
                w.open_output_folder()
            });
            klass.install_action("win.preferences", None, |w, _, _| {
                w.preferences_window().present()
            });
            klass.install_action("win.about", None, |w, _, _| w.about_window().present());
            for (accel, action, _, _) in super::menu::SHORTCUTS {
                klass.add_shortcut(&gtk::Shortcut::new(
                    gtk::ShortcutTrigger::parse_string(accel),
                    Some(gtk::NamedAction::new(action)),
                ));
            }
            klass.install_action("win.cancel-selected", None, |w, _, _| w.cancel_selected());
            klass.install_action("win.cancel-all", None, |w, _, _| w.queue().cancel_all());
            klass.install_action("win.retry-failed", None, |w, _, _| w.retry_failed());
            klass.install_action("win.clear-finished", None, |w, _, _| w.clear_finished());
            klass.install_property_action("win.pause", "paused");
            klass.install_property_action("win.actual-size", "actual-size");
            klass.install_property_action("win.sandbox", "sandboxed");
            klass.install_action(
                "win.set-parallel",
                Some(glib::VariantTy::UINT32),
                |w, _, v| {
                    if let Some(n) = v.and_then(u32::from_variant) {
                        w.set_max_running(n as usize);
                    }
                },
            );
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
                ]
            })
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            match pspec.name() {
                "paused" => {
                    let paused = value.get().unwrap_or(false);
                    self.obj().queue().set_paused(paused);
                    self.obj().refresh_status();
                }
                "sandboxed" => self.sandboxed.set(value.get().unwrap_or(false)),
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
        }
    }

    impl WidgetImpl for Window {}

    impl WindowImpl for Window {
        fn close_request(&self) -> glib::Propagation {
            let obj = self.obj();
            let counts = obj.state_counts();
            if counts.running + counts.queued == 0 || self.close_confirmed.get() {
                obj.stop_all_jobs();
                return glib::Propagation::Proceed;
            }
            obj.confirm_close(counts);
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
    pub fn state_counts(&self) -> StateCounts {
        let Some(jobs) = self.imp().jobs.borrow().clone() else {
            return StateCounts::default();
        };
        StateCounts {
            queued: jobs.queued() as usize,
            running: jobs.running() as usize,
            succeeded: jobs.succeeded() as usize,
            failed: jobs.failed() as usize,
            cancelled: jobs.cancelled() as usize,
        }
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
    /// chooser, then calls `chosen` with the paths picked, unless it was cancelled.
    fn choose_paths(
        &self,
        title: &str,
        accept: &str,
        action: gtk::FileChooserAction,
        multiple: bool,
        chosen: impl Fn(&Self, Vec<PathBuf>) + 'static,
    ) {
        let chooser = gtk::FileChooserNative::new(
            Some(title),
            Some(self),
            action,
            Some(accept),
            Some("_Cancel"),
        );
        chooser.set_select_multiple(multiple);
        chooser.connect_response(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |chooser, response| {
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
        chooser.show();
    }

    pub fn set_max_running(&self, n: usize) {
        let n = n.max(1);
        self.queue().set_max_running(n);
        let spin = &self.imp().parallel_spin;
        if spin.value() as usize != n {
            spin.set_value(n as f64);
        }
        self.refresh_status();
    }

    fn setup(&self) {
        let imp = self.imp();
        imp.weak_self.set(Some(self));
        imp.notify_when_done.set(true);
        self.setup_drop_target();
        self.setup_shortcuts_window();
        let queue = Queue::new();
        imp.parallel_spin.set_value(queue.max_running() as f64);
        imp.launcher_entry.connect_activate(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.apply_launcher_entry()
        ));
        imp.parallel_spin.connect_value_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |spin| {
                let n = spin.value() as usize;
                if n != window.queue().max_running() {
                    window.set_max_running(n);
                }
            }
        ));
        imp.queue.replace(Some(queue.clone()));
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
        let filter = gtk::CustomFilter::new(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[upgrade_or]
            true,
            move |item| {
                let wanted = window.imp().state_filter.selected();
                let Some(job) = item.downcast_ref::<JobObject>() else {
                    return true;
                };
                match wanted {
                    1 => job.state() == state::QUEUED,
                    2 => job.state() == state::RUNNING,
                    3 => job.state() == state::SUCCEEDED,
                    4 => job.state() == state::FAILED,
                    5 => job.state() == state::CANCELLED,
                    _ => true,
                }
            }
        ));
        imp.state_filter.connect_selected_notify(glib::clone!(
            #[weak]
            filter,
            move |_| filter.changed(gtk::FilterChange::Different)
        ));
        let filtered = gtk::FilterListModel::new(Some(store.clone()), Some(filter.clone()));
        let sorted = gtk::SortListModel::new(Some(filtered), imp.column_view.sorter());
        let selection = gtk::MultiSelection::new(Some(sorted));
        selection.connect_selection_changed(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_, _, _| window.show_selected()
        ));
        imp.column_view.set_model(Some(&selection));
        super::job_list::add_columns(&imp.column_view);
        imp.jobs.replace(Some(store));
        imp.filter.replace(Some(filter));
        imp.selection.replace(Some(selection));
    }

    fn toast(&self, text: &str) {
        self.imp().toasts.add_toast(adw::Toast::new(text));
    }

    /// Shows the job list (rather than the mosaic or the start page).
    pub fn show_jobs_page(&self) {
        self.imp().stack.set_visible_child_name("jobs");
    }
}

//! The main window: the mosaic, the job list, the inspector and the controls, all fed by the
//! engine's events on the main context. Widgets only: every slow step is the engine's.

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

/// How often the status area and the elapsed times refresh.
const TICK: Duration = Duration::from_millis(250);
/// Most jobs submitted per main-loop turn when a large batch is added...
const SUBMIT_SLICE: usize = 250;
/// ...and the time a turn should spend submitting them and adding their rows.
const SUBMIT_BUDGET: Duration = Duration::from_millis(4);
/// How much lower than the app's the processors' CPU priority is.
const JOB_NICE: i32 = 10;
/// The window over which jobs per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// What the window does when its jobs are all done (for unattended runs).
#[derive(Debug, Clone, Default)]
pub struct Unattended {
    /// Save a PNG of the window here when done (or after `screenshot_after` jobs).
    pub screenshot: Option<PathBuf>,
    /// Take the screenshot once this many jobs have finished, instead of at the end.
    pub screenshot_after: Option<usize>,
    /// Quit when done.
    pub exit_when_done: bool,
}

/// Inputs of a batch still to be submitted.
struct Feed {
    processor: Processor,
    inputs: std::vec::IntoIter<super::EncodedInput>,
    pacer: Pacer,
}

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

    /// Changes a job's record in place.
    fn update_record(&self, id: JobId, change: impl FnOnce(&mut JobRecord)) {
        if let Some(record) = self.imp().records.borrow_mut().get_mut(&id) {
            change(record);
        }
    }

    /// The tile a demo job renders.
    fn tile(&self, id: JobId) -> Option<Tile> {
        match &self.imp().records.borrow().get(&id)?.kind {
            JobKind::Tile(tile) => Some(tile.clone()),
            JobKind::Batch => None,
        }
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

    /// What to do once idle, for unattended runs.
    pub fn set_unattended(&self, unattended: Unattended) {
        self.imp().unattended.replace(unattended);
    }

    /// Changes how many jobs run at once; takes effect at once.
    /// Runs new jobs' processors through `launcher` (as Slurm job steps, or over ssh); the job
    /// list's Worker column then says where each ran.
    pub fn set_launcher(&self, launcher: Option<std::sync::Arc<crate::Launcher>>) {
        let text = launcher.as_ref().map(|l| l.spec()).unwrap_or_default();
        let entry = &self.imp().launcher_entry;
        if entry.text() != text {
            entry.set_text(&text);
        }
        self.imp().launcher.replace(launcher);
    }

    /// The "Run On" entry (for tests).
    #[doc(hidden)]
    pub fn launcher_entry(&self) -> gtk::Entry {
        self.imp().launcher_entry.get()
    }

    /// Where new jobs' processors run (`None`: on this machine).
    pub fn launcher(&self) -> Option<std::sync::Arc<crate::Launcher>> {
        self.imp().launcher.borrow().clone()
    }

    /// Applies the "Run On" entry: `local` (or nothing), `slurm` or `ssh:HOST,...`, then srun
    /// or ssh arguments. It is parsed and its slots counted (an ssh host may be asked) on a
    /// worker thread; then new jobs run through it, at most its slots at once.
    fn apply_launcher_entry(&self) {
        let entry = &self.imp().launcher_entry;
        let text = entry.text().to_string();
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
                        entry.set_tooltip_text(None);
                        let remote = !launcher.is_local();
                        window.set_launcher(remote.then(|| std::sync::Arc::new(launcher)));
                        if remote && slots > 0 {
                            window.set_max_running(slots);
                        }
                    }
                    Ok(Err(err)) => {
                        entry.add_css_class("error");
                        entry.set_tooltip_text(Some(&err.to_string()));
                        window.toast(&err.to_string());
                    }
                    Err(_) => {}
                }
            }
        ));
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

    /// Finds processors and their descriptions on a worker thread; fills the dropdown.
    fn load_processors(&self) {
        let imp = self.imp();
        imp.processor_dropdown.connect_selected_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.show_processor_summary()
        ));
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let found = gio::spawn_blocking(|| {
                    Processor::list()
                        .into_iter()
                        .map(|p| {
                            let description = p.describe(crate::processor::DESCRIBE_TIMEOUT).ok();
                            (p, description)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let imp = window.imp();
                for (processor, _) in &found {
                    imp.processor_names.append(processor.name());
                }
                let blur = found
                    .iter()
                    .position(|(p, _)| p.name() == "blur")
                    .unwrap_or(0);
                imp.processors.replace(found);
                imp.processor_dropdown.set_selected(blur as u32);
                window.show_processor_summary();
            }
        ));
    }

    fn selected_processor(&self) -> Option<(Processor, Option<Description>)> {
        let index = self.imp().processor_dropdown.selected() as usize;
        self.imp().processors.borrow().get(index).cloned()
    }

    fn show_processor_summary(&self) {
        let text = match self.selected_processor() {
            Some((_, Some(d))) => d.summary,
            Some((p, None)) => format!("{} (no description)", p.path().display()),
            None => "No processors found".to_owned(),
        };
        self.imp().processor_summary.set_label(&text);
    }

    fn toast(&self, text: &str) {
        self.imp().toasts.add_toast(adw::Toast::new(text));
    }

    /// Starts the Mandelbrot demo: one job per tile of `mosaic`.
    pub fn start_demo(&self, mosaic: Mosaic) {
        let processor = match Processor::find("mandelbrot") {
            Ok(p) => p,
            Err(err) => return self.toast(&err.to_string()),
        };
        let tiles = mosaic.tiles();
        self.imp().mosaic.set(Some(mosaic));
        self.imp().mosaic_view.set_mosaic(mosaic, &tiles);
        self.imp().stack.set_visible_child_name("mosaic");
        for tile in tiles {
            // A few bytes each: encoding them here costs less than a thread hop.
            let mut cbor = Vec::new();
            if let Err(err) = ciborium::into_writer(&tile.input, &mut cbor) {
                self.toast(&format!("Cannot encode a tile: {err}"));
                continue;
            }
            self.submit(processor.clone(), JobKind::Tile(tile), Arc::new(cbor));
        }
    }

    /// Adds one job per input, for `processor`. The inputs are encoded on a worker thread
    /// (a batch may hold gigabytes of base64), then submitted a slice per main-loop turn.
    pub fn add_jobs(&self, processor: &Processor, inputs: Vec<serde_json::Value>) {
        let imp = self.imp();
        let count = inputs.len();
        imp.unsubmitted.set(imp.unsubmitted.get() + count);
        let processor = processor.clone();
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let encoded = gio::spawn_blocking(move || {
                    inputs
                        .into_iter()
                        .map(|input| crate::inputs::encode_json(input).map(Arc::new))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let imp = window.imp();
                imp.unsubmitted
                    .set(imp.unsubmitted.get().saturating_sub(count));
                let mut failures = Vec::new();
                let inputs: Vec<_> = encoded
                    .into_iter()
                    .filter_map(|input| input.map_err(|e| failures.push(e)).ok())
                    .collect();
                if let Some(first) = failures.first() {
                    window.toast(&format!(
                        "{} of {count} inputs could not be encoded: {first}",
                        failures.len()
                    ));
                }
                window.add_encoded_jobs(&processor, inputs);
                window.refresh_status();
            }
        ));
    }

    /// Adds one job per encoded input, a slice per main-loop turn sized by a [`Pacer`] (at
    /// most `SUBMIT_SLICE` jobs, about `SUBMIT_BUDGET` of work), so that adding a hundred
    /// thousand jobs never freezes the window.
    pub fn add_encoded_jobs(&self, processor: &Processor, inputs: Vec<super::EncodedInput>) {
        if inputs.is_empty() {
            return;
        }
        if self.imp().mosaic.get().is_none() {
            self.show_jobs_page();
        }
        let imp = self.imp();
        imp.unsubmitted.set(imp.unsubmitted.get() + inputs.len());
        let feed = Feed {
            processor: processor.clone(),
            inputs: inputs.into_iter(),
            pacer: Pacer::new(SUBMIT_BUDGET, SUBMIT_SLICE),
        };
        self.submit_slice(feed);
    }

    /// Submits the next slice of `feed`, then schedules the rest: on the next idle turn, or
    /// after the pause the pacer asks for.
    fn submit_slice(&self, mut feed: Feed) {
        let began = Instant::now();
        let slice: Vec<_> = feed.inputs.by_ref().take(feed.pacer.next()).collect();
        let taken = slice.len();
        for input in slice {
            self.submit(feed.processor.clone(), JobKind::Batch, input);
        }
        let imp = self.imp();
        imp.unsubmitted
            .set(imp.unsubmitted.get().saturating_sub(taken));
        feed.pacer.record(taken, began.elapsed());
        if feed.inputs.len() == 0 {
            self.refresh_status();
            return;
        }
        let pause = feed.pacer.pause();
        let next = glib::clone!(
            #[weak(rename_to = window)]
            self,
            move || window.submit_slice(feed)
        );
        if pause.is_zero() {
            glib::idle_add_local_once(next);
        } else {
            glib::timeout_add_local_once(pause, next);
        }
    }

    /// Shows the job list (rather than the mosaic or the start page).
    pub fn show_jobs_page(&self) {
        self.imp().stack.set_visible_child_name("jobs");
    }

    fn add_example_job(&self) {
        match self.selected_processor() {
            Some((processor, Some(description))) => {
                self.add_jobs(&processor, vec![description.example_input])
            }
            Some((processor, None)) => {
                self.toast(&format!("{} gives no example input", processor.name()))
            }
            None => self.toast("No processor is selected"),
        }
    }

    fn choose_jsonl_file(&self) {
        let Some((processor, _)) = self.selected_processor() else {
            return self.toast("No processor is selected");
        };
        let chooser = gtk::FileChooserNative::new(
            Some("Add Jobs From a JSONL File"),
            Some(self),
            gtk::FileChooserAction::Open,
            Some("_Add Jobs"),
            Some("_Cancel"),
        );
        chooser.connect_response(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |chooser, response| {
                if response == gtk::ResponseType::Accept {
                    if let Some(path) = chooser.file().and_then(|f| f.path()) {
                        window.add_jobs_from_file(processor.clone(), path);
                    }
                }
                chooser.destroy();
            }
        ));
        chooser.show();
    }

    /// Reads and encodes a JSON Lines file on a worker thread, then adds one job per line.
    pub fn add_jobs_from_file(&self, processor: Processor, path: PathBuf) {
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let read = gio::spawn_blocking(move || super::read_jsonl(&path)).await;
                match read {
                    Ok(Ok(inputs)) => window.add_encoded_jobs(&processor, inputs),
                    Ok(Err(err)) => window.toast(&err),
                    Err(_) => window.toast("Reading the file failed"),
                }
            }
        ));
    }

    /// Submits one job and keeps its record; its row comes from the job model when the queue
    /// tells of it (rows told together join the list together). Nothing here is proportional
    /// to the input's size: it is encoded already and shared with the queue.
    fn submit(
        &self,
        processor: Processor,
        kind: JobKind,
        input: super::EncodedInput,
    ) -> Option<JobId> {
        let imp = self.imp();
        let queue = self.queue();
        // Processors yield the CPU to the main loop: the window stays smooth on a busy machine.
        let mut job = Job::new(processor.clone()).nice(JOB_NICE);
        if imp.sandboxed.get() {
            job = job.sandbox(crate::Sandbox::new());
        }
        if let Some(launcher) = imp.launcher.borrow().as_ref() {
            job = job.launcher(launcher.clone());
        }
        let record = JobRecord {
            processor,
            kind: kind.clone(),
            input: input.clone(),
            output: None,
            error: None,
            stats: Default::default(),
            started_at: None,
        };
        // One weak reference for all pending jobs: GLib keeps an object's weak references in
        // a list, and clearing one of ten thousand walks it.
        let window = imp.weak_self.clone();
        let id = match kind {
            JobKind::Tile(tile) => queue.submit_cbor::<TileOutput>(&job, input).map(|handle| {
                let id = handle.id();
                handle.on_finished(move |finished| {
                    if let Some(window) = window.upgrade() {
                        window.on_tile_finished(&tile, finished);
                    }
                });
                id
            }),
            JobKind::Batch => queue
                .submit_cbor::<ciborium::Value>(&job, input)
                .map(|handle| {
                    let id = handle.id();
                    handle.on_finished(move |finished| {
                        if let Some(window) = window.upgrade() {
                            window.on_value_finished(finished);
                        }
                    });
                    id
                }),
        };
        match id {
            Ok(id) => {
                imp.records.borrow_mut().insert(id, record);
                imp.outstanding.set(imp.outstanding.get() + 1);
                imp.work_started.set(true);
                Some(id)
            }
            Err(err) => {
                self.toast(&err.to_string());
                None
            }
        }
    }

    /// What the window does with the queue's events besides the rows (which the job model
    /// keeps): the records for the inspector, the mosaic's tiles, the rate, the unattended
    /// steps.
    fn on_queue_event(&self, event: &QueueEvent) {
        match event {
            QueueEvent::Queued { .. } | QueueEvent::Progress { .. } => {}
            QueueEvent::Started { id, pid, worker } => {
                self.update_record(*id, |r| {
                    r.started_at = Some(Instant::now());
                    r.stats.pid = Some(*pid);
                    r.stats.worker = *worker;
                });
                if let Some(tile) = self.tile(*id) {
                    self.imp()
                        .mosaic_view
                        .set_tile_state(tile.x, tile.y, TileState::Running);
                }
            }
            QueueEvent::Finished { id, error, stats } => {
                self.update_record(*id, |r| {
                    r.stats = stats.clone();
                    r.error = error.clone();
                });
                if error.is_some() {
                    if let Some(tile) = self.tile(*id) {
                        self.imp()
                            .mosaic_view
                            .set_tile_state(tile.x, tile.y, TileState::Failed);
                    }
                }
                self.imp()
                    .finish_times
                    .borrow_mut()
                    .push_back(Instant::now());
                self.maybe_screenshot_midway();
                // The queue hands a job's result over before it tells `Finished`: the last
                // job's end is where the window finds itself idle.
                if self.is_idle() {
                    self.refresh_status();
                    self.when_idle();
                }
            }
        }
    }

    fn result_arrived(&self) {
        let imp = self.imp();
        imp.outstanding.set(imp.outstanding.get().saturating_sub(1));
        if self.is_idle() {
            self.refresh_status();
            self.when_idle();
        }
    }

    fn on_tile_finished(&self, tile: &Tile, finished: Finished<TileOutput>) {
        if let Ok(output) = finished.result {
            if output.rgba.len() == output.width as usize * output.height as usize * 4 {
                let stride = output.width as usize * 4;
                let bytes = glib::Bytes::from_owned(output.rgba);
                let texture: gdk::Texture = gdk::MemoryTexture::new(
                    output.width as i32,
                    output.height as i32,
                    gdk::MemoryFormat::R8g8b8a8,
                    &bytes,
                    stride,
                )
                .upcast();
                self.imp().mosaic_view.set_tile_state(
                    tile.x,
                    tile.y,
                    TileState::Done(texture.clone()),
                );
                self.update_record(finished.id, |r| r.output = Some(JobOutput::Tile(texture)));
            }
        }
        self.result_arrived();
    }

    fn on_value_finished(&self, finished: Finished<ciborium::Value>) {
        if let Ok(value) = finished.result {
            self.update_record(finished.id, |r| {
                r.output = Some(JobOutput::Value(Rc::new(value)))
            });
        }
        self.result_arrived();
    }

    fn selected_jobs(&self) -> Vec<JobObject> {
        let Some(selection) = self.imp().selection.borrow().clone() else {
            return Vec::new();
        };
        let bits = selection.selection();
        (0..bits.size())
            .filter_map(|i| selection.item(bits.nth(i as u32)))
            .filter_map(|o| o.downcast::<JobObject>().ok())
            .collect()
    }

    fn show_selected(&self) {
        let inspector = &self.imp().inspector;
        match self.selected_jobs().first() {
            Some(job) => {
                inspector.show_job(job, self.record(job.job_id()));
                inspector.set_visible(true);
            }
            None => inspector.set_visible(false),
        }
    }

    /// Selects exactly the jobs with these ids in the list.
    pub fn select_jobs(&self, ids: &[JobId]) {
        let Some(selection) = self.imp().selection.borrow().clone() else {
            return;
        };
        selection.unselect_all();
        for i in 0..selection.n_items() {
            let is_wanted = selection
                .item(i)
                .and_downcast::<JobObject>()
                .is_some_and(|j| ids.contains(&j.job_id()));
            if is_wanted {
                selection.select_item(i, false);
            }
        }
    }

    fn cancel_selected(&self) {
        let queue = self.queue();
        for job in self.selected_jobs() {
            queue.cancel(job.job_id());
        }
    }

    fn retry_failed(&self) {
        let jobs = self.jobs();
        let mut failed: Vec<JobId> = (0..jobs.n_items())
            .filter_map(|i| jobs.item(i).and_downcast::<JobObject>())
            .filter(|j| j.state() == state::FAILED || j.state() == state::CANCELLED)
            .map(|j| j.job_id())
            .collect();
        failed.sort_by_key(|id| id.0);
        jobs.remove_finished(&failed);
        for id in failed {
            let Some(record) = self.imp().records.borrow_mut().remove(&id) else {
                continue;
            };
            if let JobKind::Tile(tile) = &record.kind {
                self.imp()
                    .mosaic_view
                    .set_tile_state(tile.x, tile.y, TileState::Queued);
            }
            self.submit(record.processor, record.kind, record.input);
        }
    }

    fn clear_finished(&self) {
        let jobs = self.jobs();
        jobs.clear_finished();
        self.imp()
            .records
            .borrow_mut()
            .retain(|id, _| jobs.job(*id).is_some());
    }

    fn on_tick(&self) {
        // Only running jobs change on their own; the model looks at those alone.
        self.jobs().refresh_elapsed();
        self.refresh_status();
    }

    /// Updates the status area: counts, rate, overall progress and time left.
    pub fn refresh_status(&self) {
        let imp = self.imp();
        let counts = self.state_counts();
        let total =
            counts.queued + counts.running + counts.succeeded + counts.failed + counts.cancelled;
        let done = total - counts.queued - counts.running;
        let paused = if imp.queue.borrow().as_ref().is_some_and(Queue::is_paused) {
            " · paused"
        } else {
            ""
        };
        imp.counts_label.set_label(&format!(
            "{} queued · {} running · {} succeeded · {} failed · {} cancelled{paused}",
            counts.queued, counts.running, counts.succeeded, counts.failed, counts.cancelled
        ));
        let mut times = imp.finish_times.borrow_mut();
        while times.front().is_some_and(|t| t.elapsed() > RATE_WINDOW) {
            times.pop_front();
        }
        let rate = match (times.front(), times.len()) {
            (Some(first), n) if n >= 2 => (n - 1) as f64 / first.elapsed().as_secs_f64().max(0.25),
            _ => 0.0,
        };
        imp.rate_label.set_label(&format!("{rate:.1} jobs/s"));
        let fraction = if total == 0 {
            0.0
        } else {
            done as f64 / total as f64
        };
        imp.overall_progress.set_fraction(fraction);
        let left = total - done;
        let text = if left == 0 {
            format!("{done} of {total} done")
        } else if rate > 0.0 {
            format!(
                "{done} of {total} done · about {} left",
                format_eta(left as f64 / rate)
            )
        } else {
            format!("{done} of {total} done")
        };
        imp.overall_progress.set_text(Some(&text));
        imp.spinner.set_spinning(counts.running > 0);
    }

    /// Runs the unattended steps once all work is done.
    fn when_idle(&self) {
        let imp = self.imp();
        if !imp.work_started.get() {
            return;
        }
        let unattended = imp.unattended.borrow().clone();
        if unattended.screenshot.is_none() && !unattended.exit_when_done {
            return;
        }
        self.after_next_paint(move |window| {
            if !window.imp().screenshot_taken.get() {
                window.take_screenshot(unattended.screenshot.as_deref());
            }
            if unattended.exit_when_done {
                window.close();
            }
        });
    }

    /// Takes the unattended screenshot once `screenshot_after` jobs have finished.
    fn maybe_screenshot_midway(&self) {
        let imp = self.imp();
        let Some(after) = imp.unattended.borrow().screenshot_after else {
            return;
        };
        let counts = self.state_counts();
        let finished = counts.succeeded + counts.failed + counts.cancelled;
        if finished >= after && !imp.screenshot_taken.get() {
            let unattended = imp.unattended.borrow().clone();
            imp.screenshot_taken.set(true);
            self.after_next_paint(move |window| {
                window.take_screenshot(unattended.screenshot.as_deref())
            });
        }
    }

    fn take_screenshot(&self, path: Option<&std::path::Path>) {
        self.imp().screenshot_taken.set(true);
        if let Some(path) = path {
            if let Err(err) = self.save_screenshot(path) {
                eprintln!("offload: cannot save the screenshot: {err}");
            }
        }
    }

    /// Runs `then` once the next frame has been drawn. Widgets keep the render node of their
    /// last frame, and a paintable of a widget shows that node, so a screenshot taken then
    /// shows the latest state.
    fn after_next_paint(&self, then: impl FnOnce(&Self) + 'static) {
        let Some(clock) = self.frame_clock() else {
            return then(self);
        };
        let then = Rc::new(RefCell::new(Some(then)));
        let handler: Rc<RefCell<Option<glib::SignalHandlerId>>> = Rc::default();
        let id = clock.connect_after_paint(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[strong]
            handler,
            move |clock| {
                if let Some(id) = handler.take() {
                    clock.disconnect(id);
                }
                let then = then.clone();
                // Leave the paint first; use the render nodes from the main loop.
                glib::idle_add_local_once(glib::clone!(
                    #[weak]
                    window,
                    move || {
                        if let Some(then) = then.take() {
                            then(&window);
                        }
                    }
                ));
            }
        ));
        handler.replace(Some(id));
        self.refresh_status();
        self.queue_draw();
    }

    /// Renders the window into a PNG, through the widget tree (no screenshot tool).
    pub fn save_screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        let (width, height) = (self.width(), self.height());
        if width <= 0 || height <= 0 {
            return Err("the window has no size yet".to_owned());
        }
        // The window's content, not the window: a paintable of a toplevel draws nothing.
        let content = self.content().ok_or("the window has no content")?;
        let (width, height) = (content.width(), content.height());
        let parent = content.parent().ok_or("the content has no parent")?;
        let snapshot = gtk::Snapshot::new();
        // The window background shows through the content's transparent parts.
        let background = self.style_context().lookup_color("window_bg_color");
        let bounds = gtk::graphene::Rect::new(0.0, 0.0, width as f32, height as f32);
        snapshot.append_color(&background.unwrap_or(gdk::RGBA::WHITE), &bounds);
        // Draw the widget tree afresh (not a cached frame), the way its parent draws it.
        parent.snapshot_child(&content, &snapshot);
        let node = snapshot.to_node().ok_or("nothing was drawn")?;
        let renderer = self
            .renderer()
            .ok_or("the window has no renderer (not realized)")?;
        let texture = renderer.render_texture(&node, Some(&bounds));
        texture.save_to_png(path).map_err(|e| e.to_string())
    }

    fn confirm_close(&self, counts: StateCounts) {
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

fn format_eta(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

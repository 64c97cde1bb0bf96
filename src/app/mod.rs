//! The GTK app: a thin layer of widgets over the engine. It adds no job logic of its own; the
//! queue, the runners and the outcomes are the same as the CLI's.

pub mod batch;
pub mod inspector;
pub mod job_list;
pub mod mosaic_view;
pub mod pacing;
pub mod param_form;
pub mod record;
pub mod settings;
pub mod stall;
pub mod window;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use adw::prelude::*;
use gtk::{gio, glib};

pub use stall::{StallProbe, StallReport, STALL_REPORT_ENV};
pub use window::{Unattended, Window};

use crate::Processor;

/// What `offload gui` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Start the Mandelbrot demo at once.
    pub demo: bool,
    /// Run this processor over this JSON Lines file at once.
    pub batch: Option<(String, PathBuf)>,
    /// Save a PNG of the window when all jobs are done.
    pub screenshot: Option<PathBuf>,
    /// Save the screenshot once this many jobs have finished instead.
    pub screenshot_after: Option<usize>,
    /// The demo's mosaic.
    pub mosaic: crate::mosaic::Mosaic,
    /// Quit when all jobs are done.
    pub exit_when_done: bool,
    /// Print the main loop's stall figures on exit.
    pub stall_report: bool,
    /// How many jobs run at once (default: the number of cores, or the launcher's slots).
    pub jobs: Option<usize>,
    /// Where new jobs' processors run (`None`: on this machine).
    pub launcher: Option<std::sync::Arc<crate::Launcher>>,
    /// Run a processor on files at once.
    pub files: Option<FileRun>,
}

/// `offload gui --processor NAME [--output-dir DIR] [--param KEY=VALUE]... FILE...`.
#[derive(Debug, Clone, Default)]
pub struct FileRun {
    pub processor: String,
    pub output_dir: Option<PathBuf>,
    pub params: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Runs the app until its window closes. Exit status 0, or 1 when unattended work had failures.
pub fn run(options: AppOptions) -> ExitCode {
    let app = adw::Application::builder()
        .application_id("io.github.offload.Offload")
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let failed = Rc::new(Cell::new(false));
    let wants_probe =
        options.stall_report || std::env::var_os(STALL_REPORT_ENV).is_some_and(|v| v != "0");
    let report: Rc<RefCell<Option<StallReport>>> = Rc::default();
    app.connect_activate(glib::clone!(
        #[strong]
        failed,
        #[strong]
        report,
        move |app| {
            let window = activate(app, &options, &failed);
            if wants_probe {
                start_probe_after_first_frame(&window, report.clone());
            }
        }
    ));
    let status = app.run_with_args::<&str>(&[]);
    if let Some(report) = report.borrow().as_ref() {
        eprintln!("{report}");
    }
    if status != glib::ExitCode::SUCCESS || failed.get() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Measures main-loop stalls from the window's first frame until it starts closing, so that
/// the figures are about running jobs: not about start-up (building widgets, compiling
/// shaders) nor about tearing the window down.
fn start_probe_after_first_frame(window: &Window, report: Rc<RefCell<Option<StallReport>>>) {
    let probe: Rc<RefCell<Option<StallProbe>>> = Rc::default();
    let frames = Cell::new(0);
    window.add_tick_callback(glib::clone!(
        #[strong]
        probe,
        move |_, _| {
            frames.set(frames.get() + 1);
            if frames.get() < 2 {
                return glib::ControlFlow::Continue;
            }
            probe.replace(Some(StallProbe::start()));
            glib::ControlFlow::Break
        }
    ));
    let stop = move || {
        if let Some(probe) = probe.take() {
            report.replace(Some(probe.report()));
        }
    };
    let stop = Rc::new(stop);
    window.connect_close_request(glib::clone!(
        #[strong]
        stop,
        move |_| {
            stop();
            glib::Propagation::Proceed
        }
    ));
    window.connect_destroy(move |_| stop());
}

fn activate(app: &adw::Application, options: &AppOptions, failed: &Rc<Cell<bool>>) -> Window {
    let window = Window::new(Some(app), options.jobs);
    window.set_launcher(options.launcher.clone());
    window.set_unattended(Unattended {
        screenshot: options.screenshot.clone(),
        screenshot_after: options.screenshot_after,
        exit_when_done: options.exit_when_done,
    });
    window.connect_close_request(glib::clone!(
        #[strong]
        failed,
        move |window| {
            let counts = window.state_counts();
            failed.set(
                failed.get()
                    || counts.failed + counts.cancelled > 0
                    || !window.skipped_files().is_empty()
                    || !window.file_errors().is_empty(),
            );
            glib::Propagation::Proceed
        }
    ));
    // SIGINT and SIGTERM quit like closing the window: every processor is stopped first.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        glib_unix::unix_signal_add_local(
            signal,
            glib::clone!(
                #[weak]
                window,
                #[upgrade_or]
                glib::ControlFlow::Break,
                move || {
                    window.stop_all_jobs();
                    window.destroy();
                    glib::ControlFlow::Break
                }
            ),
        );
    }
    if let Some(run) = &options.files {
        window.show_jobs_page();
        window.set_output_dir(run.output_dir.clone());
        match Processor::find(&run.processor) {
            Ok(processor) => window.add_files(
                &processor,
                run.params.clone(),
                window.output_dir(),
                run.files.clone(),
            ),
            Err(err) => {
                eprintln!("offload: {err}");
                failed.set(true);
                window.close();
            }
        }
    }
    if options.batch.is_some() && !options.demo {
        // Open on the page the batch will show, rather than switch to it once the file is read.
        window.show_jobs_page();
    }
    window.present();
    if options.demo {
        window.start_demo(options.mosaic);
    }
    if let Some((name, path)) = &options.batch {
        match Processor::find(name) {
            Ok(processor) => window.add_jobs_from_file(processor, path.clone()),
            Err(err) => {
                eprintln!("offload: {err}");
                failed.set(true);
                window.close();
            }
        }
    }
    window
}

/// An input encoded as the CBOR item a processor reads, shared with the queue.
pub type EncodedInput = Arc<Vec<u8>>;

/// Reads and encodes a JSON Lines file ([`crate::inputs::json_lines_bounded`]), each line
/// bounded by the queue's input limit as it is read. Blocking: for a worker thread.
pub fn read_jsonl(path: &Path) -> Result<Vec<EncodedInput>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("Cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let max_line = crate::RunLimits::default().max_input_bytes as u64;
    crate::inputs::json_lines_bounded(std::io::BufReader::new(file), &name, max_line)
        .map(|item| item.map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// A byte count for people: `2.0 KiB`, `3.4 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

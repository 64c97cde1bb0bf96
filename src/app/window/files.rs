//! Jobs on a person's files: files and folders (searched recursively) become one job each for
//! a processor that declares files; the files it does not take are listed as skipped. Files
//! are read off the main thread and only as the queue needs them (a few per slot), and each
//! output is written off the main thread and dropped from memory, so the app's memory stays
//! flat however many files there are.

use super::*;

use std::collections::VecDeque;

use crate::files::FileJobs;

/// Files waiting to be read and submitted, for one batch.
pub(super) struct FileFeed {
    processor: Processor,
    jobs: Arc<FileJobs>,
    pub(super) batch: Rc<AppBatch>,
    pub(super) paths: VecDeque<PathBuf>,
}

/// Jobs queued at most per slot while files wait: enough to keep every slot busy.
const QUEUED_PER_SLOT: usize = 2;

impl Window {
    /// Runs `processor` on `paths` (files, and folders searched recursively), with `params`
    /// (`KEY=VALUE`, checked against its description first) and the outputs in `output_dir`.
    pub fn add_files(
        &self,
        processor: &Processor,
        params: Vec<String>,
        output_dir: PathBuf,
        paths: Vec<PathBuf>,
    ) {
        let imp = self.imp();
        let title = batch_title(processor, &paths);
        let batch = Rc::new(AppBatch::new(
            &self.queue(),
            title,
            processor,
            params.clone(),
            Some(output_dir.clone()),
        ));
        // Counted as waiting until the folders are searched, so the window is not idle.
        batch.add_waiting(1);
        self.start_batch(&batch);
        imp.unsubmitted.set(imp.unsubmitted.get() + 1);
        self.show_jobs_page();
        let processor = processor.clone();
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                // Described as its jobs will run (sandboxed, if they are).
                let job = window.job_for(&processor);
                let found = gio::spawn_blocking(move || prepare(&job, &params, &output_dir, paths))
                    .await
                    .unwrap_or_else(|_| Err("Preparing the files failed".to_owned()));
                let imp = window.imp();
                imp.unsubmitted.set(imp.unsubmitted.get().saturating_sub(1));
                batch.drop_waiting(1);
                match found {
                    Ok((jobs, accepted, skipped)) => {
                        window.note_skipped(&jobs, skipped);
                        if accepted.is_empty() {
                            window.toast("None of these files is one the processor takes");
                        }
                        if !batch.is_cancelled() {
                            window.add_file_paths(processor, Arc::new(jobs), &batch, accepted);
                        }
                    }
                    Err(why) => {
                        imp.file_errors.borrow_mut().push(why.clone());
                        window.toast(&why);
                    }
                }
                window.check_batches();
                if window.is_idle() {
                    window.refresh_status();
                    window.when_idle();
                }
            }
        ));
    }

    /// Files skipped so far (not taken by the processor, not regular files, unreadable, too
    /// large), and why.
    pub fn skipped_files(&self) -> Vec<(PathBuf, String)> {
        self.imp().skipped.borrow().clone()
    }

    /// Errors that kept files from running at all (a parameter, a processor without files).
    pub fn file_errors(&self) -> Vec<String> {
        self.imp().file_errors.borrow().clone()
    }

    /// Queues `paths` (files the processor takes) to be read and submitted as slots free up.
    pub(super) fn add_file_paths(
        &self,
        processor: Processor,
        jobs: Arc<FileJobs>,
        batch: &Rc<AppBatch>,
        paths: Vec<PathBuf>,
    ) {
        if paths.is_empty() {
            return;
        }
        self.show_jobs_page();
        let imp = self.imp();
        imp.unsubmitted.set(imp.unsubmitted.get() + paths.len());
        batch.add_waiting(paths.len());
        imp.file_feeds.borrow_mut().push_back(FileFeed {
            processor,
            jobs,
            batch: batch.clone(),
            paths: paths.into(),
        });
        self.feed_files();
    }

    /// Reads the next files on a worker thread and submits them, while fewer than
    /// `QUEUED_PER_SLOT` jobs per slot wait in the queue. Called again as jobs end.
    pub(super) fn feed_files(&self) {
        let imp = self.imp();
        if imp.reading_files.get() {
            return;
        }
        let queue = self.queue();
        let room = (queue.max_running() * QUEUED_PER_SLOT).saturating_sub(queue.counts().queued);
        if room == 0 {
            return;
        }
        let (processor, jobs, batch, slice) = {
            let mut feeds = imp.file_feeds.borrow_mut();
            let Some(feed) = feeds.front_mut() else {
                return;
            };
            let take = room.min(feed.paths.len());
            let slice: Vec<PathBuf> = feed.paths.drain(..take).collect();
            let taken = (
                feed.processor.clone(),
                feed.jobs.clone(),
                feed.batch.clone(),
                slice,
            );
            if feed.paths.is_empty() {
                feeds.pop_front();
            }
            taken
        };
        imp.reading_files.set(true);
        let max_input = crate::RunLimits::default().max_input_bytes as u64;
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let read = gio::spawn_blocking({
                    let jobs = jobs.clone();
                    move || {
                        slice
                            .into_iter()
                            .map(|path| {
                                let input = jobs.input(&path, max_input);
                                (path, input)
                            })
                            .collect::<Vec<_>>()
                    }
                })
                .await
                .unwrap_or_default();
                let imp = window.imp();
                imp.reading_files.set(false);
                let mut skipped = Vec::new();
                for (path, input) in read {
                    imp.unsubmitted.set(imp.unsubmitted.get().saturating_sub(1));
                    if batch.is_cancelled() {
                        // Read while the batch was cancelled: counted cancelled already.
                        continue;
                    }
                    match input {
                        Ok(bytes) => {
                            let kind = JobKind::File {
                                path,
                                jobs: jobs.clone(),
                            };
                            window.submit(processor.clone(), kind, Arc::new(bytes), &batch);
                        }
                        Err(why) => {
                            batch.drop_waiting(1);
                            skipped.push((path, why));
                        }
                    }
                }
                window.note_skipped(&jobs, skipped);
                window.feed_files();
                window.check_batches();
                if window.is_idle() {
                    window.refresh_status();
                    window.when_idle();
                }
            }
        ));
    }

    /// A file job's result: its output is written on a worker thread, then dropped.
    pub(super) fn on_file_finished(
        &self,
        path: PathBuf,
        jobs: Arc<FileJobs>,
        finished: Finished<ciborium::Value>,
    ) {
        let Ok(value) = finished.result else {
            self.result_arrived(finished.id, false);
            return;
        };
        let id = finished.id;
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let written = gio::spawn_blocking(move || jobs.write(&path, value))
                    .await
                    .unwrap_or_else(|_| Err("writing the output failed".to_owned()));
                let mut wrote = false;
                match written {
                    Ok((file, _rest)) => {
                        if let Some(job) = window.job(id) {
                            job.set_output(&file);
                        }
                        window.update_record(id, |r| r.output = Some(JobOutput::File(file)));
                        window
                            .imp()
                            .files_written
                            .set(window.imp().files_written.get() + 1);
                        wrote = true;
                    }
                    Err(why) => {
                        // Not a success: the row shows it failed, and why.
                        let error = crate::JobError::new(
                            crate::FailureKind::OutputNotWritten,
                            format!("the output was not written: {why}"),
                        );
                        if window.jobs().fail(id, error.clone()) {
                            if let Some(batch) = window.record(id).and_then(|r| r.batch) {
                                batch.failed_after(id, &error);
                            }
                        }
                        window.update_record(id, |r| r.error = Some(error));
                        window.imp().file_errors.borrow_mut().push(why.clone());
                        window.toast(&format!("Job {}: {why}", id.0));
                    }
                }
                window.result_arrived(id, wrote);
            }
        ));
    }

    fn note_skipped(&self, jobs: &FileJobs, skipped: Vec<(PathBuf, String)>) {
        if skipped.is_empty() {
            return;
        }
        // Files it does not take are the usual case, said once; any other reason (a FIFO, a
        // file too large, unreadable) goes with the file's name.
        let not_taken = skipped
            .iter()
            .all(|(_, why)| why.starts_with("not a file it takes"));
        let names: Vec<String> = skipped
            .iter()
            .take(3)
            .map(|(p, why)| {
                let name = p
                    .file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
                if not_taken {
                    name
                } else {
                    format!("{name} ({why})")
                }
            })
            .collect();
        let more = if skipped.len() > 3 { ", …" } else { "" };
        let plural = if skipped.len() == 1 { "" } else { "s" };
        self.toast(&if not_taken {
            format!(
                "Skipped {} file{plural} it does not take (it takes .{}): {}{more}",
                skipped.len(),
                jobs.extensions().join(", ."),
                names.join(", ")
            )
        } else {
            format!(
                "Skipped {} file{plural}: {}{more}",
                skipped.len(),
                names.join(", ")
            )
        });
        self.imp().skipped.borrow_mut().extend(skipped);
    }

    /// Runs the selected processor on `paths` with the form's parameters, as Add Folder...,
    /// Add Files... and a drop do; whether it takes files.
    pub fn add_files_from_form(&self, paths: Vec<PathBuf>) -> bool {
        match self.selected_processor() {
            Some((processor, Some(d))) if d.files.is_some() => {
                let params = self.form_params();
                self.add_files(&processor, params, self.output_dir(), paths);
                true
            }
            Some((processor, _)) => {
                self.toast(&format!(
                    "{} does not work on files: choose an action that does, such as {}",
                    super::processors::human_name(processor.name()),
                    super::processors::human_name("thumbnail")
                ));
                false
            }
            None => {
                self.toast("No action to run: no processor was found");
                false
            }
        }
    }

    /// Asks for a folder (or files) for the selected processor, then runs it on them.
    pub(super) fn choose_files(&self, folder: bool) {
        if !self.processors_loaded() && !self.imp().processors_searched.get() {
            // Asked before the processors are found (they are, at start): asked again then.
            self.imp().choose_when_loaded.set(Some(folder));
            return;
        }
        let Some((processor, description)) = self.selected_processor() else {
            return self.toast("No action to run: no processor was found");
        };
        if description
            .as_ref()
            .and_then(|d| d.files.as_ref())
            .is_none()
        {
            self.imp().flap.set_reveal_flap(true);
            return self.toast(&format!(
                "{} does not work on files: choose an action that does, such as {}",
                super::processors::human_name(processor.name()),
                super::processors::human_name("thumbnail")
            ));
        }
        let name = super::processors::human_name(processor.name());
        let (title, action) = if folder {
            (
                format!("{name}: Choose a Folder"),
                gtk::FileChooserAction::SelectFolder,
            )
        } else {
            (
                format!("{name}: Choose Files"),
                gtk::FileChooserAction::Open,
            )
        };
        self.choose_paths(&title, "_Run", action, !folder, |window, paths| {
            window.add_files_from_form(paths);
        });
    }

    /// Where outputs go: the folder given, else Pictures/offload (or the home folder's
    /// offload folder).
    pub fn output_dir(&self) -> PathBuf {
        if let Some(dir) = self.imp().output_dir.borrow().clone() {
            return dir;
        }
        if let Some(dir) = self.settings().and_then(|s| s.output_folder()) {
            return dir;
        }
        glib::user_special_dir(glib::UserDirectory::Pictures)
            .unwrap_or_else(glib::home_dir)
            .join("offload")
    }

    /// Sets where outputs go.
    pub fn set_output_dir(&self, dir: Option<PathBuf>) {
        self.imp().output_dir.replace(dir);
        self.show_output_dir();
    }

    /// The output folder as a person reads it (~ for the home folder).
    pub(super) fn output_dir_label(&self) -> String {
        let dir = self.output_dir();
        match dir.strip_prefix(glib::home_dir()) {
            Ok(rest) if !rest.as_os_str().is_empty() => format!("~/{}", rest.display()),
            _ => dir.display().to_string(),
        }
    }

    /// Shows the output folder in the What to Run pane (Preferences follows it).
    pub(super) fn show_output_dir(&self) {
        self.imp().output_row.set_subtitle(&self.output_dir_label());
    }
}

/// "Make Thumbnails · photos": the action and the folder or file it runs on.
fn batch_title(processor: &Processor, paths: &[PathBuf]) -> String {
    let name = super::processors::human_name(processor.name());
    let first = paths
        .first()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    match (first, paths.len()) {
        (Some(first), 1) => format!("{name} · {first}"),
        (Some(first), n) => format!("{name} · {first} and {} more", n - 1),
        (None, _) => name,
    }
}

/// Off the main thread: the processor's description, the checked parameters, and the files
/// (folders searched recursively, in name order) split into taken and skipped.
#[allow(clippy::type_complexity)]
fn prepare(
    job: &crate::Job,
    params: &[String],
    output_dir: &std::path::Path,
    paths: Vec<PathBuf>,
) -> Result<(FileJobs, Vec<PathBuf>, Vec<(PathBuf, String)>), String> {
    let processor = job.processor();
    let description = job
        .describe(crate::processor::DESCRIBE_TIMEOUT)
        .map_err(|err| format!("{} cannot describe itself: {err}", processor.name()))?;
    let jobs = FileJobs::new(processor.name(), &description, params, Some(output_dir))?;
    std::fs::create_dir_all(output_dir)
        .map_err(|err| format!("Cannot create {}: {err}", output_dir.display()))?;
    let mut files = Vec::new();
    for path in paths {
        walk(&path, &mut files);
    }
    let (accepted, skipped): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| jobs.accepts(p));
    let why = format!(
        "not a file it takes (it takes .{})",
        jobs.extensions().join(", .")
    );
    let skipped = skipped.into_iter().map(|p| (p, why.clone())).collect();
    Ok((jobs, accepted, skipped))
}

/// `path` if it is a file, else the files below it, in name order (hidden ones left out).
fn walk(path: &std::path::Path, out: &mut Vec<PathBuf>) {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    children.sort();
    for child in children {
        walk(&child, out);
    }
}

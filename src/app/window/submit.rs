//! Submitting jobs: inputs encoded off the main thread, then submitted a paced slice per
//! main-loop turn, each with its record.

use super::*;

/// Most jobs submitted per main-loop turn when a large batch is added...
const SUBMIT_SLICE: usize = 250;
/// ...and the time a turn should spend submitting them and adding their rows.
const SUBMIT_BUDGET: Duration = Duration::from_millis(4);

/// Inputs of a batch still to be submitted.
struct Feed {
    processor: Processor,
    inputs: std::iter::Enumerate<std::vec::IntoIter<crate::app::EncodedInput>>,
    batch: Rc<AppBatch>,
    pacer: Pacer,
}

impl Window {
    /// Adds one job per input, for `processor`. The inputs are encoded on a worker thread
    /// (a batch may hold gigabytes of base64), then submitted a slice per main-loop turn.
    pub fn add_jobs(&self, processor: &Processor, inputs: Vec<serde_json::Value>) {
        let batch = Rc::new(AppBatch::new(
            &self.queue(),
            format!(
                "{} · {}",
                super::processors::human_name(processor.name()),
                crate::app::batch::count(inputs.len(), "job", "jobs")
            ),
            processor,
            Vec::new(),
            None,
        ));
        self.start_batch(&batch);
        self.add_jobs_to(processor, inputs, &batch);
    }

    /// Adds one job per input to `batch`.
    pub(super) fn add_jobs_to(
        &self,
        processor: &Processor,
        inputs: Vec<serde_json::Value>,
        batch: &Rc<AppBatch>,
    ) {
        let imp = self.imp();
        let count = inputs.len();
        imp.unsubmitted.set(imp.unsubmitted.get() + count);
        batch.add_waiting(count);
        let batch = batch.clone();
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
                batch.drop_waiting(count);
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
                if !batch.is_cancelled() {
                    window.add_encoded_jobs(&processor, inputs, &batch);
                }
                window.check_batches();
                window.refresh_status();
            }
        ));
    }

    /// Adds one job per encoded input, a slice per main-loop turn sized by a [`Pacer`] (at
    /// most `SUBMIT_SLICE` jobs, about `SUBMIT_BUDGET` of work), so that adding a hundred
    /// thousand jobs never freezes the window.
    pub(super) fn add_encoded_jobs(
        &self,
        processor: &Processor,
        inputs: Vec<crate::app::EncodedInput>,
        batch: &Rc<AppBatch>,
    ) {
        if inputs.is_empty() {
            return;
        }
        self.show_jobs_page();
        let imp = self.imp();
        imp.unsubmitted.set(imp.unsubmitted.get() + inputs.len());
        batch.add_waiting(inputs.len());
        let feed = Feed {
            processor: processor.clone(),
            inputs: inputs.into_iter().enumerate(),
            batch: batch.clone(),
            pacer: Pacer::new(SUBMIT_BUDGET, SUBMIT_SLICE),
        };
        self.submit_slice(feed);
    }

    /// Submits the next slice of `feed`, then schedules the rest: on the next idle turn, or
    /// after the pause the pacer asks for.
    fn submit_slice(&self, mut feed: Feed) {
        let began = Instant::now();
        if feed.batch.is_cancelled() {
            // Cancelled: what waits is not submitted (the batch counted it cancelled).
            let imp = self.imp();
            imp.unsubmitted
                .set(imp.unsubmitted.get().saturating_sub(feed.inputs.len()));
            self.check_batches();
            self.refresh_status();
            return;
        }
        let slice: Vec<_> = feed.inputs.by_ref().take(feed.pacer.next()).collect();
        let taken = slice.len();
        for (line, input) in slice {
            let kind = JobKind::Batch {
                label: format!("input {}", line + 1),
            };
            self.submit(feed.processor.clone(), kind, input, &feed.batch);
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

    /// How a new job of `processor` runs, as the window is set now (nice, sandbox, launcher).
    pub(super) fn job_for(&self, processor: &Processor) -> Job {
        let imp = self.imp();
        // Processors yield the CPU to the main loop: the window stays smooth on a busy machine.
        let mut job = Job::new(processor.clone()).nice(self.job_nice());
        if imp.sandboxed.get() {
            job = job.sandbox(crate::Sandbox::new());
        }
        if let Some(launcher) = imp.launcher.borrow().as_ref() {
            job = job.launcher(launcher.clone());
        }
        job
    }

    /// Submits one job and keeps its record; its row comes from the job model when the queue
    /// tells of it (rows told together join the list together). Nothing here is proportional
    /// to the input's size: it is encoded already and shared with the queue.
    pub(super) fn submit(
        &self,
        processor: Processor,
        kind: JobKind,
        input: crate::app::EncodedInput,
        batch: &Rc<AppBatch>,
    ) -> Option<JobId> {
        let imp = self.imp();
        let queue = self.queue();
        let job = self.job_for(&processor);
        let record = JobRecord {
            processor,
            kind: kind.clone(),
            // A file job's input is read again when needed: the record does not hold it.
            input: if matches!(kind, JobKind::File { .. }) {
                Arc::default()
            } else {
                input.clone()
            },
            output: None,
            error: None,
            stats: Default::default(),
            started_at: None,
            batch: Some(batch.clone()),
        };
        // One weak reference for all pending jobs: GLib keeps an object's weak references in
        // a list, and clearing one of ten thousand walks it.
        let window = imp.weak_self.clone();
        let id =
            match kind {
                JobKind::Tile(tile) => queue.submit_cbor::<TileOutput>(&job, input).map(|handle| {
                    let id = handle.id();
                    handle.on_finished(move |finished| {
                        if let Some(window) = window.upgrade() {
                            window.on_tile_finished(&tile, finished);
                        }
                    });
                    id
                }),
                JobKind::File { path, jobs } => queue
                    .submit_cbor::<ciborium::Value>(&job, input)
                    .map(|handle| {
                        let id = handle.id();
                        handle.on_finished(move |finished| {
                            if let Some(window) = window.upgrade() {
                                window.on_file_finished(path, jobs, finished);
                            }
                        });
                        id
                    }),
                JobKind::Batch { .. } => {
                    queue
                        .submit_cbor::<ciborium::Value>(&job, input)
                        .map(|handle| {
                            let id = handle.id();
                            handle.on_finished(move |finished| {
                                if let Some(window) = window.upgrade() {
                                    window.on_value_finished(finished);
                                }
                            });
                            id
                        })
                }
            };
        match id {
            Ok(id) => {
                batch.submitted(id, record.label());
                imp.records.borrow_mut().insert(id, record);
                imp.outstanding.set(imp.outstanding.get() + 1);
                imp.work_started.set(true);
                Some(id)
            }
            Err(err) => {
                batch.drop_waiting(1);
                self.toast(&err.to_string());
                None
            }
        }
    }
}

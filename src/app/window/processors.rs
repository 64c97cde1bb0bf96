//! The What to Run pane: the processors by their human names, the chosen one's parameters (a
//! form), remembered across runs, and the jobs it adds (an example, a JSON Lines file).

use super::*;

/// Names people read for the processors offload ships; any other processor is shown by its
/// own name, capitalised.
const HUMAN_NAMES: [(&str, &str); 7] = [
    ("thumbnail", "Make Thumbnails"),
    ("blur", "Blur Images"),
    ("mandelbrot", "Render Mandelbrot Tiles"),
    ("diag", "Diagnostics"),
    ("jitter", "Jitter a Mesh"),
    ("histogram", "Histogram of Numbers"),
    ("lookup", "Find Primes"),
];

/// The name a person reads for processor `name`.
pub(super) fn human_name(name: &str) -> String {
    if let Some((_, human)) = HUMAN_NAMES.iter().find(|(n, _)| *n == name) {
        return (*human).to_owned();
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => name.to_owned(),
    }
}

/// What running `name` with these values does, in a few words: "Make Thumbnails · 128 px",
/// else the human name and its first parameter.
pub(super) fn action_phrase(
    name: &str,
    description: &Description,
    values: &HashMap<String, String>,
) -> String {
    let human = human_name(name);
    let value = |key: &str| {
        values.get(key).cloned().or_else(|| {
            description
                .parameters
                .iter()
                .find(|p| p.name == key)
                .map(|p| crate::sdk::json::cbor_to_json(&p.default_value()).to_string())
        })
    };
    match name {
        "thumbnail" | "blur" if value("size").is_some() => {
            let format = value("format").map(|f| f.trim_matches('"').to_uppercase());
            match format {
                Some(format) if format != "PNG" => {
                    format!(
                        "{human} · {} px · {format}",
                        value("size").unwrap_or_default()
                    )
                }
                _ => format!("{human} · {} px", value("size").unwrap_or_default()),
            }
        }
        _ => match description.parameters.first() {
            Some(first) => format!(
                "{human} · {} {}",
                first.name,
                value(&first.name).unwrap_or_default()
            ),
            None => human,
        },
    }
}

impl Window {
    /// Finds processors and their descriptions on a worker thread; fills the Action row,
    /// choosing the one used last (else Make Thumbnails, the one that works on photos).
    pub(super) fn load_processors(&self) {
        let imp = self.imp();
        imp.processor_row.connect_selected_notify(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| {
                window.show_processor_summary();
                if let (Some((processor, _)), Some(settings)) =
                    (window.selected_processor(), window.settings())
                {
                    settings.set_processor(processor.name());
                }
            }
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
                let last = window.settings().and_then(|s| s.processor());
                let position = |name: &str| found.iter().position(|(p, _)| p.name() == name);
                let chosen = last
                    .as_deref()
                    .and_then(position)
                    .or_else(|| position("thumbnail"))
                    .or_else(|| {
                        found
                            .iter()
                            .position(|(_, d)| d.as_ref().is_some_and(|d| d.files.is_some()))
                    })
                    .unwrap_or(0);
                let names: Vec<String> = found.iter().map(|(p, _)| human_name(p.name())).collect();
                imp.processors.replace(found);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                imp.processor_names
                    .splice(0, imp.processor_names.n_items(), &names);
                imp.processor_row.set_selected(chosen as u32);
                imp.processors_searched.set(true);
                window.show_processor_summary();
                trace("processors loaded");
                if let Some(folder) = imp.choose_when_loaded.take() {
                    window.choose_files(folder);
                }
            }
        ));
    }

    pub(super) fn selected_processor(&self) -> Option<(Processor, Option<Description>)> {
        let index = self.imp().processor_row.selected() as usize;
        self.imp().processors.borrow().get(index).cloned()
    }

    pub(super) fn show_processor_summary(&self) {
        let selected = self.selected_processor();
        let text = match &selected {
            Some((_, Some(d))) => d.summary.clone(),
            Some((p, None)) => format!("{} (it does not describe itself)", p.path().display()),
            None => "No processors found".to_owned(),
        };
        self.imp().action_group.set_description(Some(&text));
        self.show_param_form(selected);
    }

    /// Replaces the parameter form with the selected processor's (remembering the values of
    /// the one shown before).
    fn show_param_form(&self, selected: Option<(Processor, Option<Description>)>) {
        let imp = self.imp();
        if let Some((name, form)) = imp.param_form.take() {
            imp.param_values.borrow_mut().insert(name, form.values());
            imp.param_box.remove(form.widget());
        }
        let Some((processor, Some(description))) = selected else {
            return;
        };
        if description.parameters.is_empty() {
            return;
        }
        let last = imp
            .param_values
            .borrow()
            .get(processor.name())
            .cloned()
            .or_else(|| self.settings().map(|s| s.parameters(processor.name())))
            .unwrap_or_default();
        let form = crate::app::param_form::ParamForm::new(&description.parameters, &last);
        imp.param_box.append(form.widget());
        imp.param_form
            .replace(Some((processor.name().to_owned(), form)));
    }

    /// Selects the processor called `name` in the What to Run pane; whether there is one.
    pub fn select_processor(&self, name: &str) -> bool {
        let index = self
            .imp()
            .processors
            .borrow()
            .iter()
            .position(|(p, _)| p.name() == name);
        match index {
            Some(i) => {
                self.imp().processor_row.set_selected(i as u32);
                true
            }
            None => false,
        }
    }

    /// The name of the processor the What to Run pane shows.
    pub fn selected_processor_name(&self) -> Option<String> {
        self.selected_processor().map(|(p, _)| p.name().to_owned())
    }

    /// Whether the processors have been found (they are, off the main thread, at start).
    pub fn processors_loaded(&self) -> bool {
        !self.imp().processors.borrow().is_empty()
    }

    /// The editing widget of the selected processor's parameter `name` in the form.
    pub fn param_editor(&self, name: &str) -> Option<gtk::Widget> {
        self.imp().param_form.borrow().as_ref()?.1.editor(name)
    }

    /// The form's values by name (empty without a form).
    pub(super) fn form_values(&self) -> HashMap<String, String> {
        self.imp()
            .param_form
            .borrow()
            .as_ref()
            .map(|(_, form)| form.values())
            .unwrap_or_default()
    }

    /// The form's values as `KEY=VALUE`, remembered for the processor.
    pub(super) fn form_params(&self) -> Vec<String> {
        let imp = self.imp();
        let form = imp.param_form.borrow();
        let Some((name, form)) = form.as_ref() else {
            return Vec::new();
        };
        imp.param_values
            .borrow_mut()
            .insert(name.clone(), form.values());
        if let Some(settings) = self.settings() {
            settings.set_parameters(name, form.values());
        }
        form.params()
    }

    /// Adds the selected processor's example input as a job, with the form's values in it.
    pub(super) fn add_example_job(&self) {
        match self.selected_processor() {
            Some((processor, Some(description))) => {
                let mut input = description.example_input.clone();
                let params = self.form_params();
                if let Some(fields) = input.as_object_mut() {
                    for param in &params {
                        let Some((name, text)) = param.split_once('=') else {
                            continue;
                        };
                        let declared = description.parameters.iter().find(|p| p.name == name);
                        match declared.map(|p| p.parse(text)) {
                            Some(Ok(value)) => {
                                fields.insert(
                                    name.to_owned(),
                                    crate::sdk::json::cbor_to_json(&value),
                                );
                            }
                            Some(Err(err)) => return self.toast(&err),
                            None => {}
                        }
                    }
                }
                let batch = Rc::new(AppBatch::new(
                    &self.queue(),
                    format!("{} · example", human_name(processor.name())),
                    &processor,
                    params,
                    None,
                ));
                self.start_batch(&batch);
                self.add_jobs_to(&processor, vec![input], &batch);
            }
            Some((processor, None)) => self.toast(&format!(
                "{} gives no example input",
                human_name(processor.name())
            )),
            None => self.toast("No action to run: no processor was found"),
        }
    }

    pub(super) fn choose_jsonl_file(&self) {
        let Some((processor, _)) = self.selected_processor() else {
            return self.toast("No action to run: no processor was found");
        };
        let title = format!("{}: Choose a JSON Lines File", human_name(processor.name()));
        self.choose_paths(
            &title,
            "_Run",
            gtk::FileChooserAction::Open,
            false,
            move |window, paths| {
                for path in paths {
                    window.add_jobs_from_file(processor.clone(), path);
                }
            },
        );
    }

    /// Reads and encodes a JSON Lines file on a worker thread, then adds one job per line.
    pub fn add_jobs_from_file(&self, processor: Processor, path: PathBuf) {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let batch = Rc::new(AppBatch::new(
            &self.queue(),
            format!("{} · {name}", human_name(processor.name())),
            &processor,
            Vec::new(),
            None,
        ));
        batch.add_waiting(1);
        self.start_batch(&batch);
        self.imp().unsubmitted.set(self.imp().unsubmitted.get() + 1);
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let read = gio::spawn_blocking(move || crate::app::read_jsonl(&path)).await;
                let imp = window.imp();
                imp.unsubmitted.set(imp.unsubmitted.get().saturating_sub(1));
                batch.drop_waiting(1);
                match read {
                    Ok(Ok(inputs)) if !batch.is_cancelled() => {
                        window.add_encoded_jobs(&processor, inputs, &batch)
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => window.toast(&err),
                    Err(_) => window.toast("Reading the file failed"),
                }
                window.check_batches();
                window.refresh_status();
            }
        ));
    }
}

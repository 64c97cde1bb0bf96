//! The processors the Add Jobs popover offers, and the jobs it adds (an example, a file).

use super::*;

impl Window {
    /// Finds processors and their descriptions on a worker thread; fills the dropdown.
    pub(super) fn load_processors(&self) {
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

    pub(super) fn selected_processor(&self) -> Option<(Processor, Option<Description>)> {
        let index = self.imp().processor_dropdown.selected() as usize;
        self.imp().processors.borrow().get(index).cloned()
    }

    pub(super) fn show_processor_summary(&self) {
        let selected = self.selected_processor();
        let text = match &selected {
            Some((_, Some(d))) => d.summary.clone(),
            Some((p, None)) => format!("{} (no description)", p.path().display()),
            None => "No processors found".to_owned(),
        };
        self.imp().processor_summary.set_label(&text);
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

    /// Selects the processor called `name` in the Add Jobs popover; whether there is one.
    pub fn select_processor(&self, name: &str) -> bool {
        let index = self
            .imp()
            .processors
            .borrow()
            .iter()
            .position(|(p, _)| p.name() == name);
        match index {
            Some(i) => {
                self.imp().processor_dropdown.set_selected(i as u32);
                true
            }
            None => false,
        }
    }

    /// Whether the processors have been found (they are, off the main thread, at start).
    pub fn processors_loaded(&self) -> bool {
        !self.imp().processors.borrow().is_empty()
    }

    /// The editing widget of the selected processor's parameter `name` in the form.
    pub fn param_editor(&self, name: &str) -> Option<gtk::Widget> {
        self.imp().param_form.borrow().as_ref()?.1.editor(name)
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

    pub(super) fn add_example_job(&self) {
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

    pub(super) fn choose_jsonl_file(&self) {
        let Some((processor, _)) = self.selected_processor() else {
            return self.toast("No processor is selected");
        };
        self.choose_paths(
            "Add Jobs From a JSONL File",
            "_Add Jobs",
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
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = window)]
            self,
            async move {
                let read = gio::spawn_blocking(move || crate::app::read_jsonl(&path)).await;
                match read {
                    Ok(Ok(inputs)) => window.add_encoded_jobs(&processor, inputs),
                    Ok(Err(err)) => window.toast(&err),
                    Err(_) => window.toast("Reading the file failed"),
                }
            }
        ));
    }
}

//! The inspector: one job's input and result as readable trees (byte strings by size, images as
//! images), its stderr tail, timings and exit details, and the shell command that reruns it.

use std::cell::{Cell, RefCell};

use gtk::prelude::*;
use gtk::subclass::prelude::*;
use gtk::{gdk, gio, glib, CompositeTemplate};

use super::record::{JobKind, JobOutput, JobRecord};
use crate::model::JobObject;
use crate::sdk::decode::{decode_one, DecodeLimits};
use crate::sdk::json::cbor_to_json;

/// Deepest level and most entries shown, so that a huge result cannot stall the main loop.
const MAX_DEPTH: usize = 6;
const MAX_LINES: usize = 400;

mod imp {
    use super::*;

    #[derive(Default, CompositeTemplate)]
    #[template(file = "inspector.ui")]
    pub struct JobInspector {
        #[template_child]
        pub title_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub details_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub copy_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub close_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub result_picture: TemplateChild<gtk::Picture>,
        #[template_child]
        pub result_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub open_button: TemplateChild<gtk::Button>,
        /// The output file shown, which Open Output opens.
        pub output_file: RefCell<Option<std::path::PathBuf>>,
        #[template_child]
        pub input_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub stderr_label: TemplateChild<gtk::Label>,
        pub command: RefCell<String>,
        /// The id of the job shown.
        pub shown: Cell<Option<u64>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for JobInspector {
        const NAME: &'static str = "OffloadJobInspector";
        type Type = super::JobInspector;
        type ParentType = gtk::Box;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for JobInspector {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            self.copy_button.connect_clicked(glib::clone!(
                #[weak]
                obj,
                move |_| obj.copy_command_line()
            ));
            self.close_button.connect_clicked(glib::clone!(
                #[weak]
                obj,
                move |_| {
                    if let Some(flap) = obj
                        .ancestor(adw::Flap::static_type())
                        .and_downcast::<adw::Flap>()
                    {
                        flap.set_reveal_flap(false);
                    }
                }
            ));
            self.open_button.connect_clicked(glib::clone!(
                #[weak]
                obj,
                move |_| obj.open_output()
            ));
        }
    }

    impl WidgetImpl for JobInspector {}
    impl BoxImpl for JobInspector {}
}

glib::wrapper! {
    /// Shows everything about one job.
    pub struct JobInspector(ObjectSubclass<imp::JobInspector>)
        @extends gtk::Box, gtk::Widget,
        @implements gtk::Buildable, gtk::ConstraintTarget, gtk::Orientable;
}

impl JobInspector {
    /// The id of the job shown, if any.
    pub fn shown_id(&self) -> Option<u64> {
        self.imp().shown.get()
    }

    /// Shows nothing (no job is selected).
    pub fn clear(&self) {
        let imp = self.imp();
        imp.shown.set(None);
        imp.command.replace(String::new());
        imp.output_file.replace(None);
    }

    /// Copies the command line to the clipboard, and says so.
    pub fn copy_command_line(&self) {
        let command = self.command_line();
        if command.is_empty() {
            return;
        }
        self.clipboard().set_text(&command);
        let _ = self.activate_action(
            "win.show-toast",
            Some(&"Command line copied: paste it in a terminal to run this job again".to_variant()),
        );
    }

    /// The shell command that reruns the job shown (empty until its input is decoded).
    pub fn command_line(&self) -> String {
        self.imp().command.borrow().clone()
    }

    /// The output file of the job shown, if it wrote one (what Open Output opens).
    pub fn output_file(&self) -> Option<std::path::PathBuf> {
        self.imp().output_file.borrow().clone()
    }

    /// Whether an image preview is shown.
    pub fn shows_picture(&self) -> bool {
        self.imp().result_picture.is_visible() && self.imp().result_picture.paintable().is_some()
    }

    /// Opens the output file with the desktop's default application.
    fn open_output(&self) {
        let Some(path) = self.output_file() else {
            return;
        };
        let uri = gio::File::for_path(path).uri();
        let window = self.root().and_downcast::<gtk::Window>();
        #[allow(deprecated)] // gtk::FileLauncher needs GTK 4.10; Debian 12 has 4.8.
        gtk::show_uri(window.as_ref(), &uri, gdk::CURRENT_TIME);
    }

    /// The result as shown (a tree, or a note about the image).
    pub fn result_text(&self) -> String {
        self.imp().result_label.label().to_string()
    }

    /// Shows `job`, with what the app kept of it.
    pub fn show_job(&self, job: &JobObject, record: Option<JobRecord>) {
        let imp = self.imp();
        let Some(record) = record else {
            return;
        };
        // Before anything loads in the background: what arrives for another job is dropped.
        imp.shown.set(Some(job.id()));
        let label = record.label();
        imp.title_label.set_label(&label);
        let mut details = vec![
            format!("State: {}", super::job_list::state_text(job.state())),
            format!("Job {} · {}", job.id(), record.processor.name()),
        ];
        if let Some(pid) = record.stats.pid {
            details.push(format!("Process id: {pid}"));
        }
        match record.stats.worker {
            Some(run) => {
                let mut line = format!(
                    "Persistent worker {}, its job number {}",
                    run.worker, run.job
                );
                if let Some(startup) = run.startup {
                    line.push_str(&format!(
                        " (started for this job in {:.3} s)",
                        startup.as_secs_f64()
                    ));
                }
                details.push(line);
            }
            None if record.stats.pid.is_some() => {
                details.push("A process of its own".to_owned());
            }
            None => {}
        }
        if job.is_finished() {
            let mut line = format!(
                "Wall time: {:.3} s · CPU time: {:.3} s",
                record.stats.wall.as_secs_f64(),
                record.stats.cpu.as_secs_f64(),
            );
            // 0: not measured (the job never ran, or its process was gone too soon).
            if record.stats.peak_rss_bytes > 0 {
                line.push_str(&format!(
                    " · Peak memory: {}",
                    super::format_bytes(record.stats.peak_rss_bytes)
                ));
            }
            details.push(line);
        }
        if let Some(error) = &record.error {
            details.push(format!("Failure: {} — {}", error.kind, error.message));
            if let Some(code) = error.exit_code {
                details.push(format!("Exit code: {code}"));
            }
            if let Some(signal) = error.signal {
                details.push(format!("Signal: {signal}"));
            }
        }
        details.push(format!("Processor: {}", record.processor.path().display()));
        imp.details_label.set_label(&details.join("\n"));

        imp.picture_and_tree(record.output.as_ref(), job.state());
        let stderr = record
            .error
            .as_ref()
            .map(|e| e.stderr_tail.trim_end())
            .unwrap_or("");
        imp.stderr_label.set_label(if stderr.is_empty() {
            "(nothing)"
        } else {
            stderr
        });
        self.show_input(job.id(), &record);
    }

    /// Decodes the job's input on a worker thread (it may be large), then shows it as a tree
    /// and as the command that reruns it, unless another job is shown by then.
    fn show_input(&self, id: u64, record: &JobRecord) {
        let imp = self.imp();
        imp.shown.set(Some(id));
        imp.input_label.set_label("…");
        imp.command.replace(String::new());
        if let JobKind::File { path, jobs } = &record.kind {
            // The input is the file (read again when needed), not kept here.
            imp.input_label
                .set_label(&format!("the file {}", path.display()));
            let params = record
                .batch
                .as_ref()
                .map(|b| b.params().to_vec())
                .unwrap_or_default();
            imp.command.replace(files_command(
                &record.processor.path().display().to_string(),
                path,
                &params,
                jobs.output_dir(),
            ));
            return;
        }
        let input = record.input.clone();
        let processor = record.processor.path().display().to_string();
        glib::spawn_future_local(glib::clone!(
            #[weak(rename_to = inspector)]
            self,
            async move {
                let shown = gio::spawn_blocking(move || {
                    let limits = DecodeLimits {
                        max_bytes: input.len(),
                        ..DecodeLimits::default()
                    };
                    match decode_one::<ciborium::Value>(&input, limits) {
                        Ok(value) => {
                            let json = cbor_to_json(&value).to_string();
                            (tree(&value), rerun_command(&processor, &json))
                        }
                        Err(err) => (format!("(cannot show the input: {err})"), String::new()),
                    }
                })
                .await;
                let imp = inspector.imp();
                if imp.shown.get() != Some(id) {
                    return;
                }
                let (tree, command) =
                    shown.unwrap_or_else(|_| ("(cannot show the input)".into(), String::new()));
                imp.input_label.set_label(&tree);
                imp.command.replace(command);
            }
        ));
    }
}

impl imp::JobInspector {
    /// Shows an output image file: read on a worker thread, decoded here (a thumbnail is
    /// small), unless another job is shown by then.
    fn preview_file(&self, path: std::path::PathBuf) {
        let shown = self.shown.get();
        let inspector = self.obj().downgrade();
        glib::spawn_future_local(async move {
            // Read and decoded on a worker thread: an output can be a large image.
            let texture = gio::spawn_blocking(move || {
                let bytes = std::fs::read(path).ok()?;
                gdk::Texture::from_bytes(&glib::Bytes::from_owned(bytes)).ok()
            })
            .await;
            let Some(inspector) = inspector.upgrade() else {
                return;
            };
            let imp = inspector.imp();
            if imp.shown.get() != shown {
                return;
            }
            if let Ok(Some(texture)) = texture {
                imp.result_picture.set_paintable(Some(&texture));
                imp.result_picture.set_visible(true);
            }
        });
    }

    fn picture_and_tree(&self, output: Option<&JobOutput>, state: crate::JobState) {
        use crate::JobState;
        self.result_picture.set_visible(false);
        self.open_button.set_visible(false);
        self.output_file.replace(None);
        match output {
            None => self.result_label.set_label(match state {
                JobState::Queued => "(not started yet)",
                JobState::Running => "(running…)",
                JobState::Failed => "(none: it failed, see above)",
                JobState::Cancelled => "(none: it was cancelled)",
                JobState::Succeeded => "(being written…)",
            }),
            Some(JobOutput::Tile(texture)) => {
                self.result_picture.set_paintable(Some(texture));
                self.result_picture.set_visible(true);
                self.result_label.set_label(&format!(
                    "an image of {}×{} pixels",
                    texture.width(),
                    texture.height()
                ));
            }
            Some(JobOutput::File(path)) => {
                self.result_label
                    .set_label(&format!("written to {}", path.display()));
                self.output_file.replace(Some(path.clone()));
                self.open_button.set_visible(true);
                self.preview_file(path.clone());
            }
            Some(JobOutput::Value(value)) => {
                if let Some(texture) = image_of(value) {
                    self.result_picture.set_paintable(Some(&texture));
                    self.result_picture.set_visible(true);
                }
                self.result_label.set_label(&tree(value));
            }
        }
    }
}

/// A `{width, height, rgba}` map as a texture, when a result is an image.
fn image_of(value: &ciborium::Value) -> Option<gdk::Texture> {
    let map = value.as_map()?;
    let get = |key: &str| {
        map.iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    };
    let width = u32::try_from(i128::from(get("width")?.as_integer()?)).ok()?;
    let height = u32::try_from(i128::from(get("height")?.as_integer()?)).ok()?;
    let rgba = get("rgba")?.as_bytes()?;
    if width == 0 || height == 0 || rgba.len() != width as usize * height as usize * 4 {
        return None;
    }
    let bytes = glib::Bytes::from(rgba.as_slice());
    let texture = gdk::MemoryTexture::new(
        width as i32,
        height as i32,
        gdk::MemoryFormat::R8g8b8a8,
        &bytes,
        width as usize * 4,
    );
    Some(texture.upcast())
}

/// A value as an indented tree: maps as `key: value`, byte strings by size.
pub fn tree(value: &ciborium::Value) -> String {
    let mut lines = Vec::new();
    walk(value, 0, None, &mut lines);
    if lines.len() > MAX_LINES {
        let more = lines.len() - MAX_LINES;
        lines.truncate(MAX_LINES);
        lines.push(format!("… {more} more lines"));
    }
    lines.join("\n")
}

fn walk(value: &ciborium::Value, depth: usize, label: Option<String>, lines: &mut Vec<String>) {
    use ciborium::Value;
    if lines.len() > MAX_LINES {
        return;
    }
    let indent = "  ".repeat(depth);
    let prefix = label.map(|l| format!("{l}: ")).unwrap_or_default();
    let leaf = match value {
        Value::Integer(i) => Some(i128::from(*i).to_string()),
        Value::Float(x) => Some(format!("{x}")),
        Value::Text(t) if t.chars().count() > 80 => Some(format!(
            "{:?}… ({} bytes)",
            t.chars().take(80).collect::<String>(),
            t.len()
        )),
        Value::Text(t) => Some(format!("{t:?}")),
        Value::Bytes(b) => Some(format!("<{}>", super::format_bytes(b.len() as u64))),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".to_owned()),
        Value::Array(items) if items.is_empty() => Some("[]".to_owned()),
        Value::Map(entries) if entries.is_empty() => Some("{}".to_owned()),
        _ if depth >= MAX_DEPTH => Some("…".to_owned()),
        _ => None,
    };
    if let Some(leaf) = leaf {
        lines.push(format!("{indent}{prefix}{leaf}"));
        return;
    }
    match value {
        Value::Array(items) => {
            let noun = if items.len() == 1 { "item" } else { "items" };
            lines.push(format!("{indent}{prefix}[{} {noun}]", items.len()));
            for (i, item) in items.iter().enumerate() {
                walk(item, depth + 1, Some(i.to_string()), lines);
            }
        }
        Value::Map(entries) => {
            let noun = if entries.len() == 1 {
                "entry"
            } else {
                "entries"
            };
            lines.push(format!("{indent}{prefix}{{{} {noun}}}", entries.len()));
            for (key, item) in entries {
                let key = key
                    .as_text()
                    .map_or_else(|| format!("{key:?}"), str::to_owned);
                walk(item, depth + 1, Some(key), lines);
            }
        }
        Value::Tag(tag, inner) => walk(inner, depth, Some(format!("{prefix}tag {tag}")), lines),
        _ => lines.push(format!("{indent}{prefix}?")),
    }
}

/// The `offload run --files` command that makes the same output from the same file, with the
/// same parameters.
fn files_command(
    processor: &str,
    path: &std::path::Path,
    params: &[String],
    output_dir: &std::path::Path,
) -> String {
    let mut command = format!(
        "offload run {} --files {}",
        shell_quote(processor),
        shell_quote(&path.display().to_string())
    );
    for param in params {
        command.push_str(&format!(" --param {}", shell_quote(param)));
    }
    command.push_str(&format!(
        " --output-dir {}",
        shell_quote(&output_dir.display().to_string())
    ));
    command
}

/// A POSIX shell command that runs the processor on the same input.
fn rerun_command(processor: &str, input_json: &str) -> String {
    format!(
        "printf '%s' {} | offload encode | {} | offload decode",
        shell_quote(input_json),
        shell_quote(processor)
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_show_bytes_by_size_and_nest() {
        use ciborium::Value;
        let value = Value::Map(vec![
            (Value::Text("rgba".into()), Value::Bytes(vec![0; 2048])),
            (
                Value::Text("size".into()),
                Value::Array(vec![Value::Integer(3.into()), Value::Integer(4.into())]),
            ),
        ]);
        assert_eq!(
            tree(&value),
            "{2 entries}\n  rgba: <2.0 KiB>\n  size: [2 items]\n    0: 3\n    1: 4"
        );
    }

    #[test]
    fn a_file_command_keeps_the_parameters() {
        assert_eq!(
            files_command(
                "/bin/offload-thumbnail",
                std::path::Path::new("/p/a b.jpg"),
                &["size=128".into(), "format=png".into()],
                std::path::Path::new("/out"),
            ),
            "offload run '/bin/offload-thumbnail' --files '/p/a b.jpg' --param 'size=128' \
             --param 'format=png' --output-dir '/out'"
        );
    }

    #[test]
    fn commands_quote_single_quotes() {
        assert_eq!(
            rerun_command("/bin/offload-x", r#"{"a":"it's"}"#),
            r#"printf '%s' '{"a":"it'\''s"}' | offload encode | '/bin/offload-x' | offload decode"#
        );
    }
}

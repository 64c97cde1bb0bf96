//! The job list's columns: each binds a widget to a property of the row's [`JobObject`], and
//! sorts by it.

use gtk::glib;
use gtk::prelude::*;

use crate::model::JobObject;
use crate::JobState;

/// The technical columns, hidden unless the person asks (Show Technical Columns).
const TECHNICAL: [&str; 4] = ["ID", "Processor", "Peak Memory", "Worker"];

/// Adds the columns: what the job is about (its file, a preview, its state as an icon and a
/// colour), its state, progress, elapsed time and the reason of a failure; the technical ones
/// (id, processor, peak memory, worker) are there but hidden.
pub fn add_columns(view: &gtk::ColumnView) {
    let number = |property: &str| {
        gtk::NumericSorter::new(Some(gtk::PropertyExpression::new(
            JobObject::static_type(),
            gtk::Expression::NONE,
            property,
        )))
        .upcast::<gtk::Sorter>()
    };
    let text = |property: &str| {
        gtk::StringSorter::new(Some(gtk::PropertyExpression::new(
            JobObject::static_type(),
            gtk::Expression::NONE,
            property,
        )))
        .upcast::<gtk::Sorter>()
    };
    // Every column has a fixed width (resizable by hand): a column without one measures each
    // of its row widgets at every layout, which made the first frames of a large batch take
    // 15-20 ms each.
    let name = name_column();
    name.set_sorter(Some(&text("label")));
    name.set_fixed_width(240);
    view.append_column(&name);

    let state = state_column();
    // By the order of a job's life (waiting, running, then the ends), not by the word.
    state.set_sorter(Some(&gtk::CustomSorter::new(|a, b| {
        let state = |o: &glib::Object| o.downcast_ref::<JobObject>().map(JobObject::state);
        state(a).cmp(&state(b)).into()
    })));
    state.set_fixed_width(100);
    view.append_column(&state);

    let progress = progress_column();
    progress.set_sorter(Some(&number("progress")));
    view.append_column(&progress);

    let elapsed = label_column("Elapsed", "elapsed-ms", |v| {
        v.get::<f64>()
            .map(|ms| format!("{:.1} s", ms / 1000.0))
            .unwrap_or_default()
    });
    elapsed.set_sorter(Some(&number("elapsed-ms")));
    elapsed.set_fixed_width(80);
    view.append_column(&elapsed);

    let reason = label_column("Reason", "reason", string_of);
    reason.set_expand(true);
    reason.set_fixed_width(220);
    reason.set_sorter(Some(&text("reason")));
    view.append_column(&reason);

    let id = label_column("ID", "id", |v| {
        v.get::<u64>().map(|n| n.to_string()).unwrap_or_default()
    });
    id.set_sorter(Some(&number("id")));
    id.set_fixed_width(70);
    view.append_column(&id);
    view.sort_by_column(Some(&id), gtk::SortType::Ascending);

    let processor = label_column("Processor", "processor", string_of);
    processor.set_sorter(Some(&text("processor")));
    processor.set_fixed_width(120);
    view.append_column(&processor);

    let memory = label_column("Peak Memory", "peak-rss", |v| {
        v.get::<u64>()
            .map(|b| {
                if b == 0 {
                    String::new()
                } else {
                    super::format_bytes(b)
                }
            })
            .unwrap_or_default()
    });
    memory.set_sorter(Some(&number("peak-rss")));
    memory.set_fixed_width(110);
    view.append_column(&memory);

    let worker = worker_column();
    worker.set_sorter(Some(&text("worker")));
    worker.set_fixed_width(170);
    view.append_column(&worker);
    show_details(view, false);
}

/// Shows or hides the technical columns.
pub fn show_details(view: &gtk::ColumnView, show: bool) {
    let columns = view.columns();
    for i in 0..columns.n_items() {
        if let Some(column) = columns.item(i).and_downcast::<gtk::ColumnViewColumn>() {
            let title = column.title().unwrap_or_default();
            if TECHNICAL.contains(&title.as_str()) {
                column.set_visible(show);
            }
        }
    }
}

/// The icon of a state.
fn state_icon(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "content-loading-symbolic",
        JobState::Running => "media-playback-start-symbolic",
        JobState::Succeeded => "object-select-symbolic",
        JobState::Failed => "dialog-error-symbolic",
        JobState::Cancelled => "action-unavailable-symbolic",
    }
}

/// A state as a person reads it.
pub fn state_text(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "Waiting",
        JobState::Running => "Running",
        JobState::Succeeded => "Done",
        JobState::Failed => "Failed",
        JobState::Cancelled => "Cancelled",
    }
}

/// Gives `widget` the style class of `state` (its colour: `state-failed`, ...), and no other
/// state's.
fn colour_by_state(widget: &impl IsA<gtk::Widget>, state: JobState) {
    for other in JobState::ALL {
        widget.remove_css_class(&format!("state-{other}"));
    }
    widget.add_css_class(&format!("state-{state}"));
}

/// The state: an icon and a word, coloured (red when failed, green when done).
fn state_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let icon = gtk::Image::new();
        let label = cell_label();
        let cell = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        cell.append(&icon);
        cell.append(&label);
        item.set_child(Some(&cell));
        let state = item
            .property_expression("item")
            .chain_property::<JobObject>("state");
        state
            .chain_closure::<String>(glib::closure!(|_: Option<glib::Object>, s: JobState| {
                state_text(s).to_owned()
            }))
            .bind(&label, "label", gtk::Widget::NONE);
        state
            .chain_closure::<String>(glib::closure!(|_: Option<glib::Object>, s: JobState| {
                state_icon(s).to_owned()
            }))
            .bind(&icon, "icon-name", gtk::Widget::NONE);
        // The colour: a style class, which no expression binds; set at each state change.
        state.watch(
            Some(&cell),
            glib::clone!(
                #[weak]
                cell,
                #[weak]
                item,
                move || {
                    if let Some(job) = item.item().and_downcast::<JobObject>() {
                        colour_by_state(&cell, job.state());
                    }
                }
            ),
        );
    });
    let column = gtk::ColumnViewColumn::new(Some("State"), Some(factory));
    column.set_resizable(true);
    column
}

/// What the job is about: a small preview of its output where there is one (loaded off the
/// main thread, for the rows on screen only), and its label (a file's name).
fn name_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let picture = gtk::Image::builder().pixel_size(PREVIEW).build();
        let label = cell_label();
        label.set_hexpand(true);
        let cell = gtk::Box::new(gtk::Orientation::Horizontal, 8);
        cell.append(&picture);
        cell.append(&label);
        item.set_child(Some(&cell));
        let job = item.property_expression("item");
        job.chain_property::<JobObject>("label")
            .bind(&label, "label", gtk::Widget::NONE);
        job.chain_property::<JobObject>("label")
            .bind(&label, "tooltip-text", gtk::Widget::NONE);
        job.chain_property::<JobObject>("output").watch(
            Some(&cell),
            glib::clone!(
                #[weak]
                picture,
                #[weak]
                item,
                move || {
                    let output = item
                        .item()
                        .and_downcast::<JobObject>()
                        .map(|j| j.output())
                        .unwrap_or_default();
                    load_preview(&picture, &output);
                }
            ),
        );
    });
    let column = gtk::ColumnViewColumn::new(Some("Name"), Some(factory));
    column.set_resizable(true);
    column
}

/// A row's preview, in pixels.
const PREVIEW: i32 = 28;

/// Shows a small copy of the image at `path` in `picture` (nothing for an empty path): read,
/// decoded and scaled on a worker thread, dropped if the row shows another job by then.
fn load_preview(picture: &gtk::Image, path: &str) {
    picture.set_paintable(gtk::gdk::Paintable::NONE);
    // The file it shows, to know a late load from another row's.
    picture.set_tooltip_text(Some(path));
    if path.is_empty() {
        return;
    }
    let wanted = path.to_owned();
    let picture = picture.downgrade();
    glib::spawn_future_local(async move {
        let path = wanted.clone();
        let texture = gtk::gio::spawn_blocking(move || {
            let pixbuf =
                gtk::gdk_pixbuf::Pixbuf::from_file_at_scale(&path, PREVIEW * 2, PREVIEW * 2, true)
                    .ok()?;
            Some(gtk::gdk::Texture::for_pixbuf(&pixbuf))
        })
        .await
        .ok()
        .flatten();
        let Some(picture) = picture.upgrade() else {
            return;
        };
        if picture.tooltip_text().as_deref() == Some(wanted.as_str()) {
            picture.set_paintable(texture.as_ref());
        }
    });
}

/// A cell's label: left-aligned, ellipsized.
fn cell_label() -> gtk::Label {
    gtk::Label::builder()
        .xalign(0.0)
        .ellipsize(gtk::pango::EllipsizeMode::End)
        .build()
}

fn string_of(value: &glib::Value) -> String {
    value.get::<String>().unwrap_or_default()
}

/// A column of labels showing `format(property)` of each row.
fn label_column(
    title: &str,
    property: &'static str,
    format: fn(&glib::Value) -> String,
) -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(move |_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let label = cell_label();
        item.set_child(Some(&label));
        item.property_expression("item")
            .chain_property::<JobObject>(property)
            .chain_closure::<String>(glib::closure!(
                move |_: Option<glib::Object>, value: glib::Value| { format(&value) }
            ))
            .bind(&label, "label", gtk::Widget::NONE);
    });
    let column = gtk::ColumnViewColumn::new(Some(title), Some(factory));
    column.set_resizable(true);
    column
}

/// Where a job runs: "offload-a · worker 3 · job 17" (the host, when a launcher ran it, and
/// the persistent worker).
fn worker_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let label = cell_label();
        item.set_child(Some(&label));
        let job = item.property_expression("item");
        let host = job.chain_property::<JobObject>("host");
        let worker = job.chain_property::<JobObject>("worker");
        gtk::ClosureExpression::new::<String>(
            [host, worker],
            glib::closure!(|_: Option<glib::Object>, host: String, worker: String| {
                [host, worker]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(" · ")
            }),
        )
        .bind(&label, "label", gtk::Widget::NONE);
    });
    let column = gtk::ColumnViewColumn::new(Some("Worker"), Some(factory));
    column.set_resizable(true);
    column
}

fn progress_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let bar = gtk::ProgressBar::builder()
            .valign(gtk::Align::Center)
            .build();
        item.set_child(Some(&bar));
        item.property_expression("item")
            .chain_property::<JobObject>("progress")
            .bind(&bar, "fraction", gtk::Widget::NONE);
    });
    let column = gtk::ColumnViewColumn::new(Some("Progress"), Some(factory));
    column.set_fixed_width(120);
    column
}

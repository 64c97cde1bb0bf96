//! The job list's columns: each binds a widget to a property of the row's [`JobObject`], and
//! sorts by it.

use gtk::glib;
use gtk::prelude::*;

use crate::model::JobObject;

/// Adds the id, processor, state, progress, elapsed, memory, worker and reason columns.
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
    let id = label_column("ID", "id", |v| {
        v.get::<u64>().map(|n| n.to_string()).unwrap_or_default()
    });
    id.set_sorter(Some(&number("id")));
    id.set_fixed_width(80);
    view.append_column(&id);
    view.sort_by_column(Some(&id), gtk::SortType::Ascending);

    let processor = label_column("Processor", "processor", string_of);
    processor.set_sorter(Some(&text("processor")));
    processor.set_fixed_width(150);
    view.append_column(&processor);

    let state = label_column("State", "state", string_of);
    state.set_sorter(Some(&text("state")));
    state.set_fixed_width(100);
    view.append_column(&state);

    let progress = progress_column();
    progress.set_sorter(Some(&number("progress")));
    view.append_column(&progress);

    let elapsed = label_column("Elapsed", "elapsed-ms", |v| {
        v.get::<f64>()
            .map(|ms| format!("{:.2} s", ms / 1000.0))
            .unwrap_or_default()
    });
    elapsed.set_sorter(Some(&number("elapsed-ms")));
    elapsed.set_fixed_width(90);
    view.append_column(&elapsed);

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
    memory.set_fixed_width(120);
    view.append_column(&memory);

    let worker = worker_column();
    worker.set_sorter(Some(&text("worker")));
    worker.set_fixed_width(170);
    view.append_column(&worker);

    let reason = label_column("Reason", "reason", string_of);
    reason.set_expand(true);
    reason.set_fixed_width(200);
    reason.set_sorter(Some(&text("reason")));
    view.append_column(&reason);
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

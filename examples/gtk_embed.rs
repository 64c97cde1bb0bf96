//! Embedding offload in a GTK app: a batch of 16 jobs whose own rows a column view shows (each
//! labelled from its tag), a progress bar bound to the batch's fraction, and a Cancel button;
//! no map of jobs on the side, no fraction computed by hand.
//! Run it with `cargo run --example gtk_embed` (add `-- --auto` to run and quit by itself).

use gtk::prelude::*;
use gtk::{glib, Application, ApplicationWindow, Button, ColumnView, ColumnViewColumn};
use gtk::{Label, ListItem, NoSelection, Orientation, ProgressBar, SignalListItemFactory};
use offload::model::JobObject;
use offload::{Batch, Job, Processor, Queue};

fn main() -> glib::ExitCode {
    let auto = std::env::args().any(|a| a == "--auto");
    let app = Application::builder()
        .application_id("io.github.offload.Embed")
        .build();
    app.connect_activate(move |app| build(app, auto));
    app.run_with_args::<&str>(&[])
}

/// A column whose cells are `widget`s with their `target` bound to each job's `property`.
fn column<W: IsA<gtk::Widget> + Default>(
    title: &str,
    property: &'static str,
    target: &'static str,
) -> ColumnViewColumn {
    let factory = SignalListItemFactory::new();
    factory.connect_setup(move |_, item| {
        let item = item
            .downcast_ref::<ListItem>()
            .expect("a column view's item");
        let widget: gtk::Widget = W::default().upcast();
        item.property_expression("item")
            .chain_property::<JobObject>(property)
            .bind(&widget, target, gtk::Widget::NONE);
        item.set_child(Some(&widget));
    });
    let column = ColumnViewColumn::new(Some(title), Some(factory));
    column.set_expand(true);
    column
}

fn build(app: &Application, auto: bool) {
    // One queue for the app, on the GTK thread.
    let queue = Queue::new();
    // The 16 jobs as one batch: its rows are a list model that widgets bind to, labelled from
    // the tags; it has its own counts, fraction, cancel and end.
    let batch: Batch<u32, ciborium::Value> =
        Batch::with_labels(&queue, |tile: &u32| format!("tile {tile}"));
    let rows = batch.rows();
    let view = ColumnView::new(Some(NoSelection::new(Some(rows.clone()))));
    view.append_column(&column::<Label>("Tile", "label", "label"));
    view.append_column(&column::<Label>("State", "state", "label"));
    view.append_column(&column::<ProgressBar>("Progress", "progress", "fraction"));
    view.append_column(&column::<Label>("Worker", "worker", "label"));
    let bar = ProgressBar::new();
    rows.bind_property("fraction", &bar, "fraction").build();
    let cancel = Button::with_label("Cancel");
    let content = gtk::Box::new(Orientation::Vertical, 6);
    let scrolled = gtk::ScrolledWindow::builder()
        .child(&view)
        .vexpand(true)
        .build();
    content.append(&scrolled);
    content.append(&bar);
    content.append(&cancel);
    let window = ApplicationWindow::builder()
        .application(app)
        .default_width(480)
        .default_height(480)
        .child(&content)
        .build();
    window.present();

    let job = match Processor::find("diag") {
        Ok(processor) => Job::new(processor),
        Err(err) => return eprintln!("{err}"),
    };
    for i in 0..16 {
        let input = serde_json::json!({"sleep_ms": 300, "progress_steps": 3, "echo": i});
        if let Err(err) = batch.submit(&job, &input, i) {
            eprintln!("job {i}: {err}");
        }
    }
    let batch = std::rc::Rc::new(batch);
    cancel.connect_clicked(glib::clone!(
        #[strong]
        batch,
        move |_| batch.cancel()
    ));
    glib::spawn_future_local(glib::clone!(
        #[weak]
        window,
        async move {
            let counts = batch.finished().await;
            println!("{} of {} jobs done", counts.succeeded, counts.total());
            if auto {
                window.close();
            }
        }
    ));
}

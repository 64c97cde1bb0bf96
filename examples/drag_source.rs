//! A drag source for the app's tests (tests/app_gui.rs): a window whose label, dragged with
//! the mouse, offers the files given on the command line, as a file manager does. The drag
//! goes through the X server (XDND) to the app, a process of its own, as a person's would.
//! Prints `ready` once shown, then `drag begun` and `drag ended` as they happen.
//!
//! `cargo run --example drag_source -- FILE...`

use gtk::prelude::*;
use gtk::{gdk, gio, glib};

fn main() -> glib::ExitCode {
    let files: Vec<gio::File> = std::env::args().skip(1).map(gio::File::for_path).collect();
    let app = gtk::Application::builder()
        .application_id("io.github.offload.DragSource")
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    app.connect_activate(move |app| {
        let label = gtk::Label::new(Some("Drag these files"));
        let source = gtk::DragSource::new();
        source.set_actions(gdk::DragAction::COPY);
        let list = gdk::FileList::from_array(&files);
        source.set_content(Some(&gdk::ContentProvider::for_value(&list.to_value())));
        source.connect_drag_begin(|_, _| say("drag begun"));
        source.connect_drag_end(|_, _, _| say("drag ended"));
        label.add_controller(source);
        let window = gtk::ApplicationWindow::builder()
            .application(app)
            .title("drag-source")
            .default_width(240)
            .default_height(160)
            .child(&label)
            .build();
        window.connect_map(|_| say("ready"));
        window.present();
    });
    app.run_with_args::<&str>(&[])
}

fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

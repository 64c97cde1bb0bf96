//! Embedding offload's queue in a GTK app: a button starts eight jobs, a label counts results.
//! Run it with `cargo run --example gtk_embed` (add `-- --auto` to click and quit by itself).

use gtk::prelude::*;
use gtk::{glib, Application, ApplicationWindow, Button, Label, Orientation};
use offload::{Job, Processor, Queue, QueueEvent};

fn main() -> glib::ExitCode {
    let auto = std::env::args().any(|a| a == "--auto");
    let app = Application::builder()
        .application_id("io.github.offload.Embed")
        .build();
    app.connect_activate(move |app| build(app, auto));
    app.run_with_args::<&str>(&[])
}

fn build(app: &Application, auto: bool) {
    let label = Label::new(Some("Press the button"));
    let button = Button::with_label("Run 8 jobs");
    let content = gtk::Box::new(Orientation::Vertical, 12);
    content.append(&button);
    content.append(&label);
    let window = ApplicationWindow::builder()
        .application(app)
        .child(&content)
        .build();

    // One queue for the app, on the GTK thread; it runs one job per core at once.
    let queue = Queue::new();
    queue.connect_events(glib::clone!(
        #[weak]
        label,
        move |event| {
            if let QueueEvent::Started { id, pid, .. } = event {
                label.set_text(&format!("job {id} runs as process {pid}"));
            }
        }
    ));
    button.connect_clicked(glib::clone!(
        #[weak]
        label,
        #[weak]
        window,
        move |_| {
            let job = match Processor::find("diag") {
                Ok(processor) => Job::new(processor),
                Err(err) => {
                    eprintln!("{err}");
                    return window.close();
                }
            };
            let handles: Vec<_> = (0..8)
                .filter_map(|i| {
                    let input = serde_json::json!({"echo": i, "sleep_ms": 50});
                    queue.submit::<_, ciborium::Value>(&job, &input).ok()
                })
                .collect();
            // Await the results on the main loop: the window stays responsive meanwhile.
            glib::spawn_future_local(async move {
                let mut done = 0;
                for handle in handles {
                    if handle.result().await.is_ok() {
                        done += 1;
                    }
                }
                label.set_text(&format!("{done} of 8 jobs done"));
                println!("{done} of 8 jobs done");
                if auto {
                    window.close();
                }
            });
        }
    ));
    window.present();
    if auto {
        button.emit_clicked();
    }
}

//! Unattended runs: a screenshot and quitting when the work is done.

use super::*;

/// What the window does when its jobs are all done (for unattended runs).
#[derive(Debug, Clone, Default)]
pub struct Unattended {
    /// Save a PNG of the window here when done (or after `screenshot_after` jobs).
    pub screenshot: Option<PathBuf>,
    /// Take the screenshot once this many jobs have finished, instead of at the end.
    pub screenshot_after: Option<usize>,
    /// Quit when done.
    pub exit_when_done: bool,
}

impl Window {
    /// What to do once idle, for unattended runs.
    pub fn set_unattended(&self, unattended: Unattended) {
        self.imp().unattended.replace(unattended);
    }

    /// Runs the unattended steps once all work is done.
    pub(super) fn when_idle(&self) {
        self.check_batches();
        let imp = self.imp();
        if !imp.work_started.get() {
            return;
        }
        let unattended = imp.unattended.borrow().clone();
        if unattended.screenshot.is_none() && !unattended.exit_when_done {
            return;
        }
        self.after_next_paint(move |window| {
            if !window.imp().screenshot_taken.get() {
                window.take_screenshot(unattended.screenshot.as_deref());
            }
            if unattended.exit_when_done {
                window.close();
            }
        });
    }

    /// Takes the unattended screenshot once `screenshot_after` jobs have finished.
    pub(super) fn maybe_screenshot_midway(&self) {
        let imp = self.imp();
        let Some(after) = imp.unattended.borrow().screenshot_after else {
            return;
        };
        let counts = self.state_counts();
        let finished = counts.succeeded + counts.failed + counts.cancelled;
        if finished >= after && !imp.screenshot_taken.get() {
            let unattended = imp.unattended.borrow().clone();
            imp.screenshot_taken.set(true);
            self.after_next_paint(move |window| {
                window.take_screenshot(unattended.screenshot.as_deref())
            });
        }
    }

    pub(super) fn take_screenshot(&self, path: Option<&std::path::Path>) {
        self.imp().screenshot_taken.set(true);
        if let Some(path) = path {
            if let Err(err) = self.save_screenshot(path) {
                eprintln!("offload: cannot save the screenshot: {err}");
            }
        }
    }

    /// Runs `then` once the next frame has been drawn. Widgets keep the render node of their
    /// last frame, and a paintable of a widget shows that node, so a screenshot taken then
    /// shows the latest state.
    pub(super) fn after_next_paint(&self, then: impl FnOnce(&Self) + 'static) {
        let Some(clock) = self.frame_clock() else {
            return then(self);
        };
        let then = Rc::new(RefCell::new(Some(then)));
        let handler: Rc<RefCell<Option<glib::SignalHandlerId>>> = Rc::default();
        let id = clock.connect_after_paint(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[strong]
            handler,
            move |clock| {
                if let Some(id) = handler.take() {
                    clock.disconnect(id);
                }
                let then = then.clone();
                // Leave the paint first; use the render nodes from the main loop.
                glib::idle_add_local_once(glib::clone!(
                    #[weak]
                    window,
                    move || {
                        if let Some(then) = then.take() {
                            then(&window);
                        }
                    }
                ));
            }
        ));
        handler.replace(Some(id));
        self.refresh_status();
        self.queue_draw();
    }

    /// Renders the window into a PNG, through the widget tree (no screenshot tool).
    pub fn save_screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        let (width, height) = (self.width(), self.height());
        if width <= 0 || height <= 0 {
            return Err("the window has no size yet".to_owned());
        }
        // The window's content, not the window: a paintable of a toplevel draws nothing.
        let content = self.content().ok_or("the window has no content")?;
        let (width, height) = (content.width(), content.height());
        let parent = content.parent().ok_or("the content has no parent")?;
        let snapshot = gtk::Snapshot::new();
        // The window background shows through the content's transparent parts.
        let background = self.style_context().lookup_color("window_bg_color");
        let bounds = gtk::graphene::Rect::new(0.0, 0.0, width as f32, height as f32);
        snapshot.append_color(&background.unwrap_or(gdk::RGBA::WHITE), &bounds);
        // Draw the widget tree afresh (not a cached frame), the way its parent draws it.
        parent.snapshot_child(&content, &snapshot);
        let node = snapshot.to_node().ok_or("nothing was drawn")?;
        let renderer = self
            .renderer()
            .ok_or("the window has no renderer (not realized)")?;
        let texture = renderer.render_texture(&node, Some(&bounds));
        texture.save_to_png(path).map_err(|e| e.to_string())
    }
}

//! Dropping files and folders on the window: while a drag hovers, an overlay names what will
//! happen ("Make Thumbnails · 128 px", and where the outputs go); the drop runs exactly that,
//! or is refused when the chosen action does not work on files.

use super::*;

impl Window {
    /// Files dropped on the window run the action the What to Run pane shows.
    pub(super) fn setup_drop_target(&self) {
        // Said once the overlay is on screen, with what it names.
        self.imp().drop_overlay.connect_map(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| {
                let title = window.imp().drop_title.label();
                window.after_next_paint(move |_| trace(&format!("drop overlay: {title}")));
            }
        ));
        let target = gtk::DropTarget::new(gdk::FileList::static_type(), gdk::DragAction::COPY);
        target.connect_enter(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[upgrade_or]
            gdk::DragAction::empty(),
            move |_, _, _| {
                if window.show_drop_overlay() {
                    gdk::DragAction::COPY
                } else {
                    gdk::DragAction::empty()
                }
            }
        ));
        target.connect_leave(glib::clone!(
            #[weak(rename_to = window)]
            self,
            move |_| window.imp().drop_overlay.set_visible(false)
        ));
        target.connect_drop(glib::clone!(
            #[weak(rename_to = window)]
            self,
            #[upgrade_or]
            false,
            move |_, value, _, _| {
                window.imp().drop_overlay.set_visible(false);
                let Ok(list) = value.get::<gdk::FileList>() else {
                    return false;
                };
                let paths: Vec<PathBuf> = list.files().iter().filter_map(|f| f.path()).collect();
                if paths.is_empty() {
                    window.toast("Only files and folders on this computer can be dropped");
                    return false;
                }
                trace(&format!("drop: {} paths", paths.len()));
                window.add_files_from_form(paths)
            }
        ));
        self.add_controller(target);
    }

    /// Shows the overlay that names what a drop will do; whether a drop would run.
    fn show_drop_overlay(&self) -> bool {
        let imp = self.imp();
        let (title, detail, runs) = match self.selected_processor() {
            Some((processor, Some(description))) if description.files.is_some() => {
                let title = super::processors::action_phrase(
                    processor.name(),
                    &description,
                    &self.form_values(),
                );
                let detail = format!(
                    "Drop to run on every {} file, folders included · outputs go to {}",
                    description
                        .files
                        .as_ref()
                        .map(|f| f.accepts.join(", ").to_uppercase())
                        .unwrap_or_default(),
                    imp.output_row.subtitle().unwrap_or_default()
                );
                (title, detail, true)
            }
            Some((processor, _)) => (
                format!(
                    "{} Does Not Work on Files",
                    super::processors::human_name(processor.name())
                ),
                "Choose an action that does in the What to Run pane (F9)".to_owned(),
                false,
            ),
            None => (
                "Nothing to Run".to_owned(),
                "No processor was found".to_owned(),
                false,
            ),
        };
        imp.drop_title.set_label(&title);
        imp.drop_detail.set_label(&detail);
        imp.drop_icon.set_icon_name(Some(if runs {
            "document-send-symbolic"
        } else {
            "action-unavailable-symbolic"
        }));
        if runs {
            imp.drop_overlay.remove_css_class("refused");
        } else {
            imp.drop_overlay.add_css_class("refused");
        }
        imp.drop_overlay.set_visible(true);
        runs
    }
}

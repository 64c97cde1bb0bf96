//! The demo's canvas: each tile of the mosaic shows as queued, running, failed, or as its image.

use std::cell::RefCell;

use gtk::prelude::*;
use gtk::subclass::prelude::*;
use gtk::{gdk, glib, graphene};

use crate::mosaic::{Mosaic, Tile};

/// What a tile shows.
#[derive(Debug, Clone)]
pub enum TileState {
    Queued,
    Running,
    Failed,
    Done(gdk::Texture),
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct MosaicView {
        pub mosaic: RefCell<Option<Mosaic>>,
        pub tiles: RefCell<Vec<(Tile, TileState)>>,
        /// Show every pixel (the scrolled window scrolls) instead of fitting the view.
        pub actual_size: std::cell::Cell<bool>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for MosaicView {
        const NAME: &'static str = "OffloadMosaicView";
        type Type = super::MosaicView;
        type ParentType = gtk::Widget;

        fn class_init(klass: &mut Self::Class) {
            klass.set_css_name("mosaic");
            klass.set_accessible_role(gtk::AccessibleRole::Img);
        }
    }

    impl ObjectImpl for MosaicView {}

    impl WidgetImpl for MosaicView {
        fn measure(&self, orientation: gtk::Orientation, _for_size: i32) -> (i32, i32, i32, i32) {
            let Some(mosaic) = *self.mosaic.borrow() else {
                return (0, 0, -1, -1);
            };
            let natural = match orientation {
                gtk::Orientation::Horizontal => mosaic.width,
                _ => mosaic.height,
            } as i32;
            let minimum = if self.actual_size.get() {
                natural
            } else {
                natural / 4
            };
            (minimum, natural, -1, -1)
        }

        fn snapshot(&self, snapshot: &gtk::Snapshot) {
            let Some(mosaic) = *self.mosaic.borrow() else {
                return;
            };
            let widget = self.obj();
            let (w, h) = (widget.width() as f32, widget.height() as f32);
            let scale = (w / mosaic.width as f32).min(h / mosaic.height as f32);
            let ox = (w - mosaic.width as f32 * scale) / 2.0;
            let oy = (h - mosaic.height as f32 * scale) / 2.0;
            let queued = gdk::RGBA::new(0.5, 0.5, 0.55, 0.25);
            let running = gdk::RGBA::new(0.21, 0.52, 0.89, 0.45);
            let failed = gdk::RGBA::new(0.88, 0.11, 0.14, 0.6);
            let edge = gdk::RGBA::new(0.21, 0.52, 0.89, 1.0);
            for (tile, state) in self.tiles.borrow().iter() {
                // Whole pixels, so that neighbouring tiles meet without a seam.
                let x0 = (ox + tile.x as f32 * scale).round();
                let y0 = (oy + tile.y as f32 * scale).round();
                let x1 = (ox + (tile.x + tile.input.width) as f32 * scale).round();
                let y1 = (oy + (tile.y + tile.input.height) as f32 * scale).round();
                let rect = graphene::Rect::new(x0, y0, x1 - x0, y1 - y0);
                match state {
                    TileState::Done(texture) => snapshot.append_texture(texture, &rect),
                    TileState::Queued => {
                        // A hairline inset keeps queued tiles visibly separate.
                        let inner = rect.inset_r(1.0, 1.0);
                        snapshot.append_color(&queued, &inner);
                    }
                    TileState::Running => {
                        snapshot.append_color(&running, &rect);
                        let rounded = gtk::gsk::RoundedRect::from_rect(rect.inset_r(1.0, 1.0), 0.0);
                        snapshot.append_border(&rounded, &[2.0; 4], &[edge; 4]);
                    }
                    TileState::Failed => snapshot.append_color(&failed, &rect),
                }
            }
        }
    }
}

glib::wrapper! {
    /// Draws a [`Mosaic`] tile by tile as results arrive.
    pub struct MosaicView(ObjectSubclass<imp::MosaicView>)
        @extends gtk::Widget,
        @implements gtk::Buildable, gtk::ConstraintTarget;
}

impl Default for MosaicView {
    fn default() -> Self {
        glib::Object::new()
    }
}

impl MosaicView {
    /// Starts a new mosaic: every tile queued.
    pub fn set_mosaic(&self, mosaic: Mosaic, tiles: &[Tile]) {
        self.imp().mosaic.replace(Some(mosaic));
        self.imp().tiles.replace(
            tiles
                .iter()
                .map(|t| (t.clone(), TileState::Queued))
                .collect(),
        );
        self.queue_resize();
    }

    /// Changes what the tile with top-left corner (`x`, `y`) shows.
    pub fn set_tile_state(&self, x: u32, y: u32, state: TileState) {
        if let Some(entry) = self
            .imp()
            .tiles
            .borrow_mut()
            .iter_mut()
            .find(|(t, _)| t.x == x && t.y == y)
        {
            entry.1 = state;
        }
        self.queue_draw();
    }

    /// Shows the image pixel for pixel (scrolling) or fitted to the view.
    pub fn set_actual_size(&self, actual_size: bool) {
        self.imp().actual_size.set(actual_size);
        self.queue_resize();
    }

    /// How many tiles show their image.
    pub fn done_tiles(&self) -> usize {
        self.imp()
            .tiles
            .borrow()
            .iter()
            .filter(|(_, s)| matches!(s, TileState::Done(_)))
            .count()
    }
}

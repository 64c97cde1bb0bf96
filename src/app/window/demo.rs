//! The Mandelbrot demo: one job per tile, each result drawn into the mosaic.

use super::*;

impl Window {
    /// Starts the Mandelbrot demo: one job per tile of `mosaic`.
    pub fn start_demo(&self, mosaic: Mosaic) {
        let processor = match Processor::find("mandelbrot") {
            Ok(p) => p,
            Err(err) => return self.toast(&err.to_string()),
        };
        let tiles = mosaic.tiles();
        self.imp().mosaic.set(Some(mosaic));
        self.imp().mosaic_view.set_mosaic(mosaic, &tiles);
        self.imp().stack.set_visible_child_name("mosaic");
        for tile in tiles {
            // A few bytes each: encoding them here costs less than a thread hop.
            let mut cbor = Vec::new();
            if let Err(err) = ciborium::into_writer(&tile.input, &mut cbor) {
                self.toast(&format!("Cannot encode a tile: {err}"));
                continue;
            }
            self.submit(processor.clone(), JobKind::Tile(tile), Arc::new(cbor));
        }
    }

    pub(super) fn on_tile_finished(&self, tile: &Tile, finished: Finished<TileOutput>) {
        if let Ok(output) = finished.result {
            if output.rgba.len() == output.width as usize * output.height as usize * 4 {
                let stride = output.width as usize * 4;
                let bytes = glib::Bytes::from_owned(output.rgba);
                let texture: gdk::Texture = gdk::MemoryTexture::new(
                    output.width as i32,
                    output.height as i32,
                    gdk::MemoryFormat::R8g8b8a8,
                    &bytes,
                    stride,
                )
                .upcast();
                self.imp().mosaic_view.set_tile_state(
                    tile.x,
                    tile.y,
                    TileState::Done(texture.clone()),
                );
                self.update_record(finished.id, |r| r.output = Some(JobOutput::Tile(texture)));
            }
        }
        self.result_arrived();
    }
}

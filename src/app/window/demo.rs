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
        let imp = self.imp();
        imp.mosaic.set(Some(mosaic));
        imp.mosaic_view.set_mosaic(mosaic, &tiles);
        imp.mosaic_stack.set_visible_child_name("mosaic");
        imp.stack.set_visible_child_name("mosaic");
        // The demo needs no choices: its canvas gets the room.
        if !imp.flap.is_folded() {
            imp.flap.set_reveal_flap(false);
        }
        let batch = Rc::new(AppBatch::new(
            &self.queue(),
            "Mandelbrot demo",
            &processor,
            Vec::new(),
            None,
        ));
        self.start_batch(&batch);
        batch.add_waiting(tiles.len());
        for tile in tiles {
            // A few bytes each: encoding them here costs less than a thread hop.
            let mut cbor = Vec::new();
            if let Err(err) = ciborium::into_writer(&tile.input, &mut cbor) {
                self.toast(&format!("Cannot encode a tile: {err}"));
                batch.drop_waiting(1);
                continue;
            }
            self.submit(
                processor.clone(),
                JobKind::Tile(tile),
                Arc::new(cbor),
                &batch,
            );
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
                trace(&format!(
                    "tiles done: {}",
                    self.imp().mosaic_view.done_tiles()
                ));
            }
        }
        self.result_arrived(finished.id, false);
    }
}

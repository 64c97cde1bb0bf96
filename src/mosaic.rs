//! The Mandelbrot mosaic: how the demo splits an image into tiles, one `offload-mandelbrot` job
//! each. Shared by `offload demo` and the app's demo, so both render the same picture.

use serde::{Deserialize, Serialize};

/// The input of `offload-mandelbrot`: a region of the complex plane and a pixel size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TileInput {
    /// Real part at the left edge.
    pub x0: f64,
    /// Imaginary part at the top edge.
    pub y0: f64,
    /// Real part at the right edge.
    pub x1: f64,
    /// Imaginary part at the bottom edge.
    pub y1: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Iteration limit per sample.
    pub max_iter: u32,
    /// Samples per pixel along each axis.
    pub samples: u32,
}

/// The result of `offload-mandelbrot`: straight RGBA8 pixels, row by row.
#[derive(Debug, Clone, Deserialize)]
pub struct TileOutput {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    #[serde(with = "serde_bytes")]
    pub rgba: Vec<u8>,
}

/// One tile of a mosaic: where it goes and what to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Left edge in the image, in pixels.
    pub x: u32,
    /// Top edge in the image, in pixels.
    pub y: u32,
    /// The job's input (its `width` and `height` are the tile's size).
    pub input: TileInput,
}

/// How to split which view into how many tiles.
///
/// ```
/// use offload::mosaic::Mosaic;
/// let mosaic = Mosaic::default();
/// let tiles = mosaic.tiles();
/// assert_eq!(tiles.len(), 80);
/// let covered: u32 = tiles.iter().map(|t| t.input.width * t.input.height).sum();
/// assert_eq!(covered, mosaic.width * mosaic.height);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mosaic {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Tiles across.
    pub columns: u32,
    /// Tiles down.
    pub rows: u32,
    /// Iteration limit per sample.
    pub max_iter: u32,
    /// Samples per pixel along each axis.
    pub samples: u32,
    /// The region shown: (x0, y0, x1, y1).
    pub view: (f64, f64, f64, f64),
}

impl Default for Mosaic {
    /// The demo: 1600x1200 pixels in 10x8 tiles, the whole set, 3x3 samples per pixel.
    fn default() -> Self {
        Self {
            width: 1600,
            height: 1200,
            columns: 10,
            rows: 8,
            max_iter: 1500,
            samples: 3,
            view: (-2.4, -1.2, 0.8, 1.2),
        }
    }
}

impl Mosaic {
    /// The tiles, row by row; together they cover the image exactly once.
    pub fn tiles(&self) -> Vec<Tile> {
        let (x0, y0, x1, y1) = self.view;
        let columns = self.columns.clamp(1, self.width.max(1));
        let rows = self.rows.clamp(1, self.height.max(1));
        let px = (x1 - x0) / f64::from(self.width.max(1));
        let py = (y1 - y0) / f64::from(self.height.max(1));
        let edges = |n: u32, total: u32| -> Vec<u32> {
            (0..=n)
                .map(|i| (u64::from(i) * u64::from(total) / u64::from(n)) as u32)
                .collect()
        };
        let xs = edges(columns, self.width);
        let ys = edges(rows, self.height);
        let mut tiles = Vec::with_capacity((columns * rows) as usize);
        for row in ys.windows(2) {
            for col in xs.windows(2) {
                tiles.push(Tile {
                    x: col[0],
                    y: row[0],
                    input: TileInput {
                        x0: x0 + f64::from(col[0]) * px,
                        x1: x0 + f64::from(col[1]) * px,
                        y0: y0 + f64::from(row[0]) * py,
                        y1: y0 + f64::from(row[1]) * py,
                        width: col[1] - col[0],
                        height: row[1] - row[0],
                        max_iter: self.max_iter,
                        samples: self.samples,
                    },
                });
            }
        }
        tiles
    }

    /// Copies a finished tile into an RGBA8 image of this mosaic's size.
    pub fn blit(&self, image: &mut [u8], tile: &Tile, output: &TileOutput) -> Result<(), String> {
        let (width, x, y) = (self.width as usize, tile.x as usize, tile.y as usize);
        let (tw, th) = (output.width as usize, output.height as usize);
        if (tw, th) != (tile.input.width as usize, tile.input.height as usize)
            || output.rgba.len() != tw * th * 4
            || x + tw > width
            || (y + th) * width * 4 > image.len()
        {
            return Err(format!("the tile at {x},{y} came back with the wrong size"));
        }
        for row in 0..th {
            let src = &output.rgba[row * tw * 4..(row + 1) * tw * 4];
            let at = ((y + row) * width + x) * 4;
            image[at..at + tw * 4].copy_from_slice(src);
        }
        Ok(())
    }
}

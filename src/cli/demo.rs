//! `offload demo`: the headless twin of the app's demo. Renders a Mandelbrot mosaic, one job
//! per tile, through the queue, and saves it as PNG.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use offload::{Job, Processor};
use serde::{Deserialize, Serialize};

use super::DemoArgs;

/// The input of `offload-mandelbrot`.
#[derive(Debug, Clone, Serialize)]
pub struct TileInput {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
    pub width: u32,
    pub height: u32,
    pub max_iter: u32,
    pub samples: u32,
}

/// The result of `offload-mandelbrot`.
#[derive(Debug, Deserialize)]
pub struct TileOutput {
    pub width: u32,
    pub height: u32,
    #[serde(with = "serde_bytes")]
    pub rgba: Vec<u8>,
}

/// The region of the complex plane the demo shows, with the image's 4:3 aspect.
const VIEW: (f64, f64, f64, f64) = (-2.4, -1.2, 0.8, 1.2);

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.columns == 0 || args.rows == 0 || args.width < args.columns || args.height < args.rows {
        bail!("the image must be at least one pixel per tile");
    }
    let processor = Processor::find("mandelbrot")?;
    let job = Job::new(processor);
    let queue = super::queue(args.jobs);
    let tiles = tiles(&args);
    let bar = super::progress_bar(tiles.len() as u64, "tiles");
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tiles.len());
    for (x, y, input) in &tiles {
        handles.push((*x, *y, queue.submit::<_, TileOutput>(&job, input)?));
    }
    let (width, height) = (args.width as usize, args.height as usize);
    let image = glib::MainContext::default().block_on(async {
        let mut image = vec![0u8; width * height * 4];
        for (x, y, handle) in handles {
            let tile = handle
                .result()
                .await
                .with_context(|| format!("tile at {x},{y}"))?;
            blit(&mut image, width, x as usize, y as usize, &tile)?;
            bar.inc(1);
        }
        anyhow::Ok(image)
    })?;
    bar.finish_and_clear();
    save_png(&args.out, args.width, args.height, &image)?;
    eprintln!(
        "offload: rendered {} tiles ({}x{}) in {:.2} s with up to {} at once; saved {}",
        tiles.len(),
        args.width,
        args.height,
        started.elapsed().as_secs_f64(),
        queue.max_running(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Splits the image into tiles: (left pixel, top pixel, job input), row by row.
fn tiles(args: &DemoArgs) -> Vec<(u32, u32, TileInput)> {
    let (x0, y0, x1, y1) = VIEW;
    let px = (x1 - x0) / f64::from(args.width);
    let py = (y1 - y0) / f64::from(args.height);
    let edges = |n: u32, total: u32| -> Vec<u32> { (0..=n).map(|i| i * total / n).collect() };
    let xs = edges(args.columns, args.width);
    let ys = edges(args.rows, args.height);
    let mut out = Vec::new();
    for row in ys.windows(2) {
        for col in xs.windows(2) {
            let input = TileInput {
                x0: x0 + f64::from(col[0]) * px,
                x1: x0 + f64::from(col[1]) * px,
                y0: y0 + f64::from(row[0]) * py,
                y1: y0 + f64::from(row[1]) * py,
                width: col[1] - col[0],
                height: row[1] - row[0],
                max_iter: args.max_iter,
                samples: args.samples,
            };
            out.push((col[0], row[0], input));
        }
    }
    out
}

fn blit(
    image: &mut [u8],
    width: usize,
    x: usize,
    y: usize,
    tile: &TileOutput,
) -> anyhow::Result<()> {
    let (tw, th) = (tile.width as usize, tile.height as usize);
    if tile.rgba.len() != tw * th * 4 || x + tw > width || (y + th) * width * 4 > image.len() {
        bail!("tile at {x},{y} has the wrong size");
    }
    for row in 0..th {
        let src = &tile.rgba[row * tw * 4..(row + 1) * tw * 4];
        let at = ((y + row) * width + x) * 4;
        image[at..at + tw * 4].copy_from_slice(src);
    }
    Ok(())
}

/// Saves RGBA pixels as PNG.
pub fn save_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgba)?;
    writer.finish()?;
    Ok(())
}

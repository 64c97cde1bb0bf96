//! `offload demo`: the headless twin of the app's demo. Renders a Mandelbrot mosaic, one job
//! per tile, through the queue, and saves it as PNG.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use offload::mosaic::{Mosaic, TileOutput};
use offload::{Job, Processor};

use super::DemoArgs;

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.columns == 0 || args.rows == 0 || args.width < args.columns || args.height < args.rows {
        bail!("the image must be at least one pixel per tile");
    }
    let mosaic = Mosaic {
        width: args.width,
        height: args.height,
        columns: args.columns,
        rows: args.rows,
        max_iter: args.max_iter,
        samples: args.samples,
        ..Mosaic::default()
    };
    let job = Job::new(Processor::find("mandelbrot")?);
    let queue = super::queue(args.jobs);
    let tiles = mosaic.tiles();
    let bar = super::progress_bar(tiles.len() as u64, "tiles");
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tiles.len());
    for tile in &tiles {
        handles.push(queue.submit::<_, TileOutput>(&job, &tile.input)?);
    }
    let image = glib::MainContext::default().block_on(async {
        let mut image = vec![0u8; mosaic.width as usize * mosaic.height as usize * 4];
        for (tile, handle) in tiles.iter().zip(handles) {
            let output = handle
                .result()
                .await
                .with_context(|| format!("tile at {},{}", tile.x, tile.y))?;
            mosaic
                .blit(&mut image, tile, &output)
                .map_err(anyhow::Error::msg)?;
            bar.inc(1);
        }
        anyhow::Ok(image)
    })?;
    bar.finish_and_clear();
    save_png(&args.out, mosaic.width, mosaic.height, &image)?;
    eprintln!(
        "offload: rendered {} tiles ({}x{}) in {:.2} s with up to {} at once; saved {}",
        tiles.len(),
        mosaic.width,
        mosaic.height,
        started.elapsed().as_secs_f64(),
        queue.max_running(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Saves RGBA pixels as PNG.
fn save_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> anyhow::Result<()> {
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

//! Suite `scaling`: the Mandelbrot mosaic (the demo's 80 tiles) at -j 1 up to the core count,
//! through the engine and, for reference, the floor; speedup against -j 1.

use offload::mosaic::{Mosaic, TileOutput};
use offload::{Job, Persistence, Processor};

use crate::common::{
    heading, measure, median, num, progress, ratio_cell, run_engine, run_floor, verdict, Env,
    OrDie, Sample, Table,
};

pub struct Options {
    pub rounds: usize,
}

pub fn run(env: &Env, options: &Options) {
    let mandelbrot = env.exe("offload-mandelbrot");
    let mosaic = Mosaic::default();
    let tiles = mosaic.tiles();
    heading(
        "CPU scaling",
        &format!(
            "The demo's mosaic: {}x{} pixels in {} tiles, max_iter {}, {}x{} samples per pixel, \
             one `offload-mandelbrot` job per tile. {} rounds; within a round every -j runs \
             once for the engine and once for the floor, in an order that flips every round. \
             Speedup = median over rounds of (time at -j 1 / time at -j N) from the same round.",
            mosaic.width,
            mosaic.height,
            tiles.len(),
            mosaic.max_iter,
            mosaic.samples,
            mosaic.samples,
            options.rounds
        ),
    );
    // A process per job, as the floor it is compared with.
    let job = Job::new(Processor::at(&mandelbrot)).persistence(Persistence::Never);
    let levels: Vec<usize> = (1..=env.cores).collect();
    let check = |i: usize, tile: TileOutput| -> Result<(), String> {
        let want = &tiles[i].input;
        if (tile.width, tile.height) == (want.width, want.height)
            && tile.rgba.len() == (want.width * want.height * 4) as usize
        {
            Ok(())
        } else {
            Err(format!("tile {i} came back with the wrong size"))
        }
    };
    // samples[method][level index] = one Sample per round.
    let mut samples: [Vec<Vec<Sample>>; 2] = [
        vec![Vec::new(); levels.len()],
        vec![Vec::new(); levels.len()],
    ];
    for round in 0..options.rounds {
        let mut order: Vec<(usize, usize)> = levels
            .iter()
            .enumerate()
            .flat_map(|(li, _)| [(0, li), (1, li)])
            .collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for (method, li) in order {
            let parallel = levels[li];
            let (result, sample) = measure(|| {
                if method == 0 {
                    run_engine(&job, tiles.len(), parallel, |i| &tiles[i].input, check)
                } else {
                    run_floor(
                        &mandelbrot,
                        &[],
                        tiles.len(),
                        parallel,
                        |i| &tiles[i].input,
                        check,
                    )
                }
            });
            result.or_die("scaling run");
            progress(format!(
                "scaling round {}: {} -j {parallel}: {:.3} s",
                round + 1,
                ["engine", "floor"][method],
                sample.secs()
            ));
            samples[method][li].push(sample);
        }
    }
    let secs = |method: usize, li: usize| -> Vec<f64> {
        samples[method][li].iter().map(Sample::secs).collect()
    };
    let mut table = Table::new(&[
        "-j",
        "engine s (median)",
        "engine speedup vs -j 1",
        "floor s (median)",
        "floor speedup vs -j 1",
        "engine time / floor time",
        "processor CPU s",
        "other load",
    ]);
    let mut engine_speedups = Vec::new();
    for (li, parallel) in levels.iter().enumerate() {
        let speedup = |method: usize| -> Vec<f64> {
            secs(method, 0)
                .iter()
                .zip(secs(method, li))
                .map(|(one, n)| one / n)
                .collect()
        };
        let engine_vs_floor: Vec<f64> = secs(0, li)
            .iter()
            .zip(secs(1, li))
            .map(|(e, f)| e / f)
            .collect();
        engine_speedups.push(median(&speedup(0)));
        table.row(vec![
            parallel.to_string(),
            num(median(&secs(0, li)), 3),
            ratio_cell(&speedup(0)),
            num(median(&secs(1, li)), 3),
            ratio_cell(&speedup(1)),
            ratio_cell(&engine_vs_floor),
            num(
                median(
                    &samples[0][li]
                        .iter()
                        .map(|s| s.child_cpu.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
                2,
            ),
            num(
                median(
                    &samples[0][li]
                        .iter()
                        .map(|s| s.other_load)
                        .collect::<Vec<_>>(),
                ),
                2,
            ),
        ]);
    }
    println!("{table}");
    if let Some(speedup) = engine_speedups.get(1) {
        println!(
            "- engine speedup at -j 2: {speedup:.2}x (target 1.9x or more on a 2-core machine): {}",
            verdict(*speedup, 1.9, true)
        );
    }
    if env.cores > 2 {
        if let Some(speedup) = engine_speedups.last() {
            println!(
                "- engine speedup at -j {}: {speedup:.2}x ({:.0}% of linear)",
                env.cores,
                speedup / env.cores as f64 * 100.0
            );
        }
    }
}

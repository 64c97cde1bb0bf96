//! `offload-mandelbrot`: renders one tile of the Mandelbrot set as an RGBA8 image.
//!
//! The tile covers the complex-plane rectangle whose real part runs from `x0` to `x1` and whose
//! imaginary part runs from `y0` to `y1`; row 0 is at `y0`. Each pixel is sampled at its centre,
//! so tiles that share an edge (`x1` of one is `x0` of the next) join without a repeated column.
//! Points that do not escape within `max_iter` iterations are inside the set and pure black;
//! the rest are coloured by their smooth (continuous) escape count, so there is no banding.

use std::f64::consts::LN_2;
use std::process::ExitCode;

use offload_sdk::{Context, Error, Processor};
use serde::{Deserialize, Serialize};

/// The largest `width` and `height` accepted.
const MAX_SIDE: u32 = 8192;
/// The largest `max_iter` accepted.
const MAX_ITER: u32 = 1_000_000;
/// An orbit has escaped once |z|² exceeds this. A large radius (256, not 2) makes the smooth
/// escape count accurate.
const BAILOUT_SQ: f64 = 256.0 * 256.0;
/// Iterations between cancellation checks within a row (a few milliseconds of work).
const CHECK_EVERY: u64 = 1 << 22;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MandelbrotInput {
    /// Real part at the left edge of the tile.
    #[serde(deserialize_with = "offload_sdk::number::real")]
    x0: f64,
    /// Imaginary part at the edge of row 0.
    #[serde(deserialize_with = "offload_sdk::number::real")]
    y0: f64,
    /// Real part at the right edge.
    #[serde(deserialize_with = "offload_sdk::number::real")]
    x1: f64,
    /// Imaginary part at the edge of the last row.
    #[serde(deserialize_with = "offload_sdk::number::real")]
    y1: f64,
    /// Tile size in pixels, 1 to 8192 each.
    width: u32,
    height: u32,
    /// Iterations after which a point counts as inside the set, 1 to 1,000,000.
    max_iter: u32,
    /// Samples per pixel along each axis (1 to 8, default 1); the pixel is their average, so
    /// 3 gives 9 samples per pixel and smooth edges at 9 times the work.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    samples: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

const MAX_SAMPLES: u32 = 8;

#[derive(Debug, Serialize)]
struct MandelbrotOutput {
    width: u32,
    height: u32,
    /// `width * height * 4` bytes: rows from `y0` to `y1`, straight RGBA8, alpha always 255.
    #[serde(with = "serde_bytes")]
    rgba: Vec<u8>,
    /// Iterations actually computed over the whole tile (points that the cardioid, bulb or
    /// cycle checks settle early cost fewer than `max_iter`).
    iterations: u64,
}

fn validate(input: &MandelbrotInput) -> Result<(), Error> {
    for (name, side) in [("width", input.width), ("height", input.height)] {
        if !(1..=MAX_SIDE).contains(&side) {
            return Err(Error::invalid_input(format!(
                "{name} must be from 1 to {MAX_SIDE} pixels, got {side}"
            )));
        }
    }
    if !(1..=MAX_SAMPLES).contains(&input.samples) {
        return Err(Error::invalid_input(format!(
            "samples must be from 1 to {MAX_SAMPLES}, got {}",
            input.samples
        )));
    }
    if !(1..=MAX_ITER).contains(&input.max_iter) {
        return Err(Error::invalid_input(format!(
            "max_iter must be from 1 to {MAX_ITER}, got {}",
            input.max_iter
        )));
    }
    for (name, value) in [
        ("x0", input.x0),
        ("y0", input.y0),
        ("x1", input.x1),
        ("y1", input.y1),
    ] {
        if !value.is_finite() {
            return Err(Error::invalid_input(format!(
                "{name} must be a finite number, got {value}"
            )));
        }
    }
    if !(input.x1 - input.x0).is_finite() || !(input.y1 - input.y0).is_finite() {
        return Err(Error::invalid_input(
            "the region is too large: x1 - x0 and y1 - y0 must be finite",
        ));
    }
    Ok(())
}

/// Whether `c` is in the main cardioid or the period-2 bulb, where no orbit ever escapes.
#[inline]
fn in_cardioid_or_bulb(cr: f64, ci: f64) -> bool {
    let ci2 = ci * ci;
    let xq = cr - 0.25;
    let q = xq * xq + ci2;
    let xb = cr + 1.0;
    q * (q + xq) <= 0.25 * ci2 || xb * xb + ci2 <= 0.0625
}

/// Iterates `z -> z² + c` from `z = 0`. Returns the iterations computed and, if the orbit
/// escaped, its smooth escape count (`None`: inside the set).
#[inline]
fn escape(cr: f64, ci: f64, max_iter: u32) -> (u32, Option<f64>) {
    if in_cardioid_or_bulb(cr, ci) {
        return (0, None);
    }
    let (mut zr, mut zi, mut zr2, mut zi2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    // Brent's cycle check: remember z at iterations 8, 16, 32, ...; meeting the exact same value
    // again means the orbit is periodic in floating point and will never escape.
    let (mut seen_r, mut seen_i) = (0.0f64, 0.0f64);
    let mut next_save = 8u32;
    let mut n = 0u32;
    while n < max_iter {
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        zr2 = zr * zr;
        zi2 = zi * zi;
        n += 1;
        let mag2 = zr2 + zi2;
        if mag2 > BAILOUT_SQ {
            // n + 1 - log2(log2 |z|), with log2 |z| = ln(|z|²) / (2 ln 2).
            let smooth = f64::from(n) + 1.0 - (mag2.ln() / (2.0 * LN_2)).log2();
            return (n, Some(smooth.max(0.0)));
        }
        if zr == seen_r && zi == seen_i {
            return (n, None);
        }
        if n == next_save {
            seen_r = zr;
            seen_i = zi;
            next_save = next_save.saturating_mul(2);
        }
    }
    (n, None)
}

/// Entries in the colour table; one trip through it is one cycle of the palette.
const PALETTE_SIZE: usize = 2048;

/// A cyclic palette: deep blue through sky blue, white, gold and dark red back to blue.
/// None of its colours is black, so the set always stands out.
fn palette() -> Vec<[u8; 4]> {
    const STOPS: [(f64, [f64; 3]); 6] = [
        (0.0, [0.0, 7.0, 100.0]),
        (0.16, [32.0, 107.0, 203.0]),
        (0.42, [237.0, 255.0, 255.0]),
        (0.6425, [255.0, 170.0, 0.0]),
        (0.8575, [120.0, 20.0, 40.0]),
        (1.0, [0.0, 7.0, 100.0]),
    ];
    (0..PALETTE_SIZE)
        .map(|i| {
            let t = i as f64 / PALETTE_SIZE as f64;
            let k = STOPS
                .windows(2)
                .position(|w| t < w[1].0)
                .unwrap_or(STOPS.len() - 2);
            let (t0, c0) = STOPS[k];
            let (t1, c1) = STOPS[k + 1];
            // Smoothstep between stops hides the corners of plain linear interpolation.
            let s = (t - t0) / (t1 - t0);
            let s = s * s * (3.0 - 2.0 * s);
            let channel = |j: usize| (c0[j] + (c1[j] - c0[j]) * s).round().clamp(0.0, 255.0) as u8;
            [channel(0), channel(1), channel(2), 255]
        })
        .collect()
}

/// The colour of a pixel with smooth escape count `smooth` (`None`: inside the set, black).
#[inline]
fn colour(palette: &[[u8; 4]], smooth: Option<f64>) -> [u8; 4] {
    const BLACK: [u8; 4] = [0, 0, 0, 255];
    let Some(mu) = smooth else {
        return BLACK;
    };
    // The square root spreads the colours evenly from the outside in, whatever max_iter is.
    let t = (mu.sqrt() * 0.11 - 0.12).rem_euclid(1.0);
    let index = ((t * PALETTE_SIZE as f64) as usize).min(palette.len() - 1);
    palette.get(index).copied().unwrap_or(BLACK)
}

fn mandelbrot(input: MandelbrotInput, ctx: &mut Context) -> Result<MandelbrotOutput, Error> {
    validate(&input)?;
    let (width, height) = (input.width as usize, input.height as usize);
    let dx = (input.x1 - input.x0) / f64::from(input.width);
    let dy = (input.y1 - input.y0) / f64::from(input.height);
    let samples = input.samples;
    // Sample offsets within a pixel, as fractions of its size: 0.5 for one sample.
    let offsets: Vec<f64> = (0..samples)
        .map(|k| (f64::from(k) + 0.5) / f64::from(samples))
        .collect();
    let palette = palette();

    let mut rgba = vec![0u8; width * height * 4];
    let mut iterations = 0u64;
    let mut since_check = 0u64;
    let mut reported = 0usize;
    for (row, line) in rgba.chunks_exact_mut(width * 4).enumerate() {
        ctx.check_cancelled()?;
        for (col, pixel) in line.chunks_exact_mut(4).enumerate() {
            let mut sum = [0u32; 3];
            let mut n = 0u32;
            for oy in &offsets {
                let ci = input.y0 + (row as f64 + oy) * dy;
                for ox in &offsets {
                    let cr = input.x0 + (col as f64 + ox) * dx;
                    let (spent, smooth) = escape(cr, ci, input.max_iter);
                    n = n.saturating_add(spent);
                    let c = colour(&palette, smooth);
                    for (total, channel) in sum.iter_mut().zip(c) {
                        *total += u32::from(channel);
                    }
                }
            }
            let count = samples * samples;
            for (out, total) in pixel.iter_mut().zip(sum) {
                *out = ((total + count / 2) / count) as u8;
            }
            pixel[3] = 255;
            iterations += u64::from(n);
            // A row near the set's edge with a large max_iter can take seconds: also look
            // for cancellation within a row once enough work has been done.
            since_check += u64::from(n);
            if since_check >= CHECK_EVERY {
                since_check = 0;
                ctx.check_cancelled()?;
            }
        }
        // At most one progress item per percent.
        let percent = (row + 1) * 100 / height;
        if percent > reported {
            reported = percent;
            ctx.progress((row + 1) as f64 / height as f64);
        }
    }
    Ok(MandelbrotOutput {
        width: input.width,
        height: input.height,
        rgba,
        iterations,
    })
}

fn main() -> ExitCode {
    Processor::new(
        "mandelbrot",
        "Renders one tile of the Mandelbrot set as RGBA8 pixels, with smooth colouring",
    )
    .version(env!("CARGO_PKG_VERSION"))
    .example(&example())
    .example_output_with(|| mandelbrot(example(), &mut Context::detached()).ok())
    .run(mandelbrot)
}

/// The example input: the whole set in a small tile (its result is shown by `--describe`).
fn example() -> MandelbrotInput {
    MandelbrotInput {
        x0: -2.5,
        y0: -1.25,
        x1: 1.0,
        y1: 1.25,
        width: 16,
        height: 12,
        max_iter: 200,
        samples: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(x0: f64, y0: f64, x1: f64, y1: f64, width: u32, height: u32) -> MandelbrotInput {
        MandelbrotInput {
            x0,
            y0,
            x1,
            y1,
            width,
            height,
            max_iter: 500,
            samples: 1,
        }
    }

    fn render(input: MandelbrotInput) -> Result<MandelbrotOutput, Error> {
        mandelbrot(input, &mut Context::detached())
    }

    #[test]
    fn inside_points_are_black_and_outside_points_are_not() {
        // All in the main cardioid.
        let out = render(input(-0.2, -0.1, 0.2, 0.1, 4, 2)).expect("renders");
        assert_eq!(out.rgba.len(), 4 * 2 * 4);
        for pixel in out.rgba.chunks_exact(4) {
            assert_eq!(pixel, [0, 0, 0, 255]);
        }
        // Inside the set but outside the cardioid and bulb: the iteration or cycle check decides.
        let out = render(input(-0.12, 0.74, -0.12, 0.74, 1, 1)).expect("renders");
        assert_eq!(out.rgba, [0, 0, 0, 255]);
        let out = render(input(1.0, 1.0, 1.0, 1.0, 1, 1)).expect("renders");
        assert_ne!(&out.rgba[..3], [0, 0, 0]);
        assert_eq!(out.rgba[3], 255);
    }

    #[test]
    fn cycle_check_agrees_with_plain_iteration() {
        let plain = |cr: f64, ci: f64, max_iter: u32| {
            let (mut zr, mut zi) = (0.0f64, 0.0f64);
            for _ in 0..max_iter {
                let t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                if zr * zr + zi * zi > BAILOUT_SQ {
                    return true;
                }
            }
            false
        };
        for row in 0..60 {
            for col in 0..80 {
                let cr = -2.2 + f64::from(col) * 0.035;
                let ci = -1.2 + f64::from(row) * 0.04;
                let (_, smooth) = escape(cr, ci, 300);
                assert_eq!(smooth.is_some(), plain(cr, ci, 300), "c = {cr} + {ci}i");
            }
        }
    }

    #[test]
    fn supersampling_keeps_the_inside_black_and_softens_edges() {
        let plain = render(input(-2.0, -1.0, 1.0, 1.0, 60, 40)).expect("renders");
        let smooth = render(MandelbrotInput {
            samples: 3,
            ..input(-2.0, -1.0, 1.0, 1.0, 60, 40)
        })
        .expect("renders");
        assert_eq!(plain.rgba.len(), smooth.rgba.len());
        assert!(
            smooth.iterations > plain.iterations * 5,
            "9 samples cost more"
        );
        // The pixel at (-0.5, 0) is deep inside the main cardioid in both.
        let at = (20 * 60 + 30) * 4;
        assert_eq!(smooth.rgba[at..at + 4], [0, 0, 0, 255]);
        assert_ne!(plain.rgba, smooth.rgba);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let cases = [
            input(-2.0, -1.0, 1.0, 1.0, 0, 10),
            input(-2.0, -1.0, 1.0, 1.0, 10, 8193),
            input(f64::NAN, -1.0, 1.0, 1.0, 10, 10),
            input(-2.0, -1.0, f64::INFINITY, 1.0, 10, 10),
            input(-f64::MAX, -1.0, f64::MAX, 1.0, 10, 10),
            MandelbrotInput {
                max_iter: 0,
                ..input(-2.0, -1.0, 1.0, 1.0, 10, 10)
            },
            MandelbrotInput {
                samples: 9,
                ..input(-2.0, -1.0, 1.0, 1.0, 10, 10)
            },
        ];
        for case in cases {
            let err = render(case).expect_err("invalid");
            assert_eq!(err.kind(), offload_sdk::ErrorKind::InvalidInput, "{err}");
        }
    }

    #[test]
    fn integers_are_accepted_for_coordinates() {
        let value = ciborium::Value::Map(
            [
                ("x0", ciborium::Value::Integer((-2).into())),
                ("y0", ciborium::Value::Integer((-1).into())),
                ("x1", ciborium::Value::Float(1.0)),
                ("y1", ciborium::Value::Integer(1.into())),
                ("width", ciborium::Value::Integer(3.into())),
                ("height", ciborium::Value::Integer(2.into())),
                ("max_iter", ciborium::Value::Integer(10.into())),
            ]
            .into_iter()
            .map(|(k, v)| (ciborium::Value::Text(k.into()), v))
            .collect(),
        );
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).expect("encodes");
        let input: MandelbrotInput = ciborium::from_reader(bytes.as_slice()).expect("decodes");
        assert_eq!((input.x0, input.y1), (-2.0, 1.0));
    }
}

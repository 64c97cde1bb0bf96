//! `offload-blur`: blurs an RGBA8 image with three passes of a separable box blur.
//!
//! Each pass averages every pixel over a `(2 * radius + 1)`-pixel window, first along the rows
//! and then along the columns, extending the image past its edges with its edge pixels
//! (clamp-to-edge). Three passes come close to a Gaussian blur with a standard deviation of
//! about `radius`. Running sums keep each pass O(pixels), however large the radius.
//!
//! The four channels are averaged independently, as straight (not premultiplied) RGBA.
//!
//! Two modes: raw pixels (`width`, `height`, `rgba` in, the same out), or a PNG or JPEG file
//! (`image` in, a PNG `image` out), which it declares for `offload run --files` and the app.

#[path = "../images.rs"]
mod images;

use std::process::ExitCode;

use offload_sdk::{Context, Error, Parameter, Processor};
use serde::{Deserialize, Serialize};

/// The largest radius accepted.
const MAX_RADIUS: u32 = 1000;
/// Box blur passes; three approximate a Gaussian.
const PASSES: u32 = 3;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BlurInput {
    #[serde(default, skip_serializing_if = "is_zero")]
    width: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    height: u32,
    /// `width * height * 4` bytes: rows top to bottom, straight RGBA8.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    rgba: Vec<u8>,
    /// Instead of raw pixels: a PNG or JPEG file; the result is then a PNG file.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    image: Option<Vec<u8>>,
    /// Half the box width, in pixels, 0 to 1000; 0 returns the image unchanged.
    #[serde(default = "default_radius")]
    radius: u32,
    /// With `image`: a file of more pixels is refused before it is decoded.
    #[serde(
        default = "images::default_max_pixels",
        skip_serializing_if = "is_default_max_pixels"
    )]
    max_pixels: u64,
}

fn is_default_max_pixels(n: &u64) -> bool {
    *n == images::DEFAULT_MAX_PIXELS
}

fn default_radius() -> u32 {
    4
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
struct BlurOutput {
    width: u32,
    height: u32,
    #[serde(with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    rgba: Vec<u8>,
    /// With an `image` input: the blurred image as a PNG file.
    #[serde(with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    image: Option<Vec<u8>>,
}

fn validate(input: &BlurInput) -> Result<(), Error> {
    if input.width == 0 || input.height == 0 {
        return Err(Error::invalid_input(format!(
            "width and height must be at least 1, got {}x{}",
            input.width, input.height
        )));
    }
    if input.radius > MAX_RADIUS {
        return Err(Error::invalid_input(format!(
            "radius must be at most {MAX_RADIUS}, got {}",
            input.radius
        )));
    }
    let expected = u64::from(input.width)
        .checked_mul(u64::from(input.height))
        .and_then(|pixels| pixels.checked_mul(4));
    let actual = input.rgba.len() as u64;
    if expected != Some(actual) {
        let expected = expected.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string());
        return Err(Error::invalid_input(format!(
            "rgba has {actual} bytes, expected {expected} (width {} x height {} x 4)",
            input.width, input.height
        )));
    }
    Ok(())
}

/// Rounded means over a window of `window` pixels: `(sum + window / 2) / window`, computed by
/// multiplying with a 32-bit fixed-point reciprocal, because dividing is the slowest step here.
///
/// Exact: with `x = sum + window / 2 < 2^19` and `reciprocal = ceil(2^32 / window)`,
/// `x * reciprocal / 2^32` exceeds `x / window` by less than `x / 2^32 < 2^-13`, while the
/// fractional part of `x / window` is at most `1 - 1 / window <= 1 - 1 / 2001`.
#[derive(Debug, Clone, Copy)]
struct Mean {
    half: u32,
    reciprocal: u64,
}

impl Mean {
    fn new(window: u32) -> Self {
        Self {
            half: window / 2,
            reciprocal: (1u64 << 32).div_ceil(u64::from(window)),
        }
    }

    /// `sum` is at most `window * 255`, so the mean fits in a byte.
    #[inline]
    fn of(self, sum: u32) -> u8 {
        ((u64::from(sum + self.half) * self.reciprocal) >> 32) as u8
    }
}

/// One horizontal box pass from `src` into `dst`, which hold rows of `width` RGBA pixels.
fn blur_rows(src: &[u8], dst: &mut [u8], width: usize, radius: usize) {
    let window = (2 * radius + 1) as u32;
    let mean = Mean::new(window);
    let last = width - 1;
    for (row, out) in src
        .chunks_exact(width * 4)
        .zip(dst.chunks_exact_mut(width * 4))
    {
        // The window around pixel 0: radius + 1 copies of it, then pixels 1..=radius (clamped).
        let mut sum = [0u32; 4];
        for c in 0..4 {
            let first = u32::from(row[c]);
            let edge = u32::from(row[last * 4 + c]);
            let inside: u32 = (1..=radius.min(last))
                .map(|x| u32::from(row[x * 4 + c]))
                .sum();
            let beyond = radius.saturating_sub(last) as u32;
            sum[c] = (radius as u32 + 1) * first + inside + beyond * edge;
        }
        for x in 0..width {
            let add = (x + radius + 1).min(last) * 4;
            let sub = x.saturating_sub(radius) * 4;
            for c in 0..4 {
                out[x * 4 + c] = mean.of(sum[c]);
                sum[c] = sum[c] + u32::from(row[add + c]) - u32::from(row[sub + c]);
            }
        }
    }
}

/// One vertical box pass from `src` into `dst`. It walks down the image a row at a time with
/// one running sum per column and channel, so memory is read in order.
fn blur_columns(src: &[u8], dst: &mut [u8], width: usize, radius: usize) {
    let stride = width * 4;
    let window = (2 * radius + 1) as u32;
    let mean = Mean::new(window);
    let rows: Vec<&[u8]> = src.chunks_exact(stride).collect();
    let last = rows.len() - 1;
    let mut sums: Vec<u32> = rows[0]
        .iter()
        .map(|&v| (radius as u32 + 1) * u32::from(v))
        .collect();
    for row in &rows[1..=radius.min(last)] {
        for (sum, &v) in sums.iter_mut().zip(*row) {
            *sum += u32::from(v);
        }
    }
    let beyond = radius.saturating_sub(last) as u32;
    for (sum, &v) in sums.iter_mut().zip(rows[last]) {
        *sum += beyond * u32::from(v);
    }
    for (y, out) in dst.chunks_exact_mut(stride).enumerate() {
        for (o, &sum) in out.iter_mut().zip(&sums) {
            *o = mean.of(sum);
        }
        let add = rows[(y + radius + 1).min(last)];
        let sub = rows[y.saturating_sub(radius)];
        for ((sum, &a), &s) in sums.iter_mut().zip(add).zip(sub) {
            *sum = *sum + u32::from(a) - u32::from(s);
        }
    }
}

fn blur(mut input: BlurInput, ctx: &mut Context) -> Result<BlurOutput, Error> {
    let file = input.image.take();
    if file.is_none() && input.rgba.is_empty() {
        return Err(Error::invalid_input(
            "expected `image` (a PNG or JPEG file) or `width`, `height` and `rgba` (pixels)",
        ));
    }
    if let Some(bytes) = &file {
        let pixels = images::decode(bytes, true, input.max_pixels).map_err(Error::invalid_input)?;
        (input.width, input.height, input.rgba) = (pixels.width, pixels.height, pixels.bytes);
    }
    validate(&input)?;
    let BlurInput {
        width,
        height,
        mut rgba,
        radius,
        ..
    } = input;
    if radius > 0 {
        let (w, r) = (width as usize, radius as usize);
        let mut scratch = vec![0u8; rgba.len()];
        let steps = f64::from(2 * PASSES);
        for pass in 0..PASSES {
            ctx.check_cancelled()?;
            blur_rows(&rgba, &mut scratch, w, r);
            ctx.progress(f64::from(2 * pass + 1) / steps);
            ctx.check_cancelled()?;
            blur_columns(&scratch, &mut rgba, w, r);
            ctx.progress(f64::from(2 * pass + 2) / steps);
        }
    } else {
        ctx.progress(1.0);
    }
    if file.is_some() {
        let pixels = images::Pixels {
            width,
            height,
            alpha: true,
            bytes: rgba,
        };
        let png = images::encode_png(&pixels).map_err(Error::failed)?;
        return Ok(BlurOutput {
            width,
            height,
            rgba: Vec::new(),
            image: Some(png),
        });
    }
    Ok(BlurOutput {
        width,
        height,
        rgba,
        image: None,
    })
}

/// The example input: a 4x4 image, a white square in the middle of a black one, with a red
/// corner.
fn example() -> BlurInput {
    let mut rgba = Vec::with_capacity(4 * 4 * 4);
    for y in 0..4 {
        for x in 0..4 {
            let pixel = match (x, y) {
                (0, 0) => [255, 0, 0, 255],
                (1 | 2, 1 | 2) => [255, 255, 255, 255],
                _ => [0, 0, 0, 255],
            };
            rgba.extend_from_slice(&pixel);
        }
    }
    BlurInput {
        width: 4,
        height: 4,
        rgba,
        image: None,
        radius: 1,
        max_pixels: images::DEFAULT_MAX_PIXELS,
    }
}

fn main() -> ExitCode {
    Processor::new(
        "blur",
        "Blurs an image (RGBA8 pixels, or a PNG or JPEG file) with three passes of a box blur",
    )
    .version(env!("CARGO_PKG_VERSION"))
    .files(images::image_files(None))
    .parameter(
        Parameter::integer("radius", 4, "Blur radius in pixels").range(0.0, f64::from(MAX_RADIUS)),
    )
    .parameter(images::max_pixels_parameter())
    .example(&example())
    .example_output_with(|| blur(example(), &mut Context::detached()).ok())
    .run(blur)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same blur, written the slow and obvious way.
    fn reference(rgba: &[u8], width: usize, height: usize, radius: usize) -> Vec<u8> {
        let r = radius as isize;
        let window = (2 * radius + 1) as u32;
        let mut image = rgba.to_vec();
        for _ in 0..PASSES {
            for horizontal in [true, false] {
                let src = image.clone();
                for y in 0..height {
                    for x in 0..width {
                        for c in 0..4 {
                            let sum: u32 = (-r..=r)
                                .map(|d| {
                                    let (sx, sy) = if horizontal {
                                        ((x as isize + d).clamp(0, width as isize - 1), y as isize)
                                    } else {
                                        (x as isize, (y as isize + d).clamp(0, height as isize - 1))
                                    };
                                    u32::from(src[(sy as usize * width + sx as usize) * 4 + c])
                                })
                                .sum();
                            image[(y * width + x) * 4 + c] = ((sum + window / 2) / window) as u8;
                        }
                    }
                }
            }
        }
        image
    }

    fn image(width: u32, height: u32) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..width * height * 4).map(|_| rng.u8(..)).collect()
    }

    fn run(width: u32, height: u32, rgba: Vec<u8>, radius: u32) -> Result<BlurOutput, Error> {
        let input = BlurInput {
            width,
            height,
            rgba,
            radius,
            image: None,
            max_pixels: images::DEFAULT_MAX_PIXELS,
        };
        blur(input, &mut Context::detached())
    }

    #[test]
    fn matches_the_obvious_blur() {
        for (width, height) in [(1, 1), (1, 7), (9, 1), (5, 4), (17, 11)] {
            for radius in [1, 2, 3, 8, 30] {
                let rgba = image(width, height);
                let expected = reference(&rgba, width as usize, height as usize, radius as usize);
                let out = run(width, height, rgba, radius).expect("blurs");
                assert_eq!(out.rgba, expected, "{width}x{height}, radius {radius}");
            }
        }
    }

    #[test]
    fn reciprocal_means_are_exact() {
        for radius in 0..=MAX_RADIUS {
            let window = 2 * radius + 1;
            let mean = Mean::new(window);
            // The quotient steps up where sum + window / 2 reaches a multiple of the window,
            // and the rounding error is largest just below: check both sides of every step.
            for k in 1..=255 {
                let step = k * window - window / 2;
                for sum in [step - 1, step] {
                    let exact = (sum + window / 2) / window;
                    assert_eq!(u32::from(mean.of(sum)), exact, "sum {sum}, window {window}");
                }
            }
            assert_eq!(mean.of(0), 0);
            assert_eq!(mean.of(255 * window), 255);
        }
    }

    #[test]
    fn radius_zero_and_flat_images_are_unchanged() {
        let rgba = image(6, 5);
        assert_eq!(run(6, 5, rgba.clone(), 0).expect("blurs").rgba, rgba);
        let flat: Vec<u8> = [12, 200, 99, 255].repeat(8 * 3);
        assert_eq!(run(8, 3, flat.clone(), 1000).expect("blurs").rgba, flat);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let err = run(4, 4, vec![0; 63], 1).expect_err("short");
        assert!(
            err.message().contains("63") && err.message().contains("64"),
            "{err}"
        );
        assert!(run(0, 4, Vec::new(), 1).is_err());
        assert!(run(1, 1, vec![0; 4], 1001).is_err());
        assert!(run(u32::MAX, u32::MAX, vec![0; 4], 1).is_err());
    }
}

//! offload-thumbnail: fits a PNG or JPEG image into a `size` x `size` box, as PNG or JPEG.
//!
//! A JPEG is decoded at 1/2, 1/4 or 1/8 scale when that is still at least the thumbnail's size
//! (the DCT's own downscale: a 1920x1080 photo to 256 px decodes at 480x270), then resampled
//! with a Lanczos filter. It declares files and parameters, so the app and `offload run
//! --files` run it on a folder of images.

use std::io::Cursor;
use std::process::ExitCode;

#[path = "../images.rs"]
mod images;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::ImageEncoder;
use images::Pixels;
use offload_sdk::{Context, Error, Parameter, Processor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
struct ThumbnailInput {
    /// The image file's bytes: PNG or JPEG.
    #[serde(with = "serde_bytes")]
    image: Vec<u8>,
    #[serde(default = "default_size")]
    size: u32,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default = "default_quality")]
    quality: u8,
    /// Images of more pixels are refused before they are decoded.
    #[serde(default = "images::default_max_pixels")]
    max_pixels: u64,
}

fn default_size() -> u32 {
    256
}

fn default_format() -> String {
    "png".to_owned()
}

fn default_quality() -> u8 {
    85
}

#[derive(Debug, Serialize)]
struct ThumbnailOutput {
    /// The thumbnail file's bytes.
    #[serde(with = "serde_bytes")]
    image: Vec<u8>,
    width: u32,
    height: u32,
    /// "png" or "jpeg".
    format: String,
}

fn thumbnail(input: ThumbnailInput, ctx: &mut Context) -> Result<ThumbnailOutput, Error> {
    let pixels = decode(&input.image, input.size, input.max_pixels)?;
    ctx.progress(0.5);
    ctx.check_cancelled()?;
    let (width, height) = fit(pixels.width, pixels.height, input.size);
    let pixels = resize(pixels, width, height)?;
    ctx.progress(0.8);
    let image = encode(&pixels, &input.format, input.quality)?;
    ctx.progress(1.0);
    Ok(ThumbnailOutput {
        image,
        width,
        height,
        format: input.format,
    })
}

/// The largest size with the image's aspect that fits a `size` x `size` box (never larger
/// than the image, never zero).
fn fit(width: u32, height: u32, size: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    if longest <= size {
        return (width.max(1), height.max(1));
    }
    let scale = |side: u32| {
        ((u64::from(side) * u64::from(size) + u64::from(longest) / 2) / u64::from(longest)).max(1)
            as u32
    };
    (scale(width), scale(height))
}

/// The image's pixels, refused before decoding when its header declares more than
/// `max_pixels` (a few KiB can declare 60000x60000, which took 52 s of CPU to decode).
fn decode(bytes: &[u8], size: u32, max_pixels: u64) -> Result<Pixels, Error> {
    images::check_dimensions(bytes, max_pixels).map_err(Error::invalid_input)?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(pixels) = decode_jpeg_scaled(bytes, size, max_pixels)? {
            return Ok(pixels);
        }
    }
    images::decode(bytes, false, max_pixels).map_err(Error::invalid_input)
}

/// A JPEG decoded at the smallest DCT scale still at least the thumbnail's size; `None` for a
/// JPEG this path does not handle (CMYK, 16-bit), which the general decoder then takes.
fn decode_jpeg_scaled(bytes: &[u8], size: u32, max_pixels: u64) -> Result<Option<Pixels>, Error> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    if decoder.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    // This decoder reads the header on its own: it is held to the same limit.
    images::refuse_over(u32::from(info.width), u32::from(info.height), max_pixels)
        .map_err(Error::invalid_input)?;
    Ok(decode_jpeg_at_scale(decoder, info, size))
}

fn decode_jpeg_at_scale(
    mut decoder: jpeg_decoder::Decoder<Cursor<&[u8]>>,
    info: jpeg_decoder::ImageInfo,
    size: u32,
) -> Option<Pixels> {
    let (want_w, want_h) = fit(u32::from(info.width), u32::from(info.height), size);
    decoder
        .scale(
            u16::try_from(want_w).unwrap_or(u16::MAX),
            u16::try_from(want_h).unwrap_or(u16::MAX),
        )
        .ok()?;
    let data = decoder.decode().ok()?;
    let info = decoder.info()?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let bytes = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => data,
        jpeg_decoder::PixelFormat::L8 => data.iter().flat_map(|&l| [l, l, l]).collect(),
        _ => return None,
    };
    Some(Pixels {
        width,
        height,
        alpha: false,
        bytes,
    })
}

fn resize(pixels: Pixels, width: u32, height: u32) -> Result<Pixels, Error> {
    if (width, height) == (pixels.width, pixels.height) {
        return Ok(pixels);
    }
    let pixel_type = if pixels.alpha {
        PixelType::U8x4
    } else {
        PixelType::U8x3
    };
    let source = Image::from_vec_u8(pixels.width, pixels.height, pixels.bytes, pixel_type)
        .map_err(|err| Error::failed(format!("cannot resample: {err}")))?;
    let mut target = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|err| Error::failed(format!("cannot resample: {err}")))?;
    Ok(Pixels {
        width,
        height,
        alpha: pixels.alpha,
        bytes: target.into_vec(),
    })
}

fn encode(pixels: &Pixels, format: &str, quality: u8) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let failed = |err: image::ImageError| Error::failed(format!("cannot encode {format}: {err}"));
    match format {
        "png" => return images::encode_png(pixels).map_err(Error::failed),
        "jpeg" => {
            // JPEG has no alpha: drop it.
            let rgb: Vec<u8>;
            let bytes = if pixels.alpha {
                rgb = pixels
                    .bytes
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect();
                &rgb
            } else {
                &pixels.bytes
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
                .write_image(
                    bytes,
                    pixels.width,
                    pixels.height,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(failed)?;
        }
        other => {
            return Err(Error::invalid_input(format!(
                "format {other:?}: expected png or jpeg"
            )))
        }
    }
    Ok(out)
}

/// The example input: a 4x3 PNG (a red, green and blue stripe), to 2 pixels.
fn example() -> ThumbnailInput {
    let mut rgb = Vec::new();
    for _ in 0..3 {
        for x in 0..4u8 {
            rgb.extend_from_slice(match x {
                0 => &[255, 0, 0],
                1 | 2 => &[0, 255, 0],
                _ => &[0, 0, 255],
            });
        }
    }
    let pixels = Pixels {
        width: 4,
        height: 3,
        alpha: false,
        bytes: rgb,
    };
    ThumbnailInput {
        image: encode(&pixels, "png", 85).unwrap_or_default(),
        size: 2,
        format: default_format(),
        quality: default_quality(),
        max_pixels: images::DEFAULT_MAX_PIXELS,
    }
}

fn main() -> ExitCode {
    Processor::new(
        "thumbnail",
        "Fits a PNG or JPEG image into a size x size box, as PNG or JPEG",
    )
    .version(env!("CARGO_PKG_VERSION"))
    .files(images::image_files(Some("format")))
    .parameter(
        Parameter::integer("size", 256, "Fit into a box of this many pixels").range(1.0, 8192.0),
    )
    .parameter(Parameter::choice(
        "format",
        &["png", "jpeg"],
        "png",
        "Output format",
    ))
    .parameter(Parameter::integer("quality", 85, "JPEG quality").range(1.0, 100.0))
    .parameter(images::max_pixels_parameter())
    .example(&example())
    .example_output_with(|| thumbnail(example(), &mut Context::detached()).ok())
    .run(thumbnail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_keeps_the_aspect_and_never_enlarges() {
        assert_eq!(fit(1920, 1080, 256), (256, 144));
        assert_eq!(fit(1080, 1920, 256), (144, 256));
        assert_eq!(fit(100, 50, 256), (100, 50));
        assert_eq!(fit(5000, 1, 256), (256, 1));
    }

    #[test]
    fn a_jpeg_becomes_a_png_of_the_right_size_and_content() {
        // A 640x480 JPEG, left half red, right half blue.
        let mut rgb = Vec::new();
        for _y in 0..480 {
            for x in 0..640 {
                rgb.extend_from_slice(if x < 320 {
                    &[220, 20, 20]
                } else {
                    &[20, 20, 220]
                });
            }
        }
        let pixels = Pixels {
            width: 640,
            height: 480,
            alpha: false,
            bytes: rgb,
        };
        let jpeg = encode(&pixels, "jpeg", 90).expect("jpeg");
        let input = ThumbnailInput {
            image: jpeg,
            size: 64,
            format: "png".into(),
            quality: 85,
            max_pixels: images::DEFAULT_MAX_PIXELS,
        };
        let out = thumbnail(input, &mut Context::detached()).expect("thumbnail");
        assert_eq!((out.width, out.height), (64, 48));
        let png = image::load_from_memory(&out.image)
            .expect("a PNG")
            .into_rgb8();
        assert_eq!(png.dimensions(), (64, 48));
        let left = png.get_pixel(8, 24);
        let right = png.get_pixel(56, 24);
        assert!(left[0] > 180 && left[2] < 60, "{left:?}");
        assert!(right[2] > 180 && right[0] < 60, "{right:?}");
    }

    #[test]
    fn not_an_image_is_invalid_input() {
        let input = ThumbnailInput {
            image: b"hello".to_vec(),
            size: 64,
            format: "png".into(),
            quality: 85,
            max_pixels: images::DEFAULT_MAX_PIXELS,
        };
        let err = thumbnail(input, &mut Context::detached()).expect_err("refused");
        assert_eq!(err.kind(), offload_sdk::ErrorKind::InvalidInput);
    }
}

//! PNG and JPEG files for the image processors (thumbnail, blur): decoding to 8-bit pixels and
//! encoding a PNG, with the `image` crate.

use std::io::Cursor;

use image::ImageEncoder;
use offload_sdk::{Files, Parameter};

/// The default of `max_pixels`: 100 megapixels. More than a camera's photo (24-61 MP; phones
/// bin their 108-200 MP sensors to 12-50 MP) or a 16K frame (15360x8640, 133 MP, is refused:
/// raise it for those), and a decoded image stays under 400 MB (RGBA) with the blur's copy
/// under 800 MB. A file of a few KiB can declare 60000x60000 (3.6 gigapixels, 14 GB as RGBA).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The `max_pixels` parameter both image processors declare.
pub fn max_pixels_parameter() -> Parameter {
    Parameter::integer(
        "max_pixels",
        DEFAULT_MAX_PIXELS as i64,
        "Refuse images of more pixels than this (width x height), before decoding them",
    )
    .range(1.0, 1e10)
}

pub fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

/// The width and height its header declares, read before anything is decoded; an error when
/// they make more than `max_pixels` pixels.
pub fn check_dimensions(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), String> {
    let (width, height) = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| format!("not a PNG or JPEG image: {err}"))?
        .into_dimensions()
        .map_err(|err| format!("not a PNG or JPEG image: {err}"))?;
    refuse_over(width, height, max_pixels)?;
    Ok((width, height))
}

/// An error when `width` x `height` is more than `max_pixels`, naming both.
pub fn refuse_over(width: u32, height: u32, max_pixels: u64) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!(
            "the image is {width}x{height} ({pixels} pixels), over the limit of {max_pixels} \
             pixels (the max_pixels parameter raises it)"
        ));
    }
    Ok(())
}

/// What an image processor declares: a PNG or JPEG file in its `image` field, a PNG (or the
/// format `extension_parameter` names) out of its `image` field.
pub fn image_files(extension_parameter: Option<&str>) -> Files {
    Files {
        input_field: "image".into(),
        accepts: vec!["jpg".into(), "jpeg".into(), "png".into()],
        output_field: "image".into(),
        output_extension: "png".into(),
        output_extension_parameter: extension_parameter.map(str::to_owned),
    }
}

/// 8-bit pixels: RGB, or RGBA when `alpha`.
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub bytes: Vec<u8>,
}

/// Decodes a PNG or JPEG file of at most `max_pixels` pixels (checked on its header first);
/// RGBA when it has alpha (or when `rgba` is asked), else RGB.
pub fn decode(bytes: &[u8], rgba: bool, max_pixels: u64) -> Result<Pixels, String> {
    check_dimensions(bytes, max_pixels)?;
    let image =
        image::load_from_memory(bytes).map_err(|err| format!("not a PNG or JPEG image: {err}"))?;
    let (width, height) = (image.width(), image.height());
    Ok(if rgba || image.color().has_alpha() {
        Pixels {
            width,
            height,
            alpha: true,
            bytes: image.into_rgba8().into_raw(),
        }
    } else {
        Pixels {
            width,
            height,
            alpha: false,
            bytes: image.into_rgb8().into_raw(),
        }
    })
}

/// Encodes a PNG, fast-compressed (a thumbnail or a batch output, not an archive).
pub fn encode_png(pixels: &Pixels) -> Result<Vec<u8>, String> {
    let color = if pixels.alpha {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(&pixels.bytes, pixels.width, pixels.height, color)
    .map_err(|err| format!("cannot encode png: {err}"))?;
    Ok(out)
}

//! PNG and JPEG files for the image processors (thumbnail, blur): decoding to 8-bit pixels and
//! encoding a PNG, with the `image` crate.

use image::ImageEncoder;
use offload_sdk::Files;

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

/// Decodes a PNG or JPEG file; RGBA when it has alpha (or when `rgba` is asked), else RGB.
pub fn decode(bytes: &[u8], rgba: bool) -> Result<Pixels, String> {
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

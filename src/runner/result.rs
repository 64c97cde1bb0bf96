//! Where a result is decoded, in every mode: the caller's type, chosen at submission
//! (`Queue::submit::<I, O>`), as a plain function of the bytes, run on the runner thread
//! (the main context never decodes CBOR).

use std::any::Any;

use offload_sdk::decode::{decode_one, hex_preview, DecodeError, DecodeLimits};
use serde::de::DeserializeOwned;

use crate::job::RunLimits;

/// Decodes a processor's result into the caller's type.
pub(crate) type Decoder = fn(&[u8], DecodeLimits) -> Result<Box<dyn Any + Send>, DecodeError>;

/// The decoder into `O`.
pub(crate) fn decoder<O: DeserializeOwned + Send + 'static>() -> Decoder {
    |bytes, limits| {
        decode_one::<O>(bytes, limits).map(|value| Box::new(value) as Box<dyn Any + Send>)
    }
}

/// The result's bytes as they are, once checked to be one item that decodes within the
/// limits (`Queue::submit_raw`).
pub(crate) fn raw_item(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<Box<dyn Any + Send>, DecodeError> {
    crate::outcome::CborItem::check(bytes, limits)?;
    Ok(Box::new(crate::outcome::CborItem::from_checked(
        bytes.to_vec(),
    )))
}

/// The result's bytes as they are (the `--describe` probe keeps its JSON).
pub(super) fn keep_bytes(
    bytes: &[u8],
    _: DecodeLimits,
) -> Result<Box<dyn Any + Send>, DecodeError> {
    Ok(Box::new(bytes.to_vec()))
}

/// Decodes `bytes` (what `source` carried: "stdout", "the result") with `decoder` within
/// `limits`; an error says what arrived.
pub(super) fn decode(
    decoder: Decoder,
    bytes: &[u8],
    limits: &RunLimits,
    source: &str,
) -> Result<Box<dyn Any + Send>, String> {
    let limits = DecodeLimits {
        max_bytes: limits.max_output_bytes,
        max_depth: limits.max_output_depth,
    };
    decoder(bytes, limits)
        .map_err(|err| format!("{err}; {source} began with {}", hex_preview(bytes, 16)))
}

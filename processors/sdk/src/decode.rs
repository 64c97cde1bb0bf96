//! Bounded, classified decoding of exactly one CBOR data item.
//!
//! Both sides of the protocol decode untrusted bytes: a processor its input, the host a result.
//! [`decode_one`] refuses oversize buffers and deep nesting, demands exactly one item with no
//! trailing bytes, and says which of those went wrong so that callers can report it.

use std::fmt;

use serde::de::DeserializeOwned;

/// Default cap on the size of one encoded item: 1 GiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 30;

/// Default cap on the nesting depth of arrays, maps and tags.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Bounds applied while decoding untrusted CBOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest encoded item accepted, in bytes.
    pub max_bytes: usize,
    /// The deepest nesting of arrays, maps and tags accepted.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a buffer did not decode into the expected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer was empty: no item at all.
    Empty,
    /// The buffer is larger than [`DecodeLimits::max_bytes`].
    TooLarge {
        /// Size of what arrived (a lower bound when reading stopped at the limit).
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not well-formed CBOR.
    NotCbor {
        /// Byte offset where decoding failed.
        offset: usize,
    },
    /// The item ends before it is complete.
    Truncated,
    /// Nesting deeper than [`DecodeLimits::max_depth`].
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// One complete item was followed by more bytes (a second item, or garbage).
    TrailingBytes {
        /// How many bytes followed the item.
        extra: usize,
    },
    /// Well-formed CBOR, but not the shape the reader expected.
    WrongShape {
        /// What serde said was wrong ("missing field `radius`").
        message: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "no CBOR data item (empty input)"),
            Self::TooLarge { size, limit } => {
                write!(
                    f,
                    "item of {size} bytes or more is over the limit of {limit} bytes"
                )
            }
            Self::NotCbor { offset } => write!(f, "not valid CBOR (malformed at byte {offset})"),
            Self::Truncated => write!(f, "truncated CBOR (the item ends early)"),
            Self::TooDeep { limit } => write!(f, "CBOR nested deeper than {limit} levels"),
            Self::TrailingBytes { extra } => write!(
                f,
                "{extra} trailing bytes after the CBOR item (expected exactly one item)"
            ),
            Self::WrongShape { message } => write!(f, "unexpected shape: {message}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one CBOR item of type `T` from `bytes`, within `limits`.
///
/// ```
/// use offload_sdk::decode::{decode_one, DecodeError, DecodeLimits};
///
/// let mut bytes = Vec::new();
/// ciborium::into_writer(&42u32, &mut bytes).unwrap();
/// assert_eq!(decode_one::<u32>(&bytes, DecodeLimits::default()), Ok(42));
///
/// bytes.push(0);
/// assert_eq!(
///     decode_one::<u32>(&bytes, DecodeLimits::default()),
///     Err(DecodeError::TrailingBytes { extra: 1 })
/// );
/// ```
pub fn decode_one<T: DeserializeOwned>(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, limits.max_depth)
        .map_err(|err| classify(err, bytes, limits))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

fn classify(
    err: ciborium::de::Error<std::io::Error>,
    bytes: &[u8],
    limits: DecodeLimits,
) -> DecodeError {
    use ciborium::de::Error;
    match err {
        Error::Io(_) => DecodeError::Truncated,
        Error::Syntax(offset) => DecodeError::NotCbor { offset },
        Error::RecursionLimitExceeded => DecodeError::TooDeep {
            limit: limits.max_depth,
        },
        Error::Semantic(_, message) => {
            // A semantic error can hide a lower-level one: decode again without a target type
            // so that truncated or malformed bytes are reported as such, not as a wrong shape.
            let mut rest = bytes;
            match ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(
                &mut rest,
                limits.max_depth,
            ) {
                Ok(value) => DecodeError::WrongShape {
                    message: format!("{message} (got {})", describe_value(&value)),
                },
                // Even the catch-all value type refuses it: the bytes are malformed.
                Err(Error::Semantic(offset, _)) => DecodeError::NotCbor {
                    offset: offset.unwrap_or(0),
                },
                Err(other) => classify(other, bytes, limits),
            }
        }
    }
}

/// A short description of a value's shape for error messages: "a map with keys [a, b]".
pub fn describe_value(value: &ciborium::Value) -> String {
    use ciborium::Value;
    match value {
        Value::Integer(i) => format!("the integer {}", i128::from(*i)),
        Value::Bytes(b) => format!("a byte string of {} bytes", b.len()),
        Value::Float(x) => format!("the float {x}"),
        Value::Text(t) if t.len() <= 40 => format!("the text {t:?}"),
        Value::Text(t) => format!("a text of {} bytes", t.len()),
        Value::Bool(b) => format!("{b}"),
        Value::Null => "null".to_owned(),
        Value::Tag(tag, _) => format!("a value with tag {tag}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Map(entries) => {
            let keys: Vec<String> = entries
                .iter()
                .take(8)
                .map(|(k, _)| match k {
                    Value::Text(t) => t.clone(),
                    other => describe_value(other),
                })
                .collect();
            let more = if entries.len() > 8 { ", ..." } else { "" };
            format!("a map with keys [{}{more}]", keys.join(", "))
        }
        _ => "an unknown value".to_owned(),
    }
}

/// The first bytes of a buffer as hex, for error messages: `a1 65 65 72 ... (1024 bytes)`.
pub fn hex_preview(bytes: &[u8], max: usize) -> String {
    let mut out: Vec<String> = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        out.push(format!("... ({} bytes)", bytes.len()));
    }
    if out.is_empty() {
        return "(no bytes)".to_owned();
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).expect("encode");
        out
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn classifies_each_kind_of_bad_bytes() {
        let limits = DecodeLimits::default();
        assert_eq!(decode_one::<u8>(&[], limits), Err(DecodeError::Empty));
        // 0xff alone is a "break" outside an indefinite item: malformed.
        assert!(matches!(
            decode_one::<ciborium::Value>(&[0xff], limits),
            Err(DecodeError::NotCbor { .. })
        ));
        assert!(matches!(
            decode_one::<u8>(&[0xff], limits),
            Err(DecodeError::NotCbor { .. })
        ));
        let mut text = cbor(&"hello world");
        text.truncate(5);
        assert_eq!(
            decode_one::<String>(&text, limits),
            Err(DecodeError::Truncated)
        );
        let two = [cbor(&1u8), cbor(&2u8)].concat();
        assert_eq!(
            decode_one::<u8>(&two, limits),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        let wrong = decode_one::<Point>(&cbor(&"text"), limits);
        assert!(
            matches!(wrong, Err(DecodeError::WrongShape { .. })),
            "{wrong:?}"
        );
    }

    #[test]
    fn truncated_map_is_truncated_not_wrong_shape() {
        let mut bytes = cbor(&serde_json::json!({"x": 1, "y": 2}));
        bytes.pop();
        assert_eq!(
            decode_one::<Point>(&bytes, DecodeLimits::default()),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn depth_and_size_limits_hold() {
        let deep = [vec![0x81u8; 300], vec![0x00]].concat(); // [[[...[0]...]]]
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_depth: 64,
        };
        assert_eq!(
            decode_one::<ciborium::Value>(&deep, limits),
            Err(DecodeError::TooDeep { limit: 64 })
        );
        let small = DecodeLimits {
            max_bytes: 4,
            max_depth: 64,
        };
        assert!(matches!(
            decode_one::<String>(&cbor(&"longer than four"), small),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_declared_length_fails_without_allocating_it() {
        // A byte string that claims 2^62 bytes but carries 3.
        let bytes = [0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        assert_eq!(
            decode_one::<ciborium::Value>(&bytes, DecodeLimits::default()),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn wrong_shape_says_what_arrived() {
        let err = decode_one::<Point>(&cbor(&serde_json::json!({"x": 1})), DecodeLimits::default())
            .expect_err("missing y");
        let text = err.to_string();
        assert!(text.contains("missing field `y`"), "{text}");
        assert!(text.contains("a map with keys [x]"), "{text}");
    }
}

//! Bounded, classified decoding of exactly one CBOR data item.
//!
//! Both sides of the protocol decode untrusted bytes: a processor its input, the host a result.
//! [`decode_one`] refuses oversize buffers and deep nesting, demands exactly one item with no
//! trailing bytes, and says which of those went wrong so that callers can report it. A value
//! of the wrong shape is reported with where it is (`data`, `items[3].name`), found by
//! `serde_path_to_error` as serde walks the item.

use std::cell::Cell;
use std::fmt;

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_path_to_error::{Path, Segment};

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
        /// Where in the item: a field (`data`), an element (`items[3].name`); empty for the
        /// item itself.
        path: String,
        /// What serde said was wrong ("missing field `radius`", "invalid type: string,
        /// expected u32"), and what arrived there.
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
            Self::WrongShape { path, message } if path.is_empty() => {
                write!(f, "unexpected shape: {message}")
            }
            Self::WrongShape { path, message } => {
                write!(f, "unexpected shape at {path}: {message}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// Where the error is, named from `root` (what the item is to the reader: `input`):
    /// `input.data` or `input.items[3]` for a value of the wrong shape there, `root` itself
    /// otherwise.
    ///
    /// ```
    /// use offload_sdk::decode::DecodeError;
    /// let err = DecodeError::WrongShape { path: "data".into(), message: "...".into() };
    /// assert_eq!(err.place("input"), "input.data");
    /// assert_eq!(DecodeError::Truncated.place("input"), "input");
    /// ```
    pub fn place(&self, root: &str) -> String {
        match self {
            Self::WrongShape { path, .. } if path.is_empty() || path.starts_with('[') => {
                format!("{root}{path}")
            }
            Self::WrongShape { path, .. } => format!("{root}.{path}"),
            _ => root.to_owned(),
        }
    }
}

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
    FAILED_AT.take();
    let Tracked(value) =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, limits.max_depth)
            .map_err(|err| classify(err, bytes, limits))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

/// An already decoded `value` as a `T`; a wrong shape says where, as [`decode_one`] does.
///
/// ```
/// use offload_sdk::decode::{decode_value, DecodeError};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Input { sizes: Vec<u32> }
/// let value = ciborium::Value::Map(vec![(
///     "sizes".into(),
///     ciborium::Value::Array(vec![1.into(), "two".into()]),
/// )]);
/// let err = decode_value::<Input>(&value).unwrap_err();
/// assert_eq!(err.place("input"), "input.sizes[1]");
/// assert!(err.to_string().contains(r#"(got the text "two")"#), "{err}");
/// ```
pub fn decode_value<T: DeserializeOwned>(value: &ciborium::Value) -> Result<T, DecodeError> {
    FAILED_AT.take();
    match value.deserialized::<Tracked<T>>() {
        Ok(Tracked(value)) => Ok(value),
        Err(ciborium::value::Error::Custom(message)) => Err(wrong_shape(message, value)),
    }
}

thread_local! {
    /// Where the last [`Tracked`] value that failed to deserialize on this thread failed.
    /// ciborium takes a type to decode, not a deserializer or a seed, so the path leaves the
    /// decoding this way: set by `Tracked` as the error goes up, taken by the caller right
    /// after.
    static FAILED_AT: Cell<Option<Path>> = const { Cell::new(None) };
}

/// `T`, deserialized with its path tracked: on an error, where it happened is left in
/// [`FAILED_AT`].
struct Tracked<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        let result = T::deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            &mut track,
        ));
        match result {
            Ok(value) => Ok(Self(value)),
            Err(err) => {
                FAILED_AT.set(Some(track.path()));
                Err(err)
            }
        }
    }
}

/// The wrong shape serde reported with `message`, in the item `value`: where (as the failed
/// decoding left it) and what is there.
fn wrong_shape(message: String, value: &ciborium::Value) -> DecodeError {
    let at = FAILED_AT.take();
    let found = match &at {
        Some(path) => value_at(value, path),
        None => Some(value),
    };
    let message = match found {
        Some(found) => format!("{message} (got {})", describe_value(found)),
        None => message,
    };
    DecodeError::WrongShape {
        path: at.as_ref().map(path_text).unwrap_or_default(),
        message,
    }
}

/// A path as people read it: `data`, `items[3].name`, `[0]`; `?` for a map key that is not
/// text.
fn path_text(path: &Path) -> String {
    let mut text = String::new();
    for segment in path {
        let name = match segment {
            Segment::Seq { index } => {
                text.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } | Segment::Enum { variant: key } => key.as_str(),
            Segment::Unknown => "?",
        };
        if !text.is_empty() {
            text.push('.');
        }
        text.push_str(name);
    }
    text
}

/// The part of `value` that `path` leads to, if it can be followed.
fn value_at<'a>(value: &'a ciborium::Value, path: &Path) -> Option<&'a ciborium::Value> {
    use ciborium::Value;
    let mut here = value;
    for segment in path {
        while let Value::Tag(_, inner) = here {
            here = inner;
        }
        here = match (segment, here) {
            (Segment::Seq { index }, Value::Array(items)) => items.get(*index)?,
            (Segment::Map { key } | Segment::Enum { variant: key }, Value::Map(entries)) => entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(key.as_str()))
                .map(|(_, v)| v)?,
            _ => return None,
        };
    }
    Some(here)
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
                Ok(value) => wrong_shape(message, &value),
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

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // only decoded
    struct Shapes {
        points: Vec<Point>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn wrong_shape_names_where_it_is() {
        let limits = DecodeLimits::default();
        let shapes = |points: serde_json::Value, data: serde_json::Value| {
            cbor(&serde_json::json!({"points": points, "data": data}))
        };
        let err = decode_one::<Shapes>(&shapes(serde_json::json!([]), "abc".into()), limits)
            .expect_err("a text for bytes");
        assert_eq!(err.place("input"), "input.data");
        let text = err.to_string();
        assert!(text.starts_with("unexpected shape at data: "), "{text}");
        assert!(text.contains("expected byte"), "{text}");
        assert!(text.ends_with(r#"(got the text "abc")"#), "{text}");

        let points = serde_json::json!([{"x": 1, "y": 2}, {"x": 1, "y": "two"}]);
        let err = decode_one::<Shapes>(&shapes(points, serde_json::Value::Null), limits)
            .expect_err("a text for an integer");
        assert_eq!(err.place("input"), "input.points[1].y");
        let points = serde_json::json!([{"x": 1}]);
        let err = decode_one::<Shapes>(&shapes(points, serde_json::Value::Null), limits)
            .expect_err("a field missing");
        assert_eq!(err.place("input"), "input.points[0]");
        assert!(
            err.to_string()
                .ends_with("missing field `y` (got a map with keys [x])"),
            "{err}"
        );
        // The same from a value already decoded.
        let value: ciborium::Value = decode_one(&cbor(&"abc"), limits).expect("a value");
        let err = decode_value::<Shapes>(&value).expect_err("not a map");
        assert_eq!(err.place("input"), "input");
        // And an element of an array at the top.
        let err = decode_one::<Vec<u8>>(&cbor(&serde_json::json!([1, "x"])), limits)
            .expect_err("a text in an array of integers");
        assert_eq!(err.place("input"), "input[1]");
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

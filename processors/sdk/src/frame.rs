//! The frames of persistent mode (PROTOCOL.md, section 18): one process serves many jobs, and
//! host and processor exchange a CBOR sequence of small maps over stdin and stdout.
//!
//! Each frame is a map with a text `type`. The host sends `hello` and then one `job` per job;
//! the processor answers `hello` once it is ready, then for each job any number of `progress`
//! frames and exactly one `result` or `error`, each carrying the job's `id`.
//!
//! Frames are encoded by hand around the payload, so that a job's input (already CBOR on the
//! host) and a result are written as they are, never copied into an intermediate value; they
//! are read with [`Frame::parse`], which finds each field's bytes without decoding the payload.

use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::decode::{decode_one, DecodeError, DecodeLimits};
use crate::protocol::ProgressItem;

/// The argument that starts a processor in persistent mode (before the job's own arguments).
pub const PERSISTENT_FLAG: &str = "--persistent";

/// The first protocol version with persistent mode.
pub const PERSISTENT_PROTOCOL: u32 = 2;

/// `type` of the first frame each side sends.
pub const HELLO: &str = "hello";
/// `type` of a request: `{"type": "job", "id": N, "input": ITEM}`.
pub const JOB: &str = "job";
/// `type` of a success: `{"type": "result", "id": N, "result": ITEM}`.
pub const RESULT: &str = "result";
/// `type` of a failure: `{"type": "error", "id": N, "error": TEXT, "kind": TEXT}`.
pub const ERROR: &str = "error";
/// `type` of a progress report: `{"type": "progress", "id": N, "fraction": F, "message": TEXT}`.
pub const PROGRESS: &str = "progress";

/// Appends a CBOR head: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    match argument {
        0..=23 => out.push(major | argument as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, argument as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The start of a frame: a map of `fields` pairs whose first two are `type` and `id`.
fn frame_start(kind: &str, id: u64, fields: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    head(&mut out, 5, fields);
    text(&mut out, "type");
    text(&mut out, kind);
    text(&mut out, "id");
    head(&mut out, 0, id);
    out
}

/// A `hello` frame; the processor's may name itself.
pub fn hello(protocol: u32, name: Option<&str>, version: Option<&str>) -> Vec<u8> {
    let fields = 2 + u64::from(name.is_some()) + u64::from(version.is_some());
    let mut out = Vec::with_capacity(48);
    head(&mut out, 5, fields);
    text(&mut out, "type");
    text(&mut out, HELLO);
    text(&mut out, "protocol");
    head(&mut out, 0, u64::from(protocol));
    for (key, value) in [("name", name), ("version", version)] {
        if let Some(value) = value {
            text(&mut out, key);
            text(&mut out, value);
        }
    }
    out
}

/// The bytes that go before a job's input item: `{"type": "job", "id": id, "input": `.
pub fn job_head(id: u64) -> Vec<u8> {
    let mut out = frame_start(JOB, id, 3);
    text(&mut out, "input");
    out
}

/// A whole `result` frame around `result`, encoded at once so that a failure to encode never
/// leaves half a frame behind.
pub fn result<O: Serialize + ?Sized>(id: u64, result: &O) -> Result<Vec<u8>, String> {
    let mut out = frame_start(RESULT, id, 3);
    text(&mut out, "result");
    ciborium::into_writer(result, &mut out)
        .map_err(|err| format!("cannot encode the result: {err}"))?;
    Ok(out)
}

/// An `error` frame.
pub fn error(id: u64, message: &str, kind: &str) -> Vec<u8> {
    let mut out = frame_start(ERROR, id, 4);
    text(&mut out, "error");
    text(&mut out, message);
    text(&mut out, "kind");
    text(&mut out, kind);
    out
}

/// A `progress` frame.
pub fn progress(id: u64, item: &ProgressItem) -> Vec<u8> {
    let fields = 3 + u64::from(item.message.is_some());
    let mut out = frame_start(PROGRESS, id, fields);
    text(&mut out, "fraction");
    out.push(0xfb);
    out.extend_from_slice(&item.fraction.to_be_bytes());
    if let Some(message) = &item.message {
        text(&mut out, "message");
        text(&mut out, message);
    }
    out
}

/// A frame as read: its type and where each field's value lies, nothing decoded yet.
///
/// ```
/// use offload_sdk::frame::{self, Frame};
///
/// let bytes = frame::result(7, &"done").unwrap();
/// let parsed = Frame::parse(&bytes).unwrap();
/// assert_eq!((parsed.kind(), parsed.id()), ("result", Ok(Some(7))));
/// assert_eq!(parsed.field_bytes("result"), Some(&[0x64, b'd', b'o', b'n', b'e'][..]));
/// ```
#[derive(Debug)]
pub struct Frame<'a> {
    bytes: &'a [u8],
    kind: &'a str,
    entries: Vec<(&'a str, Range<usize>)>,
}

impl<'a> Frame<'a> {
    /// Reads a frame's fields; fails when it is not a map with text keys and a text `type`.
    /// `bytes` is one complete item, as [`crate::sequence::SequenceBuffer`] hands them out.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        // The reader that split the frame off its stream has checked its nesting against its own
        // limit; here, nesting costs a few bytes of memory per byte of frame at most.
        let entries = crate::sequence::map_entries(bytes, usize::MAX)?;
        let kind_range = entries
            .iter()
            .find(|(key, _)| *key == "type")
            .map(|(_, range)| range.clone())
            .ok_or("a frame without a \"type\"")?;
        let kind = text_at(&bytes[kind_range]).ok_or("a frame whose \"type\" is not text")?;
        Ok(Self {
            bytes,
            kind,
            entries,
        })
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'a str {
        self.kind
    }

    /// The encoded value of a field, if present.
    pub fn field_bytes(&self, key: &str) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, range)| &self.bytes[range.clone()])
    }

    /// A field decoded as `T` within `limits`; `Ok(None)` when absent.
    pub fn field<T: DeserializeOwned>(
        &self,
        key: &str,
        limits: DecodeLimits,
    ) -> Result<Option<T>, DecodeError> {
        self.field_bytes(key)
            .map(|bytes| decode_one(bytes, limits))
            .transpose()
    }

    /// The `id` field: `Ok(None)` when absent, an error when it is not an unsigned integer.
    pub fn id(&self) -> Result<Option<u64>, String> {
        self.field::<u64>("id", small())
            .map_err(|_| "a frame whose \"id\" is not an unsigned integer".to_owned())
    }
}

/// Limits for a frame's small fields (id, type, message, fraction).
fn small() -> DecodeLimits {
    DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 16,
    }
}

/// The text of a definite-length CBOR text string, borrowed.
fn text_at(bytes: &[u8]) -> Option<&str> {
    let (&initial, rest) = bytes.split_first()?;
    if initial >> 5 != 3 {
        return None;
    }
    let info = initial & 0x1f;
    let (len, skip) = match info {
        0..=23 => (usize::from(info), 0),
        24 => (usize::from(*rest.first()?), 1),
        25 => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        _ => return None,
    };
    std::str::from_utf8(rest.get(skip..skip + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> ciborium::Value {
        decode_one(bytes, DecodeLimits::default()).expect("one item")
    }

    fn map(pairs: &[(&str, ciborium::Value)]) -> ciborium::Value {
        ciborium::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (ciborium::Value::Text((*k).into()), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn hand_encoded_frames_decode_as_the_maps_they_claim_to_be() {
        use ciborium::Value;
        assert_eq!(
            decode(&hello(2, Some("diag"), None)),
            map(&[
                ("type", Value::Text("hello".into())),
                ("protocol", Value::Integer(2.into())),
                ("name", Value::Text("diag".into())),
            ])
        );
        let mut job = job_head(300);
        ciborium::into_writer(&[1u8, 2], &mut job).expect("encodes");
        assert_eq!(
            decode(&job),
            map(&[
                ("type", Value::Text("job".into())),
                ("id", Value::Integer(300.into())),
                (
                    "input",
                    Value::Array(vec![Value::Integer(1.into()), Value::Integer(2.into())])
                ),
            ])
        );
        assert_eq!(
            decode(&error(u64::MAX, "bad", "invalid_input")),
            map(&[
                ("type", Value::Text("error".into())),
                ("id", Value::Integer(u64::MAX.into())),
                ("error", Value::Text("bad".into())),
                ("kind", Value::Text("invalid_input".into())),
            ])
        );
        let item = ProgressItem {
            fraction: 0.25,
            message: Some("row 1".into()),
        };
        assert_eq!(
            decode(&progress(70_000, &item)),
            map(&[
                ("type", Value::Text("progress".into())),
                ("id", Value::Integer(70_000.into())),
                ("fraction", Value::Float(0.25)),
                ("message", Value::Text("row 1".into())),
            ])
        );
    }

    #[test]
    fn parsing_finds_the_payload_without_decoding_it() {
        let bytes = result(9, &ciborium::Value::Bytes(vec![5; 1000])).expect("encodes");
        let frame = Frame::parse(&bytes).expect("a frame");
        assert_eq!(frame.kind(), RESULT);
        assert_eq!(frame.id(), Ok(Some(9)));
        let payload: serde_bytes::ByteBuf = frame
            .field("result", DecodeLimits::default())
            .expect("decodes")
            .expect("present");
        assert_eq!(payload.into_vec(), vec![5; 1000]);
    }

    #[test]
    fn frames_without_a_text_type_are_refused() {
        let mut untyped = Vec::new();
        ciborium::into_writer(&map(&[("id", 1.into())]), &mut untyped).expect("encodes");
        assert!(Frame::parse(&untyped).is_err());
        let mut numeric = Vec::new();
        ciborium::into_writer(&map(&[("type", 1.into())]), &mut numeric).expect("encodes");
        assert!(Frame::parse(&numeric).is_err());
        assert!(Frame::parse(&[0x01]).is_err());
    }
}

//! `offload serve`'s requests (PROTOCOL.md 19.2), made from their frames on the reader
//! thread: the small fields decoded and checked, the processor found, the job built, and the
//! input kept as the bytes it came as. The main context gets them ready to act on.

use std::time::Duration;

use ciborium::Value;
use offload::sdk::decode::DecodeLimits;
use offload::sdk::frame::Frame;
use offload::sdk::number::Real;
use offload::{Job, Persistence, Processor, RunLimits, Sandbox};
use serde::de::DeserializeOwned;

/// A request serve acts on.
#[derive(Debug)]
pub enum Request {
    Submit(Box<Submit>),
    Cancel { id: u64 },
    CancelBatch { batch: BatchLabel },
    CancelAll,
    SetPriority { id: u64, priority: i32 },
    Pause { paused: bool },
    SetMaxRunning { max_running: usize },
}

/// A job to queue.
#[derive(Debug)]
pub struct Submit {
    /// The client's id for it.
    pub id: u64,
    pub job: Job,
    /// One CBOR item, as the request carried it.
    pub input: Vec<u8>,
    pub batch: Option<BatchLabel>,
}

/// A `batch` label: text or an unsigned integer (never equal to each other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BatchLabel {
    Text(String),
    Number(u64),
}

/// What a frame read as.
#[derive(Debug)]
pub enum Read {
    Request(Request),
    /// A `submit` with a readable `id` that cannot be queued, and why.
    Refused {
        id: u64,
        why: String,
    },
    /// A request that was not understood, and why (an `error` event).
    NotUnderstood(String),
    /// A type this version does not know: ignored, for later versions (18.3).
    Ignored,
}

/// What every job gets from serve's command line.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub nice: i32,
}

/// Reads one request frame (one complete CBOR item).
pub fn read(bytes: &[u8], defaults: Defaults) -> Read {
    let frame = match Frame::parse(bytes) {
        Ok(frame) => frame,
        Err(why) => return Read::NotUnderstood(format!("a request that is not a frame: {why}")),
    };
    let fields = Fields {
        frame: &frame,
        kind: frame.kind(),
    };
    let request = match frame.kind() {
        "submit" => return submit(&fields, defaults),
        "cancel" => fields.id().map(|id| Request::Cancel { id }),
        "cancel_batch" => fields.batch().and_then(|batch| match batch {
            Some(batch) => Ok(Request::CancelBatch { batch }),
            None => Err(fields.missing("batch")),
        }),
        "cancel_all" => Ok(Request::CancelAll),
        "set_priority" => fields.id().and_then(|id| {
            let priority = fields
                .priority()?
                .ok_or_else(|| fields.missing("priority"))?;
            Ok(Request::SetPriority { id, priority })
        }),
        "pause" => fields
            .get::<bool>("paused", "a boolean")
            .and_then(|paused| paused.ok_or_else(|| fields.missing("paused")))
            .map(|paused| Request::Pause { paused }),
        "set_max_running" => fields
            .get::<u64>("max_running", "an unsigned integer")
            .and_then(|n| n.ok_or_else(|| fields.missing("max_running")))
            .and_then(|n| match usize::try_from(n) {
                Ok(n) if n >= 1 => Ok(Request::SetMaxRunning { max_running: n }),
                _ => Err(fields.bad("max_running", "at least 1")),
            }),
        _ => return Read::Ignored,
    };
    match request {
        Ok(request) => Read::Request(request),
        Err(why) => Read::NotUnderstood(why),
    }
}

/// A `submit`: refused (with its id) when anything about it is wrong.
fn submit(fields: &Fields<'_, '_>, defaults: Defaults) -> Read {
    let id = match fields.id() {
        Ok(id) => id,
        Err(why) => return Read::NotUnderstood(why),
    };
    match job(fields, defaults) {
        Ok((job, input, batch)) => Read::Request(Request::Submit(Box::new(Submit {
            id,
            job,
            input,
            batch,
        }))),
        Err(why) => Read::Refused { id, why },
    }
}

/// The job a `submit` asks for, its input and its batch.
fn job(
    fields: &Fields<'_, '_>,
    defaults: Defaults,
) -> Result<(Job, Vec<u8>, Option<BatchLabel>), String> {
    let name = fields
        .get::<String>("processor", "text")?
        .ok_or_else(|| fields.missing("processor"))?;
    let input = fields
        .frame
        .field_bytes("input")
        .ok_or_else(|| fields.missing("input"))?
        .to_vec();
    let batch = fields.batch()?;
    let mut limits = RunLimits {
        timeout: fields.seconds("timeout")?,
        max_cpu_time: fields.seconds("cpu_limit")?,
        max_memory_bytes: fields.get::<u64>("memory_limit", "a number of bytes")?,
        ..RunLimits::default()
    };
    if let Some(bytes) = fields.get::<u64>("max_output", "a number of bytes")? {
        limits.max_output_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    let persistence = match fields.get::<String>("persistent", "text")?.as_deref() {
        None | Some("auto") => Persistence::Auto,
        Some("always") => Persistence::Always,
        Some("never") => Persistence::Never,
        Some(_) => return Err(fields.bad("persistent", "\"auto\", \"always\" or \"never\"")),
    };
    // Found here, off the main context: it looks at the file system.
    let processor = Processor::find(&name).map_err(|err| err.to_string())?;
    let mut job = Job::new(processor)
        .limits(limits)
        .nice(defaults.nice)
        .persistence(persistence)
        .priority(fields.priority()?.unwrap_or(0));
    for arg in fields
        .get::<Vec<String>>("args", "an array of text")?
        .unwrap_or_default()
    {
        if arg.contains('\0') {
            return Err(fields.bad("args", "text without NUL characters"));
        }
        job = job.arg(arg);
    }
    for (key, value) in fields
        .get::<std::collections::BTreeMap<String, String>>("env", "a map of text to text")?
        .unwrap_or_default()
    {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(fields.bad(
                "env",
                "a map of names (not empty, without '=') to values, without NUL characters",
            ));
        }
        job = job.env(key, value);
    }
    if fields.get::<bool>("sandbox", "a boolean")? == Some(true) {
        job = job.sandbox(Sandbox::new());
    }
    Ok((job, input, batch))
}

/// A frame's fields, read with errors that name the request and the key.
struct Fields<'f, 'a> {
    frame: &'f Frame<'a>,
    kind: &'a str,
}

impl Fields<'_, '_> {
    /// `key` decoded as `T` (described as `what` in an error); `None` when absent or null.
    fn get<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<Option<T>, String> {
        let Some(bytes) = self.frame.field_bytes(key) else {
            return Ok(None);
        };
        if bytes == [0xf6] {
            return Ok(None);
        }
        offload::sdk::decode::decode_one::<T>(bytes, small())
            .map(Some)
            .map_err(|_| self.bad(key, what))
    }

    /// The required `id`.
    fn id(&self) -> Result<u64, String> {
        self.get::<u64>("id", "an unsigned integer")?
            .ok_or_else(|| self.missing("id"))
    }

    fn priority(&self) -> Result<Option<i32>, String> {
        self.get::<i64>("priority", "an integer")?
            .map(|priority| {
                i32::try_from(priority).map_err(|_| self.bad("priority", "an integer of 32 bits"))
            })
            .transpose()
    }

    fn batch(&self) -> Result<Option<BatchLabel>, String> {
        let what = "text or an unsigned integer";
        match self.get::<Value>("batch", what)? {
            None => Ok(None),
            Some(Value::Text(text)) => Ok(Some(BatchLabel::Text(text))),
            Some(Value::Integer(n)) => u64::try_from(n)
                .map(|n| Some(BatchLabel::Number(n)))
                .map_err(|_| self.bad("batch", what)),
            Some(_) => Err(self.bad("batch", what)),
        }
    }

    /// A number of seconds, 0 or more.
    fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        let what = "a number of seconds, 0 or more";
        self.get::<Real>(key, what)?
            .map(|Real(secs)| Duration::try_from_secs_f64(secs).map_err(|_| self.bad(key, what)))
            .transpose()
    }

    fn missing(&self, key: &str) -> String {
        format!("a {:?} request without {key:?}", self.kind)
    }

    fn bad(&self, key: &str, what: &str) -> String {
        format!("a {:?} request whose {key:?} is not {what}", self.kind)
    }
}

/// Limits for a request's small fields (all but the input).
fn small() -> DecodeLimits {
    DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).expect("encodes");
        bytes
    }

    fn map(pairs: Vec<(&str, Value)>) -> Vec<u8> {
        encode(&Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::Text(k.into()), v))
                .collect(),
        ))
    }

    const DEFAULTS: Defaults = Defaults { nice: 10 };

    fn diag_submit(extra: Vec<(&str, Value)>) -> Vec<u8> {
        let mut pairs = vec![
            ("type", Value::Text("submit".into())),
            ("id", 5.into()),
            ("processor", Value::Text("/bin/sh".into())),
            ("input", Value::Bytes(vec![1, 2, 3])),
        ];
        pairs.extend(extra);
        map(pairs)
    }

    #[test]
    fn a_submit_keeps_its_input_as_it_came_and_its_settings() {
        let bytes = diag_submit(vec![
            ("timeout", 1.5.into()),
            ("cpu_limit", 2.into()),
            ("memory_limit", 1000.into()),
            ("priority", (-3).into()),
            ("batch", Value::Text("thumbnails".into())),
            ("persistent", Value::Text("never".into())),
            ("args", Value::Array(vec![Value::Text("-v".into())])),
            (
                "env",
                Value::Map(vec![(Value::Text("K".into()), Value::Text("v".into()))]),
            ),
        ]);
        let Read::Request(Request::Submit(submit)) = read(&bytes, DEFAULTS) else {
            panic!("not a submit");
        };
        assert_eq!(submit.id, 5);
        assert_eq!(submit.input, [0x43, 1, 2, 3]);
        assert_eq!(submit.batch, Some(BatchLabel::Text("thumbnails".into())));
        let limits = submit.job.run_limits();
        assert_eq!(limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(limits.max_cpu_time, Some(Duration::from_secs(2)));
        assert_eq!(limits.max_memory_bytes, Some(1000));
        assert_eq!(submit.job.run_priority(), -3);
        assert_eq!(submit.job.run_persistence(), Persistence::Never);
        assert!(submit
            .job
            .environment()
            .iter()
            .any(|(k, v)| k == "K" && v == "v"));
    }

    #[test]
    fn a_submit_with_a_bad_field_is_refused_with_its_id() {
        for (key, value) in [
            ("timeout", Value::Text("soon".into())),
            ("timeout", (-1).into()),
            ("priority", (1i64 << 40).into()),
            ("persistent", Value::Text("sometimes".into())),
            ("batch", Value::Float(1.0)),
            (
                "env",
                Value::Map(vec![(Value::Text("A=B".into()), Value::Text("v".into()))]),
            ),
        ] {
            let bytes = diag_submit(vec![(key, value)]);
            match read(&bytes, DEFAULTS) {
                Read::Refused { id: 5, why } => assert!(why.contains(key), "{why}"),
                other => panic!("{key}: {other:?}"),
            }
        }
        let unknown = map(vec![
            ("type", Value::Text("submit".into())),
            ("id", 6.into()),
            ("processor", Value::Text("surely-not-installed".into())),
            ("input", 1.into()),
        ]);
        assert!(matches!(
            read(&unknown, DEFAULTS),
            Read::Refused { id: 6, .. }
        ));
    }

    #[test]
    fn requests_that_are_not_understood_say_why() {
        for (bytes, says) in [
            (encode(&7.into()), "not a frame"),
            (map(vec![("id", 1.into())]), "not a frame"),
            (
                map(vec![("type", Value::Text("submit".into()))]),
                "without \"id\"",
            ),
            (
                map(vec![
                    ("type", Value::Text("cancel".into())),
                    ("id", (-1).into()),
                ]),
                "\"id\"",
            ),
            (
                map(vec![
                    ("type", Value::Text("set_max_running".into())),
                    ("max_running", 0.into()),
                ]),
                "at least 1",
            ),
            (
                map(vec![("type", Value::Text("pause".into()))]),
                "\"paused\"",
            ),
        ] {
            match read(&bytes, DEFAULTS) {
                Read::NotUnderstood(why) => assert!(why.contains(says), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        let later = map(vec![("type", Value::Text("from_a_later_version".into()))]);
        assert!(matches!(read(&later, DEFAULTS), Read::Ignored));
    }
}

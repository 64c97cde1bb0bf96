//! `offload serve`'s events (PROTOCOL.md 19.3), encoded on the writer thread: each a map
//! written by hand around its payload, so that a result goes out as the bytes its processor
//! wrote, never decoded and encoded again.

use std::io::{self, Write};

use offload::{CborItem, JobError, RunStats};

use crate::cli::line::LineStats;

/// The version of PROTOCOL.md section 19 that serve speaks (its `hello`'s `protocol`).
pub const PROTOCOL: u64 = 1;

/// What serve tells its client.
#[derive(Debug)]
pub enum Event {
    /// First, once.
    Hello { max_running: usize },
    /// A `submit` was accepted.
    Queued { id: u64 },
    /// The job's processor runs it; `worker` is its persistent worker's number.
    Started {
        id: u64,
        pid: u32,
        worker: Option<u64>,
    },
    /// The processor reported progress.
    Progress {
        id: u64,
        fraction: f64,
        message: Option<String>,
    },
    /// The job ended, once per accepted job.
    Finished {
        id: u64,
        result: Result<CborItem, JobError>,
        stats: RunStats,
    },
    /// A `submit` that cannot be queued.
    Refused { id: u64, error: String },
    /// A request that was not understood, or the end of a broken stream.
    Error { message: String },
}

impl Event {
    /// Writes the event as one CBOR item.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut map = Map::new(out);
        match self {
            Self::Hello { max_running } => {
                map.start("hello", 4)?;
                map.unsigned("protocol", PROTOCOL)?;
                map.text("version", env!("CARGO_PKG_VERSION"))?;
                map.unsigned("max_running", *max_running as u64)
            }
            Self::Queued { id } => {
                map.start("queued", 2)?;
                map.unsigned("id", *id)
            }
            Self::Started { id, pid, worker } => {
                map.start("started", 4)?;
                map.unsigned("id", *id)?;
                map.unsigned("pid", u64::from(*pid))?;
                match worker {
                    Some(worker) => map.unsigned("worker", *worker),
                    None => map.null("worker"),
                }
            }
            Self::Progress {
                id,
                fraction,
                message,
            } => {
                map.start("progress", 3 + u64::from(message.is_some()))?;
                map.unsigned("id", *id)?;
                map.float("fraction", *fraction)?;
                match message {
                    Some(message) => map.text("message", message),
                    None => Ok(()),
                }
            }
            Self::Finished { id, result, stats } => {
                map.start("finished", 4)?;
                map.unsigned("id", *id)?;
                match result {
                    // As the processor wrote it.
                    Ok(item) => map.item("result", item.as_bytes())?,
                    Err(error) => map.serialized("error", error)?,
                }
                map.serialized("stats", &LineStats::new(stats))
            }
            Self::Refused { id, error } => {
                map.start("refused", 3)?;
                map.unsigned("id", *id)?;
                map.text("error", error)
            }
            Self::Error { message } => {
                map.start("error", 2)?;
                map.text("message", message)
            }
        }
    }
}

/// A map being written: its head, then its pairs.
struct Map<'a, W: Write> {
    out: &'a mut W,
}

impl<'a, W: Write> Map<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self { out }
    }

    /// The map's head for `pairs` pairs, and its `type`.
    fn start(&mut self, kind: &str, pairs: u64) -> io::Result<()> {
        self.head(5, pairs)?;
        self.text("type", kind)
    }

    fn key(&mut self, key: &str) -> io::Result<()> {
        self.string(key)
    }

    fn text(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.key(key)?;
        self.string(value)
    }

    fn unsigned(&mut self, key: &str, value: u64) -> io::Result<()> {
        self.key(key)?;
        self.head(0, value)
    }

    fn null(&mut self, key: &str) -> io::Result<()> {
        self.key(key)?;
        self.out.write_all(&[0xf6])
    }

    /// A double-precision float, as persistent mode's progress frames carry it.
    fn float(&mut self, key: &str, value: f64) -> io::Result<()> {
        self.key(key)?;
        self.out.write_all(&[0xfb])?;
        self.out.write_all(&value.to_be_bytes())
    }

    /// An item already encoded, as it is.
    fn item(&mut self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.key(key)?;
        self.out.write_all(bytes)
    }

    /// A small value of ours (an error, the stats), encoded by serde.
    fn serialized(&mut self, key: &str, value: &impl serde::Serialize) -> io::Result<()> {
        self.key(key)?;
        ciborium::into_writer(value, &mut *self.out).map_err(|err| match err {
            ciborium::ser::Error::Io(err) => err,
            ciborium::ser::Error::Value(why) => io::Error::other(why),
        })
    }

    fn string(&mut self, text: &str) -> io::Result<()> {
        self.head(3, text.len() as u64)?;
        self.out.write_all(text.as_bytes())
    }

    /// A CBOR head: major type and argument, in the shortest form.
    fn head(&mut self, major: u8, argument: u64) -> io::Result<()> {
        let major = major << 5;
        match argument {
            0..=23 => self.out.write_all(&[major | argument as u8]),
            24..=0xff => self.out.write_all(&[major | 24, argument as u8]),
            0x100..=0xffff => {
                self.out.write_all(&[major | 25])?;
                self.out.write_all(&(argument as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                self.out.write_all(&[major | 26])?;
                self.out.write_all(&(argument as u32).to_be_bytes())
            }
            _ => {
                self.out.write_all(&[major | 27])?;
                self.out.write_all(&argument.to_be_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;

    fn encoded(event: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        event.write_to(&mut out).expect("writes to a Vec");
        out
    }

    fn decoded(event: &Event) -> Value {
        let bytes = encoded(event);
        offload::sdk::decode::decode_one(&bytes, Default::default()).expect("one item")
    }

    fn get<'a>(value: &'a Value, key: &str) -> &'a Value {
        value
            .as_map()
            .and_then(|map| map.iter().find(|(k, _)| k.as_text() == Some(key)))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key:?} in {value:?}"))
    }

    #[test]
    fn a_result_goes_out_as_the_bytes_it_came_as() {
        // [1, 1.5] with the float at full width, as a processor may write it: re-encoding
        // would shorten it.
        let raw = vec![
            0x82, 0x01, 0xfb, 0x3f, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let event = Event::Finished {
            id: 300,
            result: Ok(CborItem::from_bytes(raw.clone()).expect("one item")),
            stats: RunStats::default(),
        };
        let bytes = encoded(&event);
        assert!(bytes.windows(raw.len()).any(|w| w == raw));
        let value = decoded(&event);
        assert_eq!(get(&value, "type"), &Value::Text("finished".into()));
        assert_eq!(get(&value, "id"), &Value::Integer(300.into()));
        assert_eq!(get(get(&value, "stats"), "worker"), &Value::Null);
    }

    #[test]
    fn every_event_is_a_map_with_its_type_and_fields() {
        let error = JobError::new(offload::FailureKind::Cancelled, "cancelled");
        let events = [
            (Event::Hello { max_running: 2 }, "hello", 4),
            (Event::Queued { id: 1 }, "queued", 2),
            (
                Event::Started {
                    id: 1,
                    pid: 70_000,
                    worker: Some(3),
                },
                "started",
                4,
            ),
            (
                Event::Progress {
                    id: 1,
                    fraction: 0.5,
                    message: Some("half".into()),
                },
                "progress",
                4,
            ),
            (
                Event::Finished {
                    id: 1,
                    result: Err(error),
                    stats: RunStats::default(),
                },
                "finished",
                4,
            ),
            (
                Event::Refused {
                    id: 1,
                    error: "no such processor".into(),
                },
                "refused",
                3,
            ),
            (
                Event::Error {
                    message: "what".into(),
                },
                "error",
                2,
            ),
        ];
        for (event, kind, pairs) in events {
            let value = decoded(&event);
            assert_eq!(get(&value, "type"), &Value::Text(kind.into()));
            assert_eq!(value.as_map().map(Vec::len), Some(pairs), "{value:?}");
        }
        let finished = decoded(&Event::Finished {
            id: 1,
            result: Err(JobError::new(offload::FailureKind::Cancelled, "stopped")),
            stats: RunStats::default(),
        });
        assert_eq!(
            get(get(&finished, "error"), "kind"),
            &Value::Text("cancelled".into())
        );
    }
}

//! Job inputs written as JSON (`{"$bytes": base64}` for byte strings), one document or JSON
//! Lines, encoded as the CBOR items processors read. `offload run` and the app both read their
//! inputs through here.

use std::fmt;
use std::io::BufRead;

use crate::sdk::json::json_to_cbor;

/// Why an input could not be read or encoded; the message names the source and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Encodes one JSON input as one CBOR item.
///
/// ```
/// let item = offload::inputs::encode_json(serde_json::json!({"echo": {"$bytes": "AAE="}}))?;
/// assert_eq!(item, [0xa1, 0x64, b'e', b'c', b'h', b'o', 0x42, 0x00, 0x01]);
/// # Ok::<(), offload::inputs::InputError>(())
/// ```
pub fn encode_json(json: serde_json::Value) -> Result<Vec<u8>, InputError> {
    let value = json_to_cbor(json).map_err(|err| InputError(err.to_string()))?;
    let mut item = Vec::new();
    ciborium::into_writer(&value, &mut item)
        .map_err(|err| InputError(format!("cannot encode CBOR: {err}")))?;
    Ok(item)
}

/// Parses one JSON input: "not valid JSON: ..." if it is not, and an error too if it holds an
/// integer outside the 64-bit range, which JSON parsers read as a float without a word
/// ([`crate::sdk::json::check_integers`]).
///
/// ```
/// let err = offload::inputs::parse_json(b"[18446744073709551616]").unwrap_err();
/// assert!(err.0.starts_with("the integer 18446744073709551616 is outside the 64-bit range"));
/// ```
pub fn parse_json(text: &[u8]) -> Result<serde_json::Value, InputError> {
    let json =
        serde_json::from_slice(text).map_err(|err| InputError(format!("not valid JSON: {err}")))?;
    crate::sdk::json::check_integers(text).map_err(|err| InputError(err.0))?;
    Ok(json)
}

/// The longest line [`read_json_lines`] and [`json_lines`] take, in bytes: the queue's own
/// input limit ([`crate::RunLimits`]'s default, 1 GiB), since a longer input would be
/// refused at submission anyway.
pub const DEFAULT_MAX_LINE_BYTES: u64 = crate::sdk::decode::DEFAULT_MAX_BYTES as u64;

/// Why a line of JSON Lines was not taken ([`json_lines_bounded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineError {
    /// Line `line` (counted from 1) of `name` is longer than `limit` bytes: reading stopped
    /// once it was, without holding more of it.
    OverLimit {
        name: String,
        line: usize,
        limit: u64,
    },
    /// The source could not be read, or the line is not JSON or has no CBOR form; the message
    /// names the source and the line.
    Input(InputError),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::OverLimit { name, line, limit } => {
                write!(
                    f,
                    "{name} line {line} is over the input limit of {limit} bytes"
                )
            }
            LineError::Input(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for LineError {}

impl From<LineError> for InputError {
    fn from(err: LineError) -> Self {
        match err {
            LineError::Input(err) => err,
            over => InputError(over.to_string()),
        }
    }
}

/// Reads JSON Lines (one input per non-empty line) and encodes each input, a line at a time
/// so that the text is never all in memory; a line over [`DEFAULT_MAX_LINE_BYTES`] is an
/// error. `name` names the source in errors. Blocking.
///
/// ```
/// let text = "{\"echo\": 1}\n\n{\"echo\": 2}\n";
/// let items = offload::inputs::read_json_lines(text.as_bytes(), "inputs.jsonl")?;
/// assert_eq!(items.len(), 2);
/// let broken = offload::inputs::read_json_lines("{}\n{\n".as_bytes(), "inputs.jsonl");
/// assert!(broken.is_err_and(|e| e.0.starts_with("inputs.jsonl line 2: not valid JSON")));
/// # Ok::<(), offload::inputs::InputError>(())
/// ```
pub fn read_json_lines(reader: impl BufRead, name: &str) -> Result<Vec<Vec<u8>>, InputError> {
    json_lines(reader, name).collect()
}

/// The inputs of JSON Lines, encoded one at a time as they are read (empty lines skipped):
/// what [`read_json_lines`] collects, for a caller that streams them. `name` names the source
/// in errors ("inputs.jsonl line 2: not valid JSON: ..."). A line over
/// [`DEFAULT_MAX_LINE_BYTES`] is an error; [`json_lines_bounded`] takes another bound.
pub fn json_lines<'a>(
    reader: impl BufRead + 'a,
    name: &'a str,
) -> impl Iterator<Item = Result<Vec<u8>, InputError>> + 'a {
    json_lines_bounded(reader, name, DEFAULT_MAX_LINE_BYTES).map(|item| item.map_err(Into::into))
}

/// [`json_lines`] with lines of at most `max_line_bytes` bytes (before the `\n`): a
/// longer line is refused as it is read, holding at most about `max_line_bytes` of it, so an
/// endless line cannot grow memory without bound. A line that cannot be held (the address
/// space is limited) is an error too, not an abort. The first error ends the iteration.
///
/// ```
/// use offload::inputs::{json_lines_bounded, LineError};
/// let text = "{\"echo\": 1}\n[\"a line of more than 16 bytes\"]\n{\"echo\": 3}\n";
/// let mut items = json_lines_bounded(text.as_bytes(), "inputs.jsonl", 16);
/// assert!(items.next().is_some_and(|item| item.is_ok()));
/// let Some(Err(LineError::OverLimit { line, .. })) = items.next() else { panic!() };
/// assert_eq!(line, 2);
/// assert!(items.next().is_none());
/// ```
pub fn json_lines_bounded<'a>(
    mut reader: impl BufRead + 'a,
    name: &'a str,
    max_line_bytes: u64,
) -> impl Iterator<Item = Result<Vec<u8>, LineError>> + 'a {
    let mut line = Vec::new();
    let mut number = 0usize;
    let mut done = false;
    std::iter::from_fn(move || loop {
        if done {
            return None;
        }
        number += 1;
        let at = || format!("{name} line {number}");
        let failed = |why: String| Some(Err(LineError::Input(InputError(why))));
        match read_line(&mut reader, &mut line, max_line_bytes) {
            Ok(Line::End) => {
                done = true;
                return None;
            }
            Ok(Line::Read) => {}
            Ok(Line::OverLimit) => {
                done = true;
                return Some(Err(LineError::OverLimit {
                    name: name.to_owned(),
                    line: number,
                    limit: max_line_bytes,
                }));
            }
            Err(err) if err.kind() == std::io::ErrorKind::OutOfMemory => {
                done = true;
                return failed(format!(
                    "{}: out of memory after {} bytes of it",
                    at(),
                    line.len()
                ));
            }
            Err(err) => {
                done = true;
                return failed(format!("cannot read {name}: {err}"));
            }
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            done = true;
            return failed(format!("{}: not valid UTF-8", at()));
        };
        if text.trim().is_empty() {
            continue;
        }
        let encoded = parse_json(text.as_bytes())
            .map_err(|err| format!("{}: {err}", at()))
            .and_then(|json| encode_json(json).map_err(|err| format!("{}: {err}", at())));
        return Some(match encoded {
            Ok(item) => Ok(item),
            Err(why) => {
                done = true;
                Err(LineError::Input(InputError(why)))
            }
        });
    })
}

/// What [`read_line`] found.
enum Line {
    /// A line, in the buffer.
    Read,
    /// A line longer than the limit; what was read of it is dropped.
    OverLimit,
    /// The end of the input.
    End,
}

/// Reads one line into `line` (cleared first), without its `\n` or `\r\n`, holding at most
/// `limit` bytes of it: a `BufRead::read_line` that stops at the limit. The buffer grows by
/// doubling, never beyond the limit, with `try_reserve`, so an allocation that fails is an
/// `OutOfMemory` error rather than an abort.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, limit: u64) -> std::io::Result<Line> {
    line.clear();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            break;
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if part.len() > limit - line.len() {
            return Ok(Line::OverLimit);
        }
        let wanted = line.len() + part.len();
        if wanted > line.capacity() {
            let grown = wanted.max(line.capacity().saturating_mul(2)).min(limit);
            line.try_reserve_exact(grown - line.len())
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::OutOfMemory, err))?;
        }
        line.extend_from_slice(part);
        let used = part.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !any {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Line::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_up_to_the_limit_and_no_further() {
        let limit = 10;
        let text = b"\"1234567\"\r\n\n  \n[1,2,3,4,5,6]\n";
        let items: Vec<_> = json_lines_bounded(&text[..], "in", limit).collect();
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            items[0].is_ok(),
            "a line of exactly the limit, its \\r counted"
        );
        assert_eq!(
            items[1],
            Err(LineError::OverLimit {
                name: "in".into(),
                line: 4,
                limit
            })
        );
        assert_eq!(
            items[1].as_ref().map_err(ToString::to_string),
            Err("in line 4 is over the input limit of 10 bytes".to_owned())
        );
        // The last line needs no newline; bytes that are not UTF-8 are an error.
        let items: Vec<_> = json_lines_bounded(&b"1\n2"[..], "in", limit).collect();
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
        let bad = json_lines_bounded(&b"\"\xff\"\n"[..], "in", limit).next();
        assert_eq!(
            bad.map(|b| b.map_err(|e| e.to_string())),
            Some(Err("in line 1: not valid UTF-8".into()))
        );
    }

    #[test]
    fn an_endless_line_is_held_no_further_than_the_limit() {
        // A reader that never ends and never sends a newline, a small piece at a time.
        struct Endless(u64);
        impl std::io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1000);
                buf[..n].fill(b'[');
                self.0 += n as u64;
                Ok(n)
            }
        }
        let mut reader = std::io::BufReader::new(Endless(0));
        let mut line = Vec::new();
        let read = read_line(&mut reader, &mut line, 1 << 20).expect("read");
        assert!(matches!(read, Line::OverLimit));
        assert!(line.capacity() <= 1 << 20, "{}", line.capacity());
        assert!(
            reader.get_ref().0 <= (1 << 20) + 8192,
            "{}",
            reader.get_ref().0
        );
    }
}

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

/// Reads JSON Lines (one input per non-empty line) and encodes each input, a line at a time
/// so that the text is never all in memory. `name` names the source in errors. Blocking.
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
/// in errors ("inputs.jsonl line 2: not valid JSON: ...").
pub fn json_lines<'a>(
    reader: impl BufRead + 'a,
    name: &'a str,
) -> impl Iterator<Item = Result<Vec<u8>, InputError>> + 'a {
    reader
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(number, line)| {
            let line = line.map_err(|err| InputError(format!("cannot read {name}: {err}")))?;
            let at = || format!("{name} line {}", number + 1);
            let json = serde_json::from_str(&line)
                .map_err(|err| InputError(format!("{}: not valid JSON: {err}", at())))?;
            encode_json(json).map_err(|err| InputError(format!("{}: {err}", at())))
        })
}

//! The JSON form of CBOR values, for people at a shell.
//!
//! JSON has no byte strings, so a CBOR byte string is written as `{"$bytes": "<base64>"}`
//! (standard alphabet, with padding), and a tagged item as `{"$tag": N, "$value": ...}`.
//! Everything else maps directly. Map keys that are not text become their JSON text
//! (`1` becomes `"1"`), and floats that JSON cannot hold (NaN, infinities) become `null`;
//! those two are the only lossy cases.

use base64::Engine as _;
use ciborium::Value;
use serde_json::Value as Json;

/// Key of the one-entry JSON object that stands for a CBOR byte string.
pub const BYTES_KEY: &str = "$bytes";
/// Key of the tag number in the JSON object that stands for a tagged CBOR item.
pub const TAG_KEY: &str = "$tag";
/// Key of the tagged content in the JSON object that stands for a tagged CBOR item.
pub const TAG_VALUE_KEY: &str = "$value";

/// Why a JSON document has no CBOR equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

/// Converts a CBOR value to its JSON form.
pub fn cbor_to_json(value: &Value) -> Json {
    match value {
        Value::Integer(i) => {
            let i = i128::from(*i);
            if let Ok(v) = i64::try_from(i) {
                Json::from(v)
            } else if let Ok(v) = u64::try_from(i) {
                Json::from(v)
            } else {
                // Outside 64 bits: JSON numbers would lose it, keep the digits.
                Json::String(i.to_string())
            }
        }
        Value::Bytes(bytes) => {
            let mut map = serde_json::Map::new();
            map.insert(
                BYTES_KEY.to_owned(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
            Json::Object(map)
        }
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Value::Text(text) => Json::String(text.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Null => Json::Null,
        Value::Tag(tag, inner) => {
            let mut map = serde_json::Map::new();
            map.insert(TAG_KEY.to_owned(), Json::from(*tag));
            map.insert(TAG_VALUE_KEY.to_owned(), cbor_to_json(inner));
            Json::Object(map)
        }
        Value::Array(items) => Json::Array(items.iter().map(cbor_to_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (key_text(k), cbor_to_json(v)))
                .collect(),
        ),
        _ => Json::Null,
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::Text(text) => text.clone(),
        other => cbor_to_json(other).to_string(),
    }
}

/// Converts a JSON document to CBOR, reading `{"$bytes": ...}` and `{"$tag": ...}` objects.
pub fn json_to_cbor(json: Json) -> Result<Value, JsonError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Text(s),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .map(json_to_cbor)
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => {
            if map.len() == 1 {
                if let Some(encoded) = map.get(BYTES_KEY) {
                    let Json::String(text) = encoded else {
                        return Err(JsonError(format!(
                            "\"{BYTES_KEY}\" must hold a base64 string"
                        )));
                    };
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|err| {
                            JsonError(format!("\"{BYTES_KEY}\" is not valid base64: {err}"))
                        })?;
                    return Ok(Value::Bytes(bytes));
                }
            }
            if map.len() == 2 && map.contains_key(TAG_KEY) && map.contains_key(TAG_VALUE_KEY) {
                let mut map = map;
                let tag = map
                    .remove(TAG_KEY)
                    .and_then(|t| t.as_u64())
                    .ok_or_else(|| {
                        JsonError(format!("\"{TAG_KEY}\" must be a non-negative integer"))
                    })?;
                let inner = map.remove(TAG_VALUE_KEY).unwrap_or(Json::Null);
                return Ok(Value::Tag(tag, Box::new(json_to_cbor(inner)?)));
            }
            Value::Map(
                map.into_iter()
                    .map(|(k, v)| Ok((Value::Text(k), json_to_cbor(v)?)))
                    .collect::<Result<_, JsonError>>()?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_round_trip_through_base64() {
        let value = Value::Map(vec![(
            Value::Text("rgba".into()),
            Value::Bytes(vec![0, 1, 254, 255]),
        )]);
        let json = cbor_to_json(&value);
        assert_eq!(json, json!({"rgba": {"$bytes": "AAH+/w=="}}));
        assert_eq!(json_to_cbor(json), Ok(value));
    }

    #[test]
    fn tags_integers_and_floats_round_trip() {
        let value = Value::Array(vec![
            Value::Tag(1, Box::new(Value::Integer(1_700_000_000.into()))),
            Value::Integer(u64::MAX.into()),
            Value::Integer((-5).into()),
            Value::Float(0.25),
            Value::Null,
        ]);
        assert_eq!(json_to_cbor(cbor_to_json(&value)), Ok(value));
    }

    #[test]
    fn bad_base64_is_an_error() {
        let err = json_to_cbor(json!({"$bytes": "%%%"})).expect_err("not base64");
        assert!(err.0.contains("base64"), "{err}");
    }
}

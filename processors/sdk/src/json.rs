//! The JSON form of CBOR values, for people at a shell.
//!
//! JSON has no byte strings, so a CBOR byte string is written as `{"$bytes": "<base64>"}`
//! (standard alphabet, with padding), and a tagged item as `{"$tag": N, "$value": ...}`.
//! Everything else maps directly. Map keys that are not text become their JSON text
//! (`1` becomes `"1"`), and floats that JSON cannot hold (NaN, infinities) become `null`;
//! those two are the only lossy cases.
//!
//! Numbers come back as they went in: a double survives JSON -> CBOR -> JSON to the bit
//! (serde_json's `float_roundtrip` parser; without it, one double in nine came back one unit
//! in the last place off), and JSON text with an integer outside the 64-bit range, which a
//! JSON parser would quietly read as a float, is refused by [`check_integers`].

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

/// The smallest integer a JSON input may hold: CBOR integers from JSON are 64-bit.
const SMALLEST: i64 = i64::MIN;
/// The largest.
const LARGEST: u64 = u64::MAX;

/// Refuses JSON `text` (already parsed as valid JSON) that holds an integer outside
/// `i64::MIN..=u64::MAX`: a JSON parser reads such a literal as the nearest float, so
/// `18446744073709551616` would reach a processor as `1.8446744073709552e19` without a word.
/// The error names the integer and what to write instead. A number with a fraction or an
/// exponent is a float, as written, and is not checked.
///
/// ```
/// use offload_sdk::json::check_integers;
/// assert!(check_integers(br#"{"n": 18446744073709551615, "s": "99999999999999999999"}"#).is_ok());
/// let err = check_integers(br#"[1, -9223372036854775809]"#).unwrap_err();
/// assert!(err.0.contains("-9223372036854775809"), "{err}");
/// ```
pub fn check_integers(text: &[u8]) -> Result<(), JsonError> {
    let mut at = 0;
    while at < text.len() {
        match text[at] {
            b'"' => {
                // Skip the string, escapes included.
                at += 1;
                while at < text.len() && text[at] != b'"' {
                    at += if text[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < text.len()
                    && matches!(text[at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    at += 1;
                }
                let number = &text[start..at];
                if number.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                    continue;
                }
                let number = std::str::from_utf8(number).unwrap_or_default();
                if number.parse::<i64>().is_err() && number.parse::<u64>().is_err() {
                    return Err(JsonError(format!(
                        "the integer {number} is outside the 64-bit range ({SMALLEST} to \
                         {LARGEST}) that inputs can hold: write it as a string, or with a \
                         decimal point if a float will do"
                    )));
                }
            }
            _ => at += 1,
        }
    }
    Ok(())
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

    /// Any double survives JSON text -> CBOR -> JSON text to the bit: random bit patterns (a
    /// fixed seed, so a failure repeats) and the awkward ones. `0.41817215137075947` came back
    /// as `0.4181721513707594` before serde_json's `float_roundtrip` was on.
    #[test]
    fn any_double_survives_json_to_cbor_and_back() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let special = [
            0.418_172_151_370_759_47,
            0.1,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e23,
            9_007_199_254_740_993.0,
        ];
        let mut doubles: Vec<f64> = special.to_vec();
        doubles.extend((0..200_000).map(|_| f64::from_bits(next())));
        // Uniform in [0, 1) too, the doubles programs mostly write.
        doubles.extend((0..50_000).map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64));
        let mut checked = 0;
        for x in doubles {
            if !x.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&cbor_to_json(&Value::Float(x))).expect("to text");
            let json: Json = serde_json::from_str(&text).expect("parses");
            let back = match json_to_cbor(json).expect("to CBOR") {
                Value::Float(y) => y,
                // A double with no fraction may be written without one and read as an
                // integer: the same number.
                Value::Integer(i) => i128::from(i) as f64,
                other => panic!("{x:e} came back as {other:?}"),
            };
            let again = serde_json::to_string(&cbor_to_json(&Value::Float(back))).expect("text");
            assert!(
                back == x && (back.to_bits() == x.to_bits() || x == 0.0),
                "{x:e} ({text}) came back as {back:e} ({again})"
            );
            checked += 1;
        }
        assert!(checked > 240_000, "{checked}");
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_not_made_floats() {
        for ok in [
            "0",
            "-0",
            "[18446744073709551615, -9223372036854775808]",
            r#"{"big": "18446744073709551616", "k\"1e999": 1}"#,
            "[1.8446744073709552e19, 1e300, 123456789012345678901234.5]",
        ] {
            serde_json::from_str::<Json>(ok).expect(ok);
            assert_eq!(check_integers(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (bad, number) in [
            ("18446744073709551616", "18446744073709551616"),
            (
                r#"{"a": [1, -9223372036854775809]}"#,
                "-9223372036854775809",
            ),
            (
                r#"{"s": "\\", "n": 123456789012345678901234567890}"#,
                "123456789012345678901234567890",
            ),
        ] {
            serde_json::from_str::<Json>(bad).expect(bad);
            let err = check_integers(bad.as_bytes()).expect_err(bad);
            assert!(
                err.0
                    .starts_with(&format!("the integer {number} is outside the 64-bit range")),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_base64_is_an_error() {
        let err = json_to_cbor(json!({"$bytes": "%%%"})).expect_err("not base64");
        assert!(err.0.contains("base64"), "{err}");
    }
}

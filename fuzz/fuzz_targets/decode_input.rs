//! The SDK's input decoding, both ways a processor reads input: CBOR through `decode_one`, and
//! `--json` through serde_json and the JSON form of CBOR. The decoded values also go back
//! through `cbor_to_json`, as `offload decode` does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_sdk::decode::{decode_one, DecodeLimits};
use offload_sdk::json::{cbor_to_json, json_to_cbor};
use offload_sdk::number::Real;
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Input {
    #[serde(default)]
    values: Vec<Real>,
    #[serde(default, with = "serde_bytes")]
    data: Vec<u8>,
    #[serde(default)]
    name: String,
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 128,
    };
    if let Ok(value) = decode_one::<ciborium::Value>(data, limits) {
        let _ = cbor_to_json(&value);
    }
    let _ = decode_one::<Input>(data, limits);
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(value) = json_to_cbor(json) {
            let _ = value.deserialized::<Input>();
            let _ = cbor_to_json(&value);
        }
    }
});

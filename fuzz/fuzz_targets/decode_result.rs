//! The host's result decoding: whatever a processor writes to stdout goes through
//! `decode_one` into an untyped value, into a typed result, as an error report, and the
//! progress pipe's CBOR sequence goes through item by item. None may panic or allocate
//! without bound (dev/fuzz sets libFuzzer's malloc limit).

#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_sdk::decode::{decode_one, DecodeLimits};
use offload_sdk::{ErrorReport, ProgressItem};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Tile {
    width: u32,
    height: u32,
    #[serde(with = "serde_bytes")]
    rgba: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 128,
    };
    let _ = decode_one::<ciborium::Value>(data, limits);
    let _ = decode_one::<Tile>(data, limits);
    let _ = decode_one::<ErrorReport>(data, limits);
    let mut rest = data;
    while !rest.is_empty() {
        match ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(&mut rest, 16) {
            Ok(value) => {
                let _ = value.deserialized::<ProgressItem>();
            }
            Err(_) => break,
        }
    }
});

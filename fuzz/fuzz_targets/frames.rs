//! Persistent mode's frame streams: whatever a worker writes to stdout (and a host to a
//! worker's stdin) is split into frames by `SequenceBuffer` as it arrives, in chunks of any
//! size, and each frame is parsed with `Frame::parse`. None may panic or allocate without bound;
//! splitting in chunks must find the same items as splitting all at once; and an item the
//! scanner calls complete is one that ciborium, when it can read it at all, reads to the same
//! length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_sdk::decode::DecodeLimits;
use offload_sdk::frame::Frame;
use offload_sdk::sequence::{item_len, SequenceBuffer};

/// Splits `data` into items, feeding it `chunk` bytes at a time; stops at the first error.
fn split(data: &[u8], chunk: usize, limits: DecodeLimits) -> (Vec<Vec<u8>>, bool) {
    let mut buffer = SequenceBuffer::new(limits);
    let mut items = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buffer.extend(piece);
        loop {
            match buffer.next_item() {
                Ok(Some(item)) => items.push(item.to_vec()),
                Ok(None) => break,
                Err(_) => return (items, true),
            }
        }
    }
    (items, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 64,
    };
    let (whole, whole_failed) = split(data, data.len().max(1), limits);
    let (pieces, pieces_failed) = split(data, usize::from(chunk % 17) + 1, limits);
    assert_eq!(whole, pieces, "the same items whatever the chunks");
    assert_eq!(whole_failed, pieces_failed);
    for item in &whole {
        let _ = Frame::parse(item).map(|frame| {
            let _ = frame.id();
            let _ = frame.field::<ciborium::Value>("result", limits);
        });
        let mut rest = &item[..];
        if ciborium::de::from_reader::<ciborium::Value, _>(&mut rest).is_ok() {
            assert!(rest.is_empty(), "ciborium read the item to another length");
        }
    }
    if let Ok(Some(len)) = item_len(data, limits) {
        assert_eq!(whole.first().map(Vec::len), Some(len));
    }
});

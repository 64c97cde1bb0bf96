//! `offload encode` and `offload decode`: JSON to CBOR and back, for shell pipelines.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use offload::inputs::encode_json;
use offload::sdk::decode::{decode_one, DecodeLimits};
use offload::sdk::json::cbor_to_json;

pub fn encode() -> anyhow::Result<ExitCode> {
    let mut text = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut text)
        .context("cannot read stdin")?;
    let json = offload::inputs::parse_json(&text).context("stdin is not one JSON input")?;
    write_stdout(&encode_json(json)?)
}

pub fn decode(seq: bool, pretty: bool) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("cannot read stdin")?;
    let limits = DecodeLimits::default();
    let values: Vec<ciborium::Value> = if seq {
        let mut rest = &bytes[..];
        let mut values = Vec::new();
        while !rest.is_empty() {
            let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, limits.max_depth)
                .map_err(|err| {
                    anyhow::anyhow!("item {} of the CBOR sequence: {err:?}", values.len())
                })?;
            values.push(value);
        }
        values
    } else {
        vec![decode_one(&bytes, limits).context("stdin")?]
    };
    let mut out = Vec::new();
    for value in &values {
        let json = cbor_to_json(value);
        if pretty {
            serde_json::to_writer_pretty(&mut out, &json)?;
        } else {
            serde_json::to_writer(&mut out, &json)?;
        }
        out.push(b'\n');
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write stdout")?;
    Ok(ExitCode::SUCCESS)
}

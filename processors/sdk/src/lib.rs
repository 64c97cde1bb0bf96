//! The offload processor SDK: the protocol's types, bounded CBOR decoding, the JSON form of
//! CBOR, and a small runtime that turns a typed Rust function into a processor executable.
//!
//! A processor is a standalone program that reads one CBOR item (its input) from stdin and
//! writes one CBOR item (its result) to stdout; PROTOCOL.md at the repository root is the
//! language-neutral contract. With this crate and serde:
//!
//! ```toml
//! [dependencies]
//! offload-sdk = { path = "../offload/processors/sdk" }   # a checkout of offload's repository
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! a processor's `main` is a few lines:
//!
//! ```no_run
//! use offload_sdk::{Context, Error, Processor};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Input { text: String }
//! #[derive(Serialize)]
//! struct Output { words: usize }
//!
//! fn count(input: Input, ctx: &mut Context) -> Result<Output, Error> {
//!     ctx.progress(1.0);
//!     Ok(Output { words: input.text.split_whitespace().count() })
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Processor::new("wordcount", "Counts the words of a text")
//!         .example(&Input { text: "one two three".into() })
//!         .example_output(&Output { words: 3 })
//!         .run(count)
//! }
//! ```
//!
//! The offload host uses the same [`protocol`] and [`decode`] modules, so both sides agree.

pub mod context;
pub mod decode;
pub mod error;
pub mod frame;
pub mod json;
pub mod number;
pub mod params;
mod persistent;
pub mod processor;
pub mod protocol;
pub mod sequence;

pub use context::Context;
pub use error::{Error, ErrorKind};
pub use params::{Files, Parameter, ParameterKind};
pub use processor::Processor;
pub use protocol::{Description, ErrorReport, ProgressItem, PROTOCOL_VERSION};
/// Re-exported so processors can mark binary fields as CBOR byte strings without another dependency.
pub use serde_bytes;

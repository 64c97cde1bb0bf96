//! The wire contract between a host and a processor (see PROTOCOL.md), as Rust types.
//!
//! The host (the `offload` engine) and every Rust processor use these same definitions, so the
//! two sides cannot drift apart.

use serde::{Deserialize, Serialize};

/// Version of the processor protocol described in PROTOCOL.md. Version 2 adds persistent mode
/// (one process serves many jobs) to version 1, which it keeps unchanged.
pub const PROTOCOL_VERSION: u32 = 2;

/// Environment variable that names the file descriptor a processor may write progress items to.
pub const PROGRESS_FD_ENV: &str = "OFFLOAD_PROGRESS_FD";

/// Flag that makes a processor print its [`Description`] as JSON and exit.
pub const DESCRIBE_FLAG: &str = "--describe";

/// Prefix of a processor's executable name: processor `blur` is installed as `offload-blur`.
pub const EXECUTABLE_PREFIX: &str = "offload-";

/// One item of the CBOR sequence a processor writes to its progress file descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressItem {
    /// How much of the job is done, from 0.0 to 1.0 (an integer 0 or 1 is accepted too).
    #[serde(deserialize_with = "crate::number::real")]
    pub fraction: f64,
    /// An optional short text for people ("row 40 of 256").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The structured error a processor may write to stdout before exiting non-zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// A one-line message a person can act on.
    pub error: String,
    /// A machine-readable category, such as `invalid_input` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// What `PROCESSOR --describe` prints, as one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The processor's short name (`blur` for `offload-blur`).
    pub name: String,
    /// One line saying what it does.
    pub summary: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// An input it accepts, in the JSON form of CBOR (byte strings as `{"$bytes": "<base64>"}`).
    pub example_input: serde_json::Value,
    /// What a result looks like: a result for `example_input`, in the same JSON form, so that
    /// an author learns the result's shape without running the processor (values that vary,
    /// such as process ids or times, may differ from a real run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_output: Option<serde_json::Value>,
    /// The processor's own version, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How a file becomes its input and its result a file, when it works on files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<crate::params::Files>,
    /// Its parameters: fields of the input a form can set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<crate::params::Parameter>,
    /// Whether it serves many jobs in one process when started with `--persistent`
    /// (PROTOCOL.md, section 18). Absent: it does not.
    #[serde(default)]
    pub persistent: bool,
}

impl Description {
    /// Whether a host may start this processor in persistent mode: it says so, and speaks a
    /// protocol version that has it.
    pub fn supports_persistent(&self) -> bool {
        self.persistent && self.protocol >= crate::frame::PERSISTENT_PROTOCOL
    }
}

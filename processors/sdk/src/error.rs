//! The error a processor function returns, and the exit codes the SDK maps errors to.

use std::fmt;

/// Exit code when the processor's function returned an [`Error`] (processing failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for a bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the input could not be read or decoded (sysexits' `EX_DATAERR`).
pub const EXIT_BAD_INPUT: u8 = 65;
/// Exit code when the processor panicked (sysexits' `EX_SOFTWARE`).
pub const EXIT_PANIC: u8 = 70;
/// Exit code when the processor stopped because it was asked to (128 + SIGTERM).
pub const EXIT_CANCELLED: u8 = 143;

/// What kind of failure an [`Error`] is; written as the `kind` of the error report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input decoded but makes no sense (a zero width, a negative radius).
    InvalidInput,
    /// The work itself failed.
    Failed,
    /// The host asked the processor to stop (SIGTERM) and it did.
    Cancelled,
}

impl ErrorKind {
    /// The report's `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The exit code the SDK uses for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::InvalidInput => EXIT_BAD_INPUT,
            Self::Failed => EXIT_FAILED,
            Self::Cancelled => EXIT_CANCELLED,
        }
    }
}

/// A processor's failure: a kind and a one-line message for people.
///
/// ```
/// use offload_sdk::Error;
/// let err = Error::invalid_input("radius must be at least 1");
/// assert_eq!(err.to_string(), "invalid input: radius must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The work failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }

    /// The input is well-formed but unusable.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    /// The processor stopped because the host asked it to.
    pub fn cancelled() -> Self {
        Self {
            kind: ErrorKind::Cancelled,
            message: "cancelled".to_owned(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::InvalidInput => write!(f, "invalid input: {}", self.message),
            ErrorKind::Failed | ErrorKind::Cancelled => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

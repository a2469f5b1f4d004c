//! Why a report could not be read: shared by the input checks and the
//! parsers, so neither depends on the other for it.

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {message}")]
pub struct ParseError {
    pub format: &'static str,
    pub message: String,
}

pub(super) fn err(format: &'static str, message: impl Into<String>) -> ParseError {
    ParseError {
        format,
        message: message.into(),
    }
}

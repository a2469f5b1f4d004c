//! The one error type of the server's operations; the API maps each kind
//! to one HTTP status.

use gantry_store::StoreError;

/// Why a request was refused. The API maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's roles do not allow it, or a rule forbids this caller.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
    /// No leader can act on it now (this controller's leadership ended
    /// under it, or none is elected yet): nothing was applied; try again.
    #[error("{0}")]
    NotLeader(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EnvironmentBusy { .. } => ControlError::Conflict(e.to_string()),
            StoreError::Fenced(_) => ControlError::NotLeader(e.to_string()),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

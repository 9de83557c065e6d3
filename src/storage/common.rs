//! Checks and error shapes every backend shares, so that all of them refuse the same things
//! with the same words.

use super::StorageError;
use crate::trial::TrialState;

/// Stored data that cannot be decoded.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) fn corrupt(location: &str, message: String) -> StorageError {
    StorageError::Corrupt {
        location: location.into(),
        message,
    }
}

/// A request the storage refuses.
pub(super) fn invalid(location: &str, message: String) -> StorageError {
    StorageError::Invalid {
        location: location.into(),
        message,
    }
}

/// Refuses a NaN or infinity (`what` names the value).
pub(super) fn check_finite(location: &str, what: &str, x: f64) -> Result<(), StorageError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(invalid(
            location,
            format!("{what} is {x}; only finite values can be stored"),
        ))
    }
}

/// A count or number as the signed integer databases store.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) fn to_i64(location: &str, what: &str, x: u64) -> Result<i64, StorageError> {
    i64::try_from(x).map_err(|_| invalid(location, format!("{what} {x} is too large")))
}

/// Attributes stored as JSON text.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) fn parse_attrs(
    location: &str,
    what: &str,
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StorageError> {
    serde_json::from_str(text).map_err(|e| corrupt(location, format!("attributes of {what}: {e}")))
}

/// Refuses an operator's verdict on a trial that is not finished, or one other than FAIL or
/// PRUNED.
pub(super) fn check_verdict(
    location: &str,
    number: u64,
    study: &str,
    was: TrialState,
    state: TrialState,
) -> Result<(), StorageError> {
    if !was.is_finished() {
        return Err(invalid(
            location,
            format!("trial {number} of study {study:?} is {was}: a verdict is for a finished trial (skip a running one instead)"),
        ));
    }
    if !matches!(state, TrialState::Fail | TrialState::Pruned) {
        return Err(invalid(
            location,
            format!("a verdict makes a trial FAIL or PRUNED, not {state}"),
        ));
    }
    Ok(())
}

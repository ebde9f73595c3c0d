//! The `reason` field of admin requests, checked once for every service: it goes to the
//! audit log, which operators read, so it is refused (not truncated or cleaned) when it
//! is too long or holds a control or bidi character.

use tessera_common::limits::{MAX_REASON_BYTES, check_text};
use tonic::Status;

/// Checks an optional reason (empty allowed).
pub fn optional_reason(reason: &str) -> Result<(), Status> {
    check_text("reason", reason, MAX_REASON_BYTES)
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Checks a reason that must be given; returns it.
pub fn required_reason(reason: &str) -> Result<String, Status> {
    if reason.trim().is_empty() {
        return Err(Status::invalid_argument(
            "reason: required (it goes to the audit log)",
        ));
    }
    optional_reason(reason)?;
    Ok(reason.to_owned())
}

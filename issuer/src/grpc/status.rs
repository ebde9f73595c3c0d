//! The one table from domain errors to gRPC status codes. Internal detail is logged here
//! and never sent to the caller.

use tonic::Status;
use tracing::error;

use crate::emergency::EmergencyError;
use crate::keys::manager::KeyError;
use crate::keys::rotation::PlanError;
use crate::sessions::SessionError;
use crate::store::StoreError;
use crate::tokens::IssueError;

/// Maps a storage error.
pub fn from_store(error: StoreError) -> Status {
    match error {
        StoreError::Conflict => Status::aborted("conflicting concurrent change; retry"),
        StoreError::AlreadyExists => Status::already_exists("already exists"),
        StoreError::ConstraintViolated(detail) => {
            error!(%detail, "store constraint violated");
            Status::failed_precondition("the change does not fit the stored state")
        }
        StoreError::NotFound => Status::not_found("not found"),
        StoreError::Unavailable(detail) => {
            error!(%detail, "store unavailable");
            Status::unavailable("storage unavailable")
        }
        StoreError::Corrupt(detail) => {
            error!(%detail, "corrupt record");
            Status::internal("internal error")
        }
    }
}

/// Maps a key-lifecycle error.
pub fn from_key(error: KeyError) -> Status {
    match error {
        KeyError::Store(error) => from_store(error),
        KeyError::Plan(PlanError::UnknownKey(kid)) | KeyError::UnknownKey(kid) => {
            Status::not_found(format!("kid: no key `{kid}`"))
        }
        KeyError::Plan(PlanError::AlreadyRevoked(kid)) => {
            Status::failed_precondition(format!("kid: key `{kid}` is already revoked"))
        }
        KeyError::Policy(error) => Status::failed_precondition(error.to_string()),
        KeyError::NoSigner(key_set) => {
            Status::unavailable(format!("key set `{key_set}` has no active signing key"))
        }
        KeyError::Busy(key_set) => Status::aborted(format!(
            "key set `{key_set}` is changing concurrently; retry"
        )),
        KeyError::Kek(error) => {
            error!(%error, "key unwrap failed");
            Status::internal("internal error")
        }
        KeyError::Material(error) => {
            error!(%error, "key material error");
            Status::internal("internal error")
        }
    }
}

/// Maps a session error. Refresh-token refusals are `Unauthenticated` (the grant is
/// not valid), distinct from the caller's own credential by their message.
pub fn from_session(error: SessionError) -> Status {
    match error {
        SessionError::Rejected(rejection) => {
            Status::unauthenticated(format!("refresh_token: {rejection}"))
        }
        SessionError::ReuseDetected => Status::permission_denied(error.to_string()),
        SessionError::Store(error) => from_store(error),
        SessionError::Key(error) => from_key(error),
        SessionError::Issue(error) => from_issue(error),
        SessionError::Keyring(error) => {
            error!(%error, "refresh token pepper unavailable");
            Status::unavailable("credential keyring unavailable")
        }
        SessionError::Corrupt(detail) => {
            error!(%detail, "corrupt session");
            Status::internal("internal error")
        }
    }
}

/// Maps an emergency-revocation error.
pub fn from_emergency(error: EmergencyError) -> Status {
    match error {
        EmergencyError::Store(error) => from_store(error),
        EmergencyError::Key(error) => from_key(error),
        EmergencyError::Busy => Status::aborted("key sets are changing concurrently; retry"),
    }
}

/// Maps an issuance error.
pub fn from_issue(error: IssueError) -> Status {
    match error {
        IssueError::TtlOutOfBounds { .. } => Status::invalid_argument(error.to_string()),
        IssueError::UnknownAudience(_) => Status::invalid_argument(format!("audience: {error}")),
        IssueError::Sign(error) => {
            error!(%error, "signing failed");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::ids::KeyId;
    use tessera_common::keys::{KeySetName, PolicyError};
    use tonic::Code;

    use super::*;

    /// Store detail that must reach the logs only, never the caller.
    const HIDDEN: &str = "FOREIGN KEY constraint failed on refresh_tokens";

    #[test]
    fn every_error_maps_to_a_deliberate_code() {
        let kid = || KeyId::new("k").unwrap();
        let cases: Vec<(Status, Code)> = vec![
            (from_store(StoreError::Conflict), Code::Aborted),
            (from_store(StoreError::AlreadyExists), Code::AlreadyExists),
            (
                from_store(StoreError::ConstraintViolated(HIDDEN.into())),
                Code::FailedPrecondition,
            ),
            (from_store(StoreError::NotFound), Code::NotFound),
            (
                from_store(StoreError::Unavailable(HIDDEN.into())),
                Code::Unavailable,
            ),
            (from_store(StoreError::Corrupt("x".into())), Code::Internal),
            (from_key(KeyError::UnknownKey(kid())), Code::NotFound),
            (
                from_key(KeyError::Plan(PlanError::UnknownKey(kid()))),
                Code::NotFound,
            ),
            (
                from_key(KeyError::Plan(PlanError::AlreadyRevoked(kid()))),
                Code::FailedPrecondition,
            ),
            (
                from_key(KeyError::Policy(PolicyError::ZeroInterval {
                    key_set: KeySetName::Access,
                })),
                Code::FailedPrecondition,
            ),
            (
                from_key(KeyError::NoSigner(KeySetName::Access)),
                Code::Unavailable,
            ),
            (from_key(KeyError::Busy(KeySetName::Access)), Code::Aborted),
            (
                from_key(KeyError::Kek(crate::kek::KekError::Unwrap)),
                Code::Internal,
            ),
            (
                from_issue(IssueError::TtlOutOfBounds {
                    min: 1,
                    max: 2,
                    got: 3,
                }),
                Code::InvalidArgument,
            ),
            (
                from_issue(IssueError::UnknownAudience("a".into())),
                Code::InvalidArgument,
            ),
            (
                from_session(SessionError::Keyring(crate::keyring::KeyringError::Sealed)),
                Code::Unavailable,
            ),
        ];
        for (status, code) in cases {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(!status.message().contains("corrupt"), "{status:?}");
            assert!(!status.message().contains(HIDDEN), "{status:?}");
        }
    }
}

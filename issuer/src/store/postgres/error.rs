//! Translation of tokio-postgres and pool errors into [`StoreError`], where the
//! PostgreSQL detail (the SQLSTATE) lives.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// A failure inside a PostgreSQL call: a raw database or pool error (translated once, by
/// [`PgFailure::into_store`]) or an already-translated store error.
pub(super) enum PgFailure {
    Db(tokio_postgres::Error),
    Pool(PoolError),
    Store(StoreError),
}

impl std::fmt::Debug for PgFailure {
    // Not derived: a server error's derived `Debug` includes its DETAIL, which can quote
    // a failing row (secret hashes, wrapped keys).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgFailure::Db(error) => write!(f, "Db({:?})", describe(error)),
            PgFailure::Pool(PoolError::Backend(error)) => {
                write!(f, "Pool(Backend({:?}))", describe(error))
            }
            PgFailure::Pool(error) => write!(f, "Pool({:?})", error.to_string()),
            PgFailure::Store(error) => write!(f, "Store({error:?})"),
        }
    }
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        PgFailure::Db(error)
    }
}

impl From<PoolError> for PgFailure {
    fn from(error: PoolError) -> Self {
        PgFailure::Pool(error)
    }
}

impl From<StoreError> for PgFailure {
    fn from(error: StoreError) -> Self {
        PgFailure::Store(error)
    }
}

impl PgFailure {
    /// Returns true for a serialization failure (40001) or a deadlock (40P01): the
    /// transaction was rolled back and running it again may succeed.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            PgFailure::Db(error) => error.code().is_some_and(is_transient),
            _ => false,
        }
    }

    /// Returns the store error: see [`translate`].
    pub(super) fn into_store(self) -> StoreError {
        match self {
            PgFailure::Store(error) => error,
            PgFailure::Db(error) => translate(&error),
            PgFailure::Pool(PoolError::Backend(error)) => translate(&error),
            PgFailure::Pool(error) => {
                // Pool errors other than `Backend` (timeouts, a closed pool) carry no
                // server text.
                tracing::warn!(error = %error, "postgres pool failed");
                StoreError::Unavailable(error.to_string())
            }
        }
    }
}

fn is_transient(code: &SqlState) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// 23505 (unique violation) becomes [`StoreError::AlreadyExists`]; any other integrity
/// violation (class 23: foreign key, check, not null, exclusion) and P0001 (raised by a
/// trigger — ours guard the append-only audit log) [`StoreError::ConstraintViolated`];
/// 40001/40P01, once retries are spent, [`StoreError::Conflict`]; everything else
/// [`StoreError::Unavailable`].
fn translate(error: &tokio_postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        return unavailable(error);
    };
    if *code == SqlState::UNIQUE_VIOLATION {
        StoreError::AlreadyExists
    } else if is_transient(code) {
        StoreError::Conflict
    } else if is_constraint(code) {
        let description = describe(error);
        tracing::warn!(error = %description, "postgres constraint violated");
        StoreError::ConstraintViolated(description)
    } else {
        unavailable(error)
    }
}

fn unavailable(error: &tokio_postgres::Error) -> StoreError {
    let description = describe(error);
    tracing::warn!(error = %description, "postgres operation failed");
    StoreError::Unavailable(description)
}

/// Class 23 (integrity constraint violation) and P0001 (`RAISE EXCEPTION`).
fn is_constraint(code: &SqlState) -> bool {
    code.code().starts_with("23") || *code == SqlState::RAISE_EXCEPTION
}

/// Returns a one-line description of `error` and its causes, for logs and for
/// [`StoreError::Unavailable`].
///
/// A server error contributes only its SQLSTATE and message, never its DETAIL: a
/// constraint violation's DETAIL quotes the failing row, which may hold a secret hash or
/// a wrapped key.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db_error) = error.as_db_error() {
        return format!(
            "db error {}: {}",
            db_error.code().code(),
            db_error.message()
        );
    }
    let mut description = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        description.push_str(": ");
        description.push_str(&cause.to_string());
        source = cause.source();
    }
    description
}

/// Returns a [`StoreError::Corrupt`] failure carrying `error`.
pub(super) fn corrupt(error: impl std::fmt::Display) -> PgFailure {
    PgFailure::Store(StoreError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_and_trigger_codes_are_constraints_and_nothing_else_is() {
        for code in [
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
            SqlState::EXCLUSION_VIOLATION,
            SqlState::RAISE_EXCEPTION,
        ] {
            assert!(is_constraint(&code), "{}", code.code());
        }
        for code in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::CONNECTION_FAILURE,
            SqlState::UNDEFINED_TABLE,
        ] {
            assert!(!is_constraint(&code), "{}", code.code());
        }
    }
}

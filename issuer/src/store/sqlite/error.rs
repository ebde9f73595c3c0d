//! Translation of rusqlite errors into [`StoreError`], where the SQLite detail lives.

use rusqlite::ffi;

use crate::store::StoreError;

/// A failure inside a SQLite call: either a raw rusqlite error (translated once, by
/// [`SqliteFailure::into_store`]) or an already-translated store error.
#[derive(Debug)]
pub(super) enum SqliteFailure {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for SqliteFailure {
    fn from(error: rusqlite::Error) -> Self {
        SqliteFailure::Sql(error)
    }
}

impl From<StoreError> for SqliteFailure {
    fn from(error: StoreError) -> Self {
        SqliteFailure::Store(error)
    }
}

impl SqliteFailure {
    /// Returns the store error: see [`translate`].
    pub(super) fn into_store(self) -> StoreError {
        match self {
            SqliteFailure::Store(error) => error,
            SqliteFailure::Sql(error) => translate(error),
        }
    }
}

/// Unique and primary-key violations become [`StoreError::AlreadyExists`]; every other
/// constraint (foreign key, check, not null, a trigger's `RAISE(ABORT)` — ours guard the
/// append-only audit log) [`StoreError::ConstraintViolated`]; everything else
/// [`StoreError::Unavailable`]. SQLite has no serialization failures: one writer at a
/// time, so a busy database is `Unavailable` after the busy timeout.
fn translate(error: rusqlite::Error) -> StoreError {
    // SQLite messages name tables and constraints, never bound values, so they are safe
    // to log and to carry.
    if let rusqlite::Error::SqliteFailure(failure, _) = &error
        && failure.code == ffi::ErrorCode::ConstraintViolation
    {
        return match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::AlreadyExists
            }
            _ => {
                tracing::warn!(error = %error, "sqlite constraint violated");
                StoreError::ConstraintViolated(error.to_string())
            }
        };
    }
    tracing::warn!(error = %error, "sqlite operation failed");
    StoreError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_error_of(connection: &rusqlite::Connection, sql: &str) -> StoreError {
        let error = connection.execute(sql, []).unwrap_err();
        SqliteFailure::from(error).into_store()
    }

    #[test]
    fn each_kind_of_failure_becomes_its_own_store_error() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .execute_batch(
                "PRAGMA foreign_keys = ON; \
                 CREATE TABLE parent (id TEXT PRIMARY KEY); \
                 CREATE TABLE t (id TEXT PRIMARY KEY, u TEXT UNIQUE, \
                     n TEXT NOT NULL, c TEXT CHECK (c IN ('ok')), \
                     p TEXT REFERENCES parent (id)); \
                 CREATE TRIGGER t_no_delete BEFORE DELETE ON t \
                     BEGIN SELECT RAISE(ABORT, 't is append-only'); END; \
                 INSERT INTO t VALUES ('a', 'x', 'n', 'ok', NULL);",
            )
            .unwrap();
        let cases = [
            (
                "INSERT INTO t VALUES ('a', 'y', 'n', 'ok', NULL)",
                "primary key",
            ),
            ("INSERT INTO t VALUES ('b', 'x', 'n', 'ok', NULL)", "unique"),
        ];
        for (sql, what) in cases {
            let error = store_error_of(&connection, sql);
            assert!(
                matches!(error, StoreError::AlreadyExists),
                "{what}: {error:?}"
            );
        }
        let cases = [
            (
                "INSERT INTO t VALUES ('c', 'z', 'n', 'ok', 'nobody')",
                "foreign key",
            ),
            ("INSERT INTO t VALUES ('d', 'w', 'n', 'bad', NULL)", "check"),
            (
                "INSERT INTO t VALUES ('e', 'v', NULL, 'ok', NULL)",
                "not null",
            ),
            ("DELETE FROM t", "trigger"),
        ];
        for (sql, what) in cases {
            let error = store_error_of(&connection, sql);
            assert!(
                matches!(error, StoreError::ConstraintViolated(_)),
                "{what}: {error:?}"
            );
        }
        let error = store_error_of(&connection, "INSERT INTO nowhere VALUES (1)");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }
}

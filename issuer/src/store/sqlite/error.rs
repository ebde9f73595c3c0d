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
    /// Returns the store error: unique and primary-key violations become
    /// [`StoreError::Conflict`], everything else [`StoreError::Unavailable`].
    pub(super) fn into_store(self) -> StoreError {
        match self {
            SqliteFailure::Store(error) => error,
            SqliteFailure::Sql(error) => translate(error),
        }
    }
}

fn translate(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error
        && matches!(
            failure.extended_code,
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        return StoreError::Conflict;
    }
    // SQLite messages name tables and constraints, never bound values, so they are safe
    // to log and to return.
    tracing::warn!(error = %error, "sqlite operation failed");
    StoreError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_violations_become_conflicts() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, u TEXT UNIQUE); INSERT INTO t VALUES ('a', 'x');")
            .unwrap();
        let primary_key = connection
            .execute("INSERT INTO t VALUES ('a', 'y')", [])
            .unwrap_err();
        assert!(matches!(
            SqliteFailure::from(primary_key).into_store(),
            StoreError::Conflict
        ));
        let unique = connection
            .execute("INSERT INTO t VALUES ('b', 'x')", [])
            .unwrap_err();
        assert!(matches!(
            SqliteFailure::from(unique).into_store(),
            StoreError::Conflict
        ));
        let syntax = connection
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        assert!(matches!(
            SqliteFailure::from(syntax).into_store(),
            StoreError::Unavailable(_)
        ));
    }
}

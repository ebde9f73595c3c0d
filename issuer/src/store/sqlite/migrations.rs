//! The SQLite schema, embedded in the binary, and the migrator that brings a database
//! up to date (tracked in `PRAGMA user_version`).

use rusqlite::{Connection, TransactionBehavior};

use super::error::SqliteFailure;
use crate::store::StoreError;

/// Every migration, oldest first; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    V1_INITIAL,
    V2_SESSIONS,
    V3_KEYRING,
    V4_API_KEYS,
    V5_RATE_LIMITS,
    V6_OPAQUE_TOKENS,
    include_str!("migrations/v7_one_time_tokens.sql"),
    include_str!("migrations/v8_challenges.sql"),
    include_str!("migrations/v9_secrets.sql"),
];

/// Timestamps are unix milliseconds; JSON values are stored as text.
const V1_INITIAL: &str = r#"
CREATE TABLE key_sets (
    name       TEXT PRIMARY KEY NOT NULL,
    generation INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    key_set         TEXT NOT NULL REFERENCES key_sets (name),
    algorithm       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    activates_at    INTEGER NOT NULL,
    deactivates_at  INTEGER,
    verify_until    INTEGER,
    revoked_at      INTEGER,
    public_jwk      TEXT NOT NULL,
    wrapped_private BLOB
);
CREATE INDEX signing_keys_by_set ON signing_keys (key_set, created_at);

CREATE TABLE events (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    payload  TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    reason     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE api_clients (
    client_id      TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    tenants        TEXT NOT NULL,
    secret_hash    BLOB NOT NULL,
    pepper_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);
"#;

/// Sessions, their rotating refresh tokens, and revocation entries (DESIGN §4, §5).
const V2_SESSIONS: &str = r#"
CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    family_id       TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    claims_template TEXT NOT NULL
);
CREATE INDEX sessions_by_subject ON sessions (tenant_id, subject);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id);

CREATE TABLE refresh_tokens (
    token_id       TEXT PRIMARY KEY NOT NULL,
    family_id      TEXT NOT NULL,
    session_id     TEXT NOT NULL REFERENCES sessions (session_id),
    tenant_id      TEXT NOT NULL,
    parent_id      TEXT,
    secret_hash    BLOB NOT NULL,
    pepper_version INTEGER NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'revoked')),
    state_at       INTEGER,
    successor_id   TEXT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    tenant_id  TEXT,
    revoked_at INTEGER NOT NULL,
    drop_after INTEGER NOT NULL
);
CREATE INDEX revocations_by_drop_after ON revocations (drop_after);
"#;

/// Versioned root secrets and caller-credential prefixes (issue 9). Every key wrapped so
/// far was sealed by the one KEK there was, version 1; every client so far was issued a
/// `tbk_` credential, which keeps working for it. New rows state both explicitly.
const V3_KEYRING: &str = r#"
ALTER TABLE signing_keys ADD COLUMN kek_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE api_clients ADD COLUMN credential_prefix TEXT NOT NULL DEFAULT 'tbk_';
"#;

/// API keys (`tbk_`, issue 10): one row per key, the secret only as an HMAC under its
/// pepper version; `expiring_at` marks the warning window once; usage is written in
/// batches.
const V4_API_KEYS: &str = r#"
CREATE TABLE api_keys (
    key_id         TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    permissions    TEXT NOT NULL,
    role           TEXT NOT NULL,
    secret_hash    BLOB NOT NULL,
    pepper_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'revoked', 'expired')),
    state_at       INTEGER,
    predecessor_id TEXT,
    successor_id   TEXT,
    grace_until    INTEGER,
    expiring_at    INTEGER,
    last_used_at   INTEGER,
    usage_count    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
CREATE INDEX api_keys_by_expiry ON api_keys (state, expires_at);
"#;

/// Per-key rate limits (issue 10): the limits as columns of the key (existing keys get
/// the seed's defaults), and one row per key counting the admissions charged in its
/// current minute, hour and day window (fixed UTC windows, by their start) and what its
/// latest lease granted (returned by the statement that charged it).
const V5_RATE_LIMITS: &str = r#"
ALTER TABLE api_keys ADD COLUMN rate_per_minute INTEGER NOT NULL DEFAULT 100;
ALTER TABLE api_keys ADD COLUMN rate_per_hour INTEGER NOT NULL DEFAULT 1000;
ALTER TABLE api_keys ADD COLUMN rate_per_day INTEGER NOT NULL DEFAULT 10000;
CREATE TABLE api_key_rate_windows (
    key_id       TEXT PRIMARY KEY NOT NULL,
    minute_start INTEGER NOT NULL,
    minute_used  INTEGER NOT NULL,
    hour_start   INTEGER NOT NULL,
    hour_used    INTEGER NOT NULL,
    day_start    INTEGER NOT NULL,
    day_used     INTEGER NOT NULL,
    granted      INTEGER NOT NULL
);
"#;

/// Service identities and short-lived opaque tokens (`tbs_` service and `tbw_` webhook
/// tokens, issue 10): one table holds both kinds, each secret only as an HMAC under its
/// pepper version. `replaces` names the token a confirmed service token revokes.
const V6_OPAQUE_TOKENS: &str = r#"
CREATE TABLE service_identities (
    tenant_id         TEXT NOT NULL,
    name              TEXT NOT NULL,
    permissions       TEXT NOT NULL,
    role              TEXT NOT NULL,
    token_ttl_seconds INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    disabled_at       INTEGER,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE opaque_tokens (
    token_id       TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('service', 'webhook')),
    tenant_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    permissions    TEXT NOT NULL,
    role           TEXT NOT NULL,
    secret_hash    BLOB NOT NULL,
    pepper_version INTEGER NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'expired')),
    state_at       INTEGER,
    replaces       TEXT,
    holder         TEXT NOT NULL
);
CREATE INDEX opaque_tokens_by_subject ON opaque_tokens (tenant_id, kind, subject);
CREATE INDEX opaque_tokens_by_expiry ON opaque_tokens (expires_at);
"#;

/// Applies every migration newer than the database's `user_version`, all in one
/// `BEGIN IMMEDIATE` transaction, so two processes opening one file cannot both migrate.
pub(super) fn apply(connection: &mut Connection) -> Result<(), StoreError> {
    apply_inner(connection).map_err(SqliteFailure::into_store)
}

fn apply_inner(connection: &mut Connection) -> Result<(), SqliteFailure> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("negative sqlite schema version {version}")))?;
    if applied > known {
        return Err(StoreError::Unavailable(format!(
            "sqlite schema version {applied} is newer than this build knows ({known})"
        ))
        .into());
    }
    for (version, sql) in (1_i64..).zip(MIGRATIONS.iter()).skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tracing::info!(version, "applied sqlite migration");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written before migration 3 keep working: their key was sealed by the one KEK
    /// there was (version 1) and their client was issued a `tbk_` credential.
    #[test]
    fn migration_3_marks_existing_rows_as_kek_1_and_tbk() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(V1_INITIAL).unwrap();
        connection.execute_batch(V2_SESSIONS).unwrap();
        connection.pragma_update(None, "user_version", 2).unwrap();
        connection
            .execute_batch(
                "INSERT INTO key_sets (name, generation) VALUES ('access', 1);
                 INSERT INTO signing_keys (kid, key_set, algorithm, created_at, activates_at,
                     public_jwk, wrapped_private)
                     VALUES ('k1', 'access', 'ES256', 0, 0, '{}', x'01');
                 INSERT INTO api_clients (client_id, name, scopes, tenants, secret_hash,
                     pepper_version, created_at)
                     VALUES ('c1', 'old', '[]', '[]', x'02', 1, 0);",
            )
            .unwrap();
        apply(&mut connection).unwrap();
        let kek_version: i64 = connection
            .query_row("SELECT kek_version FROM signing_keys", [], |row| row.get(0))
            .unwrap();
        let prefix: String = connection
            .query_row("SELECT credential_prefix FROM api_clients", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!((kek_version, prefix.as_str()), (1, "tbk_"));
    }
}

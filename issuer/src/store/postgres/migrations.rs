//! The PostgreSQL schema, embedded in the binary, and the migrator that brings a
//! database up to date. Safe when several replicas start at once: the whole migration
//! runs in one transaction under an advisory lock.

use deadpool_postgres::Pool;

use super::error::PgFailure;
use crate::store::StoreError;

/// The advisory lock held while migrating (`"tessmigr"` as a big-endian integer).
const MIGRATION_LOCK: i64 = 0x7465_7373_6d69_6772;

/// Every migration, oldest first, with its version.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1_INITIAL),
    (2, V2_SESSIONS),
    (3, V3_KEYRING),
    (4, V4_API_KEYS),
    (5, V5_RATE_LIMITS),
    (6, V6_OPAQUE_TOKENS),
    (7, include_str!("migrations/v7_one_time_tokens.sql")),
    (8, include_str!("migrations/v8_challenges.sql")),
    (9, include_str!("migrations/v9_secrets.sql")),
];

/// Timestamps are unix milliseconds; JSON values are stored as text.
const V1_INITIAL: &str = r#"
CREATE TABLE key_sets (
    name       TEXT PRIMARY KEY,
    generation BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    key_set         TEXT NOT NULL REFERENCES key_sets (name),
    algorithm       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    activates_at    BIGINT NOT NULL,
    deactivates_at  BIGINT,
    verify_until    BIGINT,
    revoked_at      BIGINT,
    public_jwk      TEXT NOT NULL,
    wrapped_private BYTEA
);
CREATE INDEX signing_keys_by_set ON signing_keys (key_set, created_at);

CREATE TABLE events (
    revision BIGSERIAL PRIMARY KEY,
    at       BIGINT NOT NULL,
    payload  TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    reason     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE api_clients (
    client_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    tenants        TEXT NOT NULL,
    secret_hash    BYTEA NOT NULL,
    pepper_version INTEGER NOT NULL,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
"#;

/// Sessions, their rotating refresh tokens, and revocation entries (DESIGN §4, §5).
const V2_SESSIONS: &str = r#"
CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    family_id       TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    claims_template TEXT NOT NULL
);
CREATE INDEX sessions_by_subject ON sessions (tenant_id, subject);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id);

CREATE TABLE refresh_tokens (
    token_id       TEXT PRIMARY KEY,
    family_id      TEXT NOT NULL,
    session_id     TEXT NOT NULL REFERENCES sessions (session_id),
    tenant_id      TEXT NOT NULL,
    parent_id      TEXT,
    secret_hash    BYTEA NOT NULL,
    pepper_version INTEGER NOT NULL,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'revoked')),
    state_at       BIGINT,
    successor_id   TEXT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE revocations (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    tenant_id  TEXT,
    revoked_at BIGINT NOT NULL,
    drop_after BIGINT NOT NULL
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
    key_id         TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    permissions    TEXT NOT NULL,
    role           TEXT NOT NULL,
    secret_hash    BYTEA NOT NULL,
    pepper_version INTEGER NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'revoked', 'expired')),
    state_at       BIGINT,
    predecessor_id TEXT,
    successor_id   TEXT,
    grace_until    BIGINT,
    expiring_at    BIGINT,
    last_used_at   BIGINT,
    usage_count    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
CREATE INDEX api_keys_by_expiry ON api_keys (state, expires_at);
"#;

/// Per-key rate limits (issue 10): the limits as columns of the key (existing keys get
/// the seed's defaults), and one row per key counting the admissions charged in its
/// current minute, hour and day window (fixed UTC windows, by their start) and what its
/// latest lease granted (returned by the statement that charged it).
const V5_RATE_LIMITS: &str = r#"
ALTER TABLE api_keys ADD COLUMN rate_per_minute BIGINT NOT NULL DEFAULT 100;
ALTER TABLE api_keys ADD COLUMN rate_per_hour BIGINT NOT NULL DEFAULT 1000;
ALTER TABLE api_keys ADD COLUMN rate_per_day BIGINT NOT NULL DEFAULT 10000;
CREATE TABLE api_key_rate_windows (
    key_id       TEXT PRIMARY KEY,
    minute_start BIGINT NOT NULL,
    minute_used  BIGINT NOT NULL,
    hour_start   BIGINT NOT NULL,
    hour_used    BIGINT NOT NULL,
    day_start    BIGINT NOT NULL,
    day_used     BIGINT NOT NULL,
    granted      BIGINT NOT NULL
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
    created_at        BIGINT NOT NULL,
    disabled_at       BIGINT,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE opaque_tokens (
    token_id       TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('service', 'webhook')),
    tenant_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    permissions    TEXT NOT NULL,
    role           TEXT NOT NULL,
    secret_hash    BYTEA NOT NULL,
    pepper_version INTEGER NOT NULL,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'expired')),
    state_at       BIGINT,
    replaces       TEXT,
    holder         TEXT NOT NULL
);
CREATE INDEX opaque_tokens_by_subject ON opaque_tokens (tenant_id, kind, subject);
CREATE INDEX opaque_tokens_by_expiry ON opaque_tokens (expires_at);
"#;

/// Applies every migration not yet recorded in `schema_migrations`, in one transaction
/// holding [`MIGRATION_LOCK`]: a replica starting at the same time waits, then finds
/// nothing left to do.
pub(super) async fn apply(pool: &Pool) -> Result<(), StoreError> {
    apply_inner(pool).await.map_err(PgFailure::into_store)
}

async fn apply_inner(pool: &Pool) -> Result<(), PgFailure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    BIGINT PRIMARY KEY, \
             applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let newest_known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if let Some(newest_applied) = applied.last()
        && *newest_applied > newest_known
    {
        return Err(StoreError::Unavailable(format!(
            "postgres schema version {newest_applied} is newer than this build knows ({newest_known})"
        ))
        .into());
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) \
             VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
            &[version],
        )
        .await?;
        tracing::info!(version, "applied postgres migration");
    }
    tx.commit().await?;
    Ok(())
}

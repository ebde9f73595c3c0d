-- Migration one_time_tokens (postgres): single-use action links, password-reset and
-- email-verification tokens and confirmation tokens (issue 11). Only the jti and what
-- consumption checks are kept; the token itself never is. Timestamps are unix ms.
CREATE TABLE one_time_tokens (
    jti                 TEXT PRIMARY KEY,
    kind                TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    action              TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    issued_at           BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    used_at             BIGINT,
    invalidated_at      BIGINT,
    invalidation_reason TEXT,
    parent_jti          TEXT
);
-- Superseding a user's older reset tokens looks up the user's rows. A plain index on
-- user_id alone, which consumption never names, so a consumption (`jti = … AND tenant_id
-- = … AND kind = … AND used_at IS NULL …`) can only go through the primary key. A partial
-- index `(tenant_id, user_id, kind) WHERE used_at IS NULL AND invalidated_at IS NULL`
-- matched that statement too; before the table's first ANALYZE the planner priced both
-- alike, picked it, and scanned every live row of the tenant per consumption (measured:
-- 6–11 ms at 30,000 rows, 356 consumptions/s instead of thousands).
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id);
-- The pruning job deletes by expiry.
CREATE INDEX one_time_tokens_expires ON one_time_tokens (expires_at);

CREATE TABLE password_changes (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE action_link_settings (
    tenant_id  TEXT PRIMARY KEY,
    base_url   TEXT NOT NULL,
    lifetimes  TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

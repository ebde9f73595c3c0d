-- Migration 8 (issue 11): OTP and magic-link challenges, the runtime state of delivery
-- providers, and the fixed-window counters of one-time rate limits. Timestamps are unix
-- milliseconds. A code is never stored: `code_hash` is HMAC-SHA256 under the credential
-- pepper of `pepper_version`, bound to the challenge id.
CREATE TABLE challenges (
    challenge_id   TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    method         TEXT NOT NULL CHECK (method IN ('otp_email', 'otp_sms', 'magic_link')),
    code_hash      BLOB NOT NULL,
    pepper_version INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL CHECK (max_attempts > 0),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    verified_at    INTEGER,
    invalidated_at INTEGER
);
CREATE INDEX challenges_by_expiry ON challenges (expires_at);
CREATE INDEX challenges_by_tenant ON challenges (tenant_id);

CREATE TABLE delivery_providers (
    name       TEXT PRIMARY KEY NOT NULL,
    enabled    INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);

CREATE TABLE one_time_rate_windows (
    bucket       TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         INTEGER NOT NULL
);
CREATE INDEX one_time_rate_windows_by_end ON one_time_rate_windows (window_end);

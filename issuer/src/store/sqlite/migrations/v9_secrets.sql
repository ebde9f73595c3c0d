-- Migration 9 (sqlite): the secrets inventory (issue 12, DESIGN §8). See the PostgreSQL
-- migration of the same number for what each column means.
CREATE TABLE secrets (
    name            TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('random', 'postgres', 'redis', 'external')),
    tier            INTEGER NOT NULL CHECK (tier BETWEEN 1 AND 3),
    cadence_days    INTEGER NOT NULL CHECK (cadence_days > 0),
    owner           TEXT NOT NULL,
    description     TEXT NOT NULL,
    tags            TEXT NOT NULL,
    rotator         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_rotated_at INTEGER,
    warned_at       INTEGER,
    generation      INTEGER NOT NULL,
    rotation        TEXT
);

CREATE TABLE secret_versions (
    name          TEXT NOT NULL REFERENCES secrets (name),
    version       INTEGER NOT NULL,
    stage         TEXT NOT NULL CHECK (stage IN ('current', 'pending', 'previous', 'retired')),
    kek_version   INTEGER NOT NULL,
    wrapped_key   BLOB NOT NULL,
    sealed_value  BLOB NOT NULL,
    label         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    retired_at    INTEGER,
    PRIMARY KEY (name, version)
);

CREATE TABLE secret_history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL REFERENCES secrets (name),
    at         INTEGER NOT NULL,
    step       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX secret_history_by_name ON secret_history (name, seq);

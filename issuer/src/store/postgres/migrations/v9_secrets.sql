-- Migration 9 (postgres): the secrets inventory (issue 12, DESIGN §8).
-- `secrets` holds one row per named secret; `generation` is bumped by every write, and
-- every write is conditional on the generation the writer read, so of two replicas
-- running the same rotation step exactly one commits. `rotation` is the unfinished
-- rotation (JSON: step, version, emergency, actor, request id), NULL when none.
-- Values live only in `secret_versions.sealed_value`, sealed under a per-version data key
-- which is itself wrapped under the KEK (`wrapped_key`, `kek_version`).
CREATE TABLE secrets (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('random', 'postgres', 'redis', 'external')),
    tier            INTEGER NOT NULL CHECK (tier BETWEEN 1 AND 3),
    cadence_days    INTEGER NOT NULL CHECK (cadence_days > 0),
    owner           TEXT NOT NULL,
    description     TEXT NOT NULL,
    tags            TEXT NOT NULL,
    rotator         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_rotated_at BIGINT,
    warned_at       BIGINT,
    generation      BIGINT NOT NULL,
    rotation        TEXT
);

CREATE TABLE secret_versions (
    name          TEXT NOT NULL REFERENCES secrets (name),
    version       BIGINT NOT NULL,
    stage         TEXT NOT NULL CHECK (stage IN ('current', 'pending', 'previous', 'retired')),
    kek_version   INTEGER NOT NULL,
    wrapped_key   BYTEA NOT NULL,
    sealed_value  BYTEA NOT NULL,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    PRIMARY KEY (name, version)
);

CREATE TABLE secret_history (
    seq        BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL REFERENCES secrets (name),
    at         BIGINT NOT NULL,
    step       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    outcome    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX secret_history_by_name ON secret_history (name, seq);

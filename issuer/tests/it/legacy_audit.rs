//! Audit rows as the issuer wrote them before audit actions were typed (actions, actors
//! and outcomes spelled as string literals at each call site). Their hashes were computed
//! by that code (and independently from the `tessera-audit-v1` definition), not by the
//! code under test, so a chain starting with them proves old rows still verify.

/// One row of `audit_log` as an earlier version stored it.
pub struct LegacyRow {
    pub seq: u64,
    pub at: i64,
    pub actor: &'static str,
    pub action: &'static str,
    pub target: &'static str,
    pub request_id: &'static str,
    pub reason: &'static str,
    pub outcome: &'static str,
    /// Hex.
    pub prev_hash: &'static str,
    /// Hex.
    pub hash: &'static str,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_1: &str = "546cf5aa644a188534523c86cf06f0f1ba7b2a2c50ee87b7501b4c6454fa6e06";
const HASH_2: &str = "d7c28c9e97fddd3564827a68b5eeb2571a3e490cb4669c0d451d2d11e4996803";
const HASH_3: &str = "47c1960cc6a65dd0b1b9d7f35c09ce00cd1fc6f6b0fbe675d0ff06c71c91c197";
const HASH_4: &str = "672b16e3a8fee14459bafc8f8a55a15738d112fa8500da93c7e7e1f64970e9b4";

/// The first four rows of a log written before actions were typed: one per kind of actor
/// and outcome.
pub const LEGACY_AUDIT_ROWS: [LegacyRow; 4] = [
    LegacyRow {
        seq: 1,
        at: 1_700_000_000_000,
        actor: "system",
        action: "client.create",
        target: "",
        request_id: "r-1",
        reason: "bootstrap admin credential",
        outcome: "ok",
        prev_hash: GENESIS,
        hash: HASH_1,
    },
    LegacyRow {
        seq: 2,
        at: 1_700_000_000_001,
        actor: "anonymous",
        action: "auth.denied",
        target: "AdminService/ListClients",
        request_id: "r-2",
        reason: "3 refused calls from 127.0.0.1",
        outcome: "denied",
        prev_hash: HASH_1,
        hash: HASH_2,
    },
    LegacyRow {
        seq: 3,
        at: 1_700_000_000_002,
        actor: "system",
        action: "key.rotate.scheduled",
        target: "keys",
        request_id: "r-3",
        reason: "scheduled rotation",
        outcome: "failed",
        prev_hash: HASH_2,
        hash: HASH_3,
    },
    LegacyRow {
        seq: 4,
        at: 1_700_000_000_003,
        actor: "k7Qv2mXpL9aB3cD4",
        action: "revoke.session",
        target: "s-1",
        request_id: "r-4",
        reason: "logout",
        outcome: "ok",
        prev_hash: HASH_3,
        hash: HASH_4,
    },
];

/// How a database spells a byte string literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Returns the dialect of a store backend name (`sqlite`, `postgres`).
    pub fn of_backend(backend: &str) -> Dialect {
        match backend {
            "postgres" => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    fn bytes(self, hex: &str) -> String {
        match self {
            Dialect::Sqlite => format!("X'{hex}'"),
            Dialect::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }
}

impl LegacyRow {
    /// Returns the statement that stores this row as the earlier version did.
    pub fn insert_sql(&self, dialect: Dialect) -> String {
        format!(
            "INSERT INTO audit_log (seq, at, actor, action, target, request_id, reason, outcome, \
             prev_hash, hash) VALUES ({}, {}, '{}', '{}', '{}', '{}', '{}', '{}', {}, {})",
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.target,
            self.request_id,
            self.reason,
            self.outcome,
            dialect.bytes(self.prev_hash),
            dialect.bytes(self.hash),
        )
    }
}

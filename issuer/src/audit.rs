//! The audit log's vocabulary and its hash chain.
//!
//! Callers build a typed [`AuditEntry`] — an [`AuditAction`] from the one table of
//! actions, an [`AuditOutcome`], and an [`Actor`] (who, for which request, why) shared by
//! the session, key, client and emergency paths. What is stored, and hashed, is its text
//! ([`StoredAuditEntry`]): each event's hash covers the previous event's hash and every
//! field of the event, so a deleted, reordered or edited row breaks the chain.
//!
//! Both backends chain through here ([`AuditRecord::following`]), and verification
//! ([`ChainVerifier`]) recomputes the same hash over the text as read back, so a row
//! verifies whichever version wrote it, including rows written before actions were typed
//! and actions a newer replica knows and this one does not.

mod action;

use aws_lc_rs::digest;
use tessera_common::UnixMillis;
use tessera_common::ids::ClientId;

pub use self::action::{AuditAction, AuditOutcome};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Who acts: an authenticated API client, the issuer itself, or an unauthenticated peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    Client(ClientId),
    /// The issuer's own work: bootstrap, the scheduler.
    System,
    /// Callers without a valid credential (their refusals are summarised per burst).
    Anonymous,
}

impl Principal {
    /// Returns the text stored in the audit log's `actor` column: the client id, `system`
    /// or `anonymous`.
    pub fn as_str(&self) -> &str {
        match self {
            Principal::Client(client_id) => client_id.as_str(),
            Principal::System => "system",
            Principal::Anonymous => "anonymous",
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asks for a change, for which request, and why: what every audited path (sessions,
/// keys, clients, emergencies) carries from its caller into its audit entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub principal: Principal,
    pub request_id: String,
    pub reason: String,
}

impl Actor {
    /// An API client acting through one request.
    pub fn client(client_id: ClientId, request_id: String, reason: String) -> Actor {
        Actor {
            principal: Principal::Client(client_id),
            request_id,
            reason,
        }
    }

    /// The issuer acting on its own; `request_id` identifies the run (the caller draws it,
    /// as this module reads no clock and no randomness).
    pub fn system(request_id: String, reason: &str) -> Actor {
        Actor {
            principal: Principal::System,
            request_id,
            reason: reason.to_owned(),
        }
    }

    /// The same actor giving `reason` instead.
    pub fn with_reason(&self, reason: String) -> Actor {
        Actor {
            reason,
            ..self.clone()
        }
    }

    /// Returns the entry recording that this actor did `action` to `target` at `at`, with
    /// its reason, outcome [`AuditOutcome::Ok`].
    pub fn entry(
        &self,
        at: UnixMillis,
        action: AuditAction,
        target: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            at,
            actor: self.principal.clone(),
            action,
            target: target.into(),
            request_id: self.request_id.clone(),
            reason: self.reason.clone(),
            outcome: AuditOutcome::Ok,
        }
    }
}

/// One audit event before it is chained. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: UnixMillis,
    pub actor: Principal,
    pub action: AuditAction,
    pub target: String,
    pub request_id: String,
    pub reason: String,
    pub outcome: AuditOutcome,
}

impl AuditEntry {
    /// Returns the text this entry is stored and hashed as.
    pub fn stored(&self) -> StoredAuditEntry {
        StoredAuditEntry {
            at: self.at,
            actor: self.actor.as_str().to_owned(),
            action: self.action.as_str().to_owned(),
            target: self.target.clone(),
            request_id: self.request_id.clone(),
            reason: self.reason.clone(),
            outcome: self.outcome.as_str().to_owned(),
        }
    }
}

/// An audit event's fields as the audit log holds them, and as the chain hashes them.
///
/// Read back as text, not parsed into an [`AuditEntry`]: the chain must verify over the
/// bytes actually stored, whichever version wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditEntry {
    pub at: UnixMillis,
    /// A client id, `system` or `anonymous` ([`Principal::as_str`]).
    pub actor: String,
    /// An [`AuditAction`] name.
    pub action: String,
    pub target: String,
    pub request_id: String,
    pub reason: String,
    /// An [`AuditOutcome`] name.
    pub outcome: String,
}

impl StoredAuditEntry {
    /// Returns the action, if this version knows its name.
    pub fn action(&self) -> Option<AuditAction> {
        AuditAction::from_name(&self.action)
    }

    /// Returns the outcome, if this version knows its name.
    pub fn outcome(&self) -> Option<AuditOutcome> {
        AuditOutcome::from_name(&self.outcome)
    }
}

/// The newest link of the chain, as read (under the backend's write lock) before an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// An audit event as stored: its position and its link in the hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub entry: StoredAuditEntry,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// Returns `entry` chained after `head` (or as the first event when the log is
    /// empty): the record a backend inserts. Every append, on either backend, links here.
    pub fn following(head: Option<ChainHead>, entry: &AuditEntry) -> AuditRecord {
        let (seq, prev_hash) = match head {
            None => (1, GENESIS_HASH),
            Some(head) => (head.seq + 1, head.hash),
        };
        let entry = entry.stored();
        let hash = chain_hash(&prev_hash, seq, &entry);
        AuditRecord {
            seq,
            entry,
            prev_hash,
            hash,
        }
    }

    /// Returns this record as the head the next append follows.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// Returns the hash of the event at `seq` following `prev_hash`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, entry: &StoredAuditEntry) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"tessera-audit-v1");
    context.update(prev_hash);
    context.update(&seq.to_be_bytes());
    context.update(&entry.at.0.to_be_bytes());
    // Length-prefix every field so no two different events encode to the same bytes.
    for field in [
        &entry.actor,
        &entry.action,
        &entry.target,
        &entry.request_id,
        &entry.reason,
        &entry.outcome,
    ] {
        context.update(&(field.len() as u64).to_be_bytes());
        context.update(field.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Walks the chain from its first event, oldest first, one record at a time (so a caller
/// can page through a log of any length).
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    previous: [u8; 32],
    n_events: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            previous: GENESIS_HASH,
            n_events: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks that `record` links to the previous one and that its hash recomputes over
    /// its stored text; returns `false` (and stays put) when it does not.
    pub fn check(&mut self, record: &AuditRecord) -> bool {
        let intact = record.prev_hash == self.previous
            && record.hash == chain_hash(&self.previous, record.seq, &record.entry);
        if intact {
            self.previous = record.hash;
            self.n_events += 1;
        }
        intact
    }

    /// Returns how many records checked intact.
    pub fn n_events(&self) -> u64 {
        self.n_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str) -> AuditEntry {
        Actor::system("r".into(), reason).entry(UnixMillis(1), AuditAction::KeyRotate, "access")
    }

    #[test]
    fn hash_depends_on_every_input() {
        let base = chain_hash(&GENESIS_HASH, 1, &entry("a").stored());
        assert_ne!(base, chain_hash(&GENESIS_HASH, 2, &entry("a").stored()));
        assert_ne!(base, chain_hash(&[1; 32], 1, &entry("a").stored()));
        assert_ne!(base, chain_hash(&GENESIS_HASH, 1, &entry("b").stored()));
    }

    fn hex(bytes: &[u8; 32]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Typed entries hash to exactly the bytes the string-built entries of earlier
    /// versions did: these hashes were computed by the code before actions were typed
    /// (and independently from the algorithm), so rows written then still verify and a
    /// chain mixing old and new rows is one chain.
    #[test]
    fn typed_entries_hash_as_entries_written_before_actions_were_typed() {
        let client = ClientId::new("k7Qv2mXpL9aB3cD4").unwrap();
        let rows = [
            (
                Actor::system("r-1".into(), "bootstrap admin credential").entry(
                    UnixMillis(1_700_000_000_000),
                    AuditAction::ClientCreate,
                    "",
                ),
                "546cf5aa644a188534523c86cf06f0f1ba7b2a2c50ee87b7501b4c6454fa6e06",
            ),
            (
                AuditEntry {
                    at: UnixMillis(1_700_000_000_001),
                    actor: Principal::Anonymous,
                    action: AuditAction::AuthDenied,
                    target: "AdminService/ListClients".into(),
                    request_id: "r-2".into(),
                    reason: "3 refused calls from 127.0.0.1".into(),
                    outcome: AuditOutcome::Denied,
                },
                "d7c28c9e97fddd3564827a68b5eeb2571a3e490cb4669c0d451d2d11e4996803",
            ),
            (
                AuditEntry {
                    outcome: AuditOutcome::Failed,
                    ..Actor::system("r-3".into(), "scheduled rotation").entry(
                        UnixMillis(1_700_000_000_002),
                        AuditAction::KeyRotateScheduled,
                        "keys",
                    )
                },
                "47c1960cc6a65dd0b1b9d7f35c09ce00cd1fc6f6b0fbe675d0ff06c71c91c197",
            ),
            (
                Actor::client(client, "r-4".into(), "logout".into()).entry(
                    UnixMillis(1_700_000_000_003),
                    AuditAction::revocation(tessera_common::revocation::RevocationKind::Session),
                    "s-1",
                ),
                "672b16e3a8fee14459bafc8f8a55a15738d112fa8500da93c7e7e1f64970e9b4",
            ),
        ];
        let mut head = None;
        let mut verifier = ChainVerifier::default();
        for (entry, expected) in rows {
            let record = AuditRecord::following(head, &entry);
            assert_eq!(hex(&record.hash), expected, "seq {}", record.seq);
            assert!(verifier.check(&record));
            head = Some(record.head());
        }
        assert_eq!(verifier.n_events(), 4);
    }

    #[test]
    fn verifier_stops_at_an_edited_or_missing_record() {
        let first = AuditRecord::following(None, &entry("a"));
        let second = AuditRecord::following(Some(first.head()), &entry("b"));
        let third = AuditRecord::following(Some(second.head()), &entry("c"));

        let mut verifier = ChainVerifier::default();
        assert!(verifier.check(&first));
        assert!(!verifier.check(&third), "second is missing");
        let mut edited = second.clone();
        edited.entry.reason = "tampered".into();
        assert!(!verifier.check(&edited));
        assert!(verifier.check(&second));
        assert!(verifier.check(&third));
        assert_eq!(verifier.n_events(), 3);
    }

    #[test]
    fn stored_text_parses_back_to_the_typed_fields() {
        let stored = entry("a").stored();
        assert_eq!(stored.actor, "system");
        assert_eq!(stored.action(), Some(AuditAction::KeyRotate));
        assert_eq!(stored.outcome(), Some(AuditOutcome::Ok));
        let newer = StoredAuditEntry {
            action: "future.unknown_action".into(),
            ..stored
        };
        assert_eq!(newer.action(), None, "an action a newer version wrote");
    }
}

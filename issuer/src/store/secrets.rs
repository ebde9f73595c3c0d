//! The secrets inventory's storage contract (issue 12, DESIGN §8): one row per named
//! secret, its versions (values sealed under a per-version data key wrapped by the KEK;
//! the store never sees a value in the clear) and its rotation history.
//!
//! Every change is one [`SecretCommit`], applied in one transaction only if the secret's
//! generation is still the one its writer read (optimistic concurrency, as key sets do):
//! of two replicas running the same rotation step, or two scheduler passes finding the
//! same secret due, exactly one commits, and only that one writes its history rows, its
//! `SecretRotated` event and its audit entries (events before audit, the lock order of
//! every transaction taking both).

use std::collections::BTreeMap;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::bundle::BundleChange;

use super::{AuditEntry, StoreError, WrappedKey};

/// A version's stage (AWS Secrets Manager's vocabulary, plus `retired`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretStage {
    Current,
    /// Made by an unfinished rotation.
    Pending,
    /// The version `current` replaced; still valid until the next rotation.
    Previous,
    /// No longer valid.
    Retired,
}

impl SecretStage {
    /// Returns the stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SecretStage::Current => "current",
            SecretStage::Pending => "pending",
            SecretStage::Previous => "previous",
            SecretStage::Retired => "retired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<SecretStage> {
        [
            SecretStage::Current,
            SecretStage::Pending,
            SecretStage::Previous,
            SecretStage::Retired,
        ]
        .into_iter()
        .find(|stage| stage.as_str() == text)
    }
}

/// A secret's inventory row. `rotator` and `rotation` are the domain's JSON (connection
/// targets and step bookkeeping; never a value or a credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    /// `random`, `postgres`, `redis` or `external`.
    pub kind: String,
    pub tier: u8,
    pub cadence_days: u32,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub rotator: String,
    pub created_at: UnixMillis,
    pub last_rotated_at: Option<UnixMillis>,
    /// When the 80 % warning of the current version was recorded (once per version).
    pub warned_at: Option<UnixMillis>,
    /// Bumped by every commit; read back, never chosen by a writer.
    pub generation: i64,
    /// The unfinished rotation, if any.
    pub rotation: Option<String>,
}

/// One version of a secret. `Debug` leaves the sealed bytes out.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretVersionRecord {
    pub name: String,
    pub version: u64,
    pub stage: SecretStage,
    /// The version's data key, wrapped under the KEK.
    pub data_key: WrappedKey,
    /// `nonce ‖ ciphertext ‖ tag` of the value under the data key.
    pub sealed_value: Vec<u8>,
    /// A non-secret label the rotator keeps with the version (the PostgreSQL role it
    /// belongs to); empty for most rotators.
    pub label: String,
    pub created_at: UnixMillis,
    pub activated_at: Option<UnixMillis>,
    pub retired_at: Option<UnixMillis>,
}

impl std::fmt::Debug for SecretVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersionRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("stage", &self.stage)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// One step of a secret's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretHistoryRecord {
    pub name: String,
    pub at: UnixMillis,
    pub step: String,
    pub version: u64,
    /// `ok` or `failed`.
    pub outcome: String,
    pub actor: String,
    pub request_id: String,
    /// Why it failed (never a value).
    pub detail: String,
}

/// A secret with its versions, newest first.
#[derive(Clone, Debug)]
pub struct SecretState {
    pub record: SecretRecord,
    pub versions: Vec<SecretVersionRecord>,
}

/// One atomic change to a secret.
#[derive(Clone, Debug)]
pub struct SecretCommit {
    /// `None` inserts a new secret (`AlreadyExists` when the name is taken); `Some(g)`
    /// updates it only if its generation is still `g`.
    pub expected_generation: Option<i64>,
    /// The row to write (its `generation` is ignored: the store bumps it).
    pub record: SecretRecord,
    /// Versions to insert, or whose stage and timestamps to update (the sealed value of an
    /// existing version never changes).
    pub versions: Vec<SecretVersionRecord>,
    pub history: Vec<SecretHistoryRecord>,
    pub changes: Vec<BundleChange>,
    pub audit: Vec<AuditEntry>,
    pub at: UnixMillis,
}

/// The secrets inventory's storage.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Returns one secret and its versions (newest first).
    async fn secret(&self, name: &str) -> Result<Option<SecretState>, StoreError>;

    /// Returns every secret with its versions, by name.
    async fn list_secrets(&self) -> Result<Vec<SecretState>, StoreError>;

    /// Returns up to `limit` history rows of `name`, newest first.
    async fn secret_history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<SecretHistoryRecord>, StoreError>;

    /// Applies `commit` in one transaction. Returns `false`, writing nothing, when the
    /// secret's generation is no longer `expected_generation` (someone else committed
    /// first: re-read and decide again).
    async fn commit_secret(&self, commit: SecretCommit) -> Result<bool, StoreError>;
}

//! The secrets engine (issue 12, DESIGN §8): an inventory of the platform's other secrets
//! (database and Redis passwords, SMTP and storage keys, third-party API keys), each with
//! a rotator, a tier and a cadence, and versioned values in the stages `current |
//! pending | previous` (plus `retired`), rotated by the staged `create → set → test →
//! finish` of `engine.rs`.
//!
//! Values are sealed at rest (`seal.rs`: a data key per version, AES-256-GCM, name and
//! version as associated data, the data key wrapped under the KEK) and exist in the clear
//! only in memory, inside [`SecretValue`] (zeroed on drop, redacted in `Debug`). No value
//! is ever logged, audited, put in an error or in a stream event: the `SecretRotated`
//! event carries version numbers only.

mod engine;
pub mod rotators;
pub mod seal;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_common::{Clock, UnixMillis};
use zeroize::Zeroizing;

use self::rotators::{RotatorConfig, RotatorCredentials, RotatorError, rotator_for};
use crate::audit::{Actor, AuditAction, AuditEntry, AuditOutcome};
use crate::keyring::Keyring;
use crate::store::{
    SecretHistoryRecord, SecretRecord, SecretStage, SecretState, SecretStore, SecretVersionRecord,
    Store, StoreError,
};

pub use engine::RotateOutcome;

/// The largest value accepted (a PEM bundle fits; anything larger is not a secret).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest name.
pub const MAX_NAME_BYTES: usize = 128;
/// Most tags, and the longest tag key, tag value, owner and description.
const MAX_TAGS: usize = 32;
const MAX_TAG_BYTES: usize = 128;
const MAX_TEXT_BYTES: usize = 1024;
/// Longest cadence accepted (ten years).
const MAX_CADENCE_DAYS: u32 = 3650;

const DAY: Duration = Duration::from_secs(86_400);
/// How long the scheduler waits after a rolled-back rotation before it tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// A secret's value in the clear. Zeroed on drop; `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes, for the one place that must hand them on (ReadSecret, a rotator).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<redacted>, {} bytes)", self.0.len())
    }
}

/// Why a secrets operation failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such secret")]
    NotFound,
    #[error("a secret with that name exists")]
    AlreadyExists,
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another writer (replica, scheduler) changed the secret first.
    #[error("the secret changed concurrently; retry")]
    Conflict,
    /// A rotator step failed; the rotation was rolled back (pending discarded) when the
    /// step was `set` or `test`.
    #[error("rotation step `{step}` failed: {error}")]
    Rotator {
        step: &'static str,
        error: RotatorError,
    },
    #[error("sealing or opening a value failed (wrong KEK?)")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The seed's tiers: 1 (90 days), 2 (180 days), 3 (365 days).
pub fn tier_cadence_days(tier: u8) -> Option<u32> {
    match tier {
        1 => Some(90),
        2 => Some(180),
        3 => Some(365),
        _ => None,
    }
}

/// Checks a secret name: `[a-z0-9][a-z0-9._/-]{0,127}`, no empty, `.` or `..` segment, no
/// trailing slash (names become scope patterns and CLI arguments; no path tricks).
pub fn check_name(name: &str) -> Result<(), SecretError> {
    let bad = |why: &str| Err(SecretError::InvalidArgument(format!("name: {why}")));
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return bad("1 to 128 characters");
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return bad("must start with [a-z0-9]");
    }
    if !name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'/' | b'-')
    }) {
        return bad("only [a-z0-9._/-]");
    }
    if name
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return bad("no empty, `.` or `..` segment");
    }
    Ok(())
}

/// A request to add a secret.
#[derive(Debug)]
pub struct Registration {
    pub name: String,
    pub rotator: RotatorConfig,
    /// 0: tier 2.
    pub tier: u8,
    /// 0: the tier's cadence.
    pub cadence_days: u32,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// The first value of an `external` secret.
    pub initial_value: Option<SecretValue>,
}

/// A secret's metadata as callers see it (no value).
#[derive(Clone, Debug)]
pub struct SecretView {
    pub record: SecretRecord,
    /// Newest first.
    pub versions: Vec<SecretVersionRecord>,
    pub rotator: RotatorConfig,
    pub next_rotation_at: UnixMillis,
    /// Past 80 % of the cadence.
    pub warning: bool,
    /// Past the cadence.
    pub overdue: bool,
    /// The step an unfinished rotation reached.
    pub rotation_step: Option<String>,
}

/// A value as ReadSecret returns it.
#[derive(Debug)]
pub struct ReadVersion {
    pub version: u64,
    pub stage: SecretStage,
    pub value: SecretValue,
}

/// What ReadSecret returns.
#[derive(Debug)]
pub struct ReadOutcome {
    pub current: ReadVersion,
    pub previous: Option<ReadVersion>,
}

/// What one scheduler pass did to one secret.
#[derive(Debug)]
pub enum ScheduledAction {
    Rotated { name: String, version: u64 },
    Resumed { name: String, version: u64 },
    Warned { name: String },
    Overdue { name: String },
    Failed { name: String, error: String },
}

/// The secrets engine.
pub struct Secrets {
    store: Arc<dyn SecretStore>,
    audit: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    credentials: RotatorCredentials,
    fail_point: Option<String>,
}

impl Secrets {
    pub fn new(
        store: Arc<dyn SecretStore>,
        audit: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        credentials: RotatorCredentials,
    ) -> Secrets {
        Secrets {
            store,
            audit,
            keyring,
            clock,
            credentials,
            fail_point: crate::config::fail_point(),
        }
    }

    fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// The test hook of `TESSERA_FAIL_POINT` (see `config::fail_point`): aborts the
    /// process at `secret-rotation:<point>` to show a killed rotation resumes.
    fn fail_point(&self, point: &str) {
        if let Some(wanted) = &self.fail_point
            && wanted.strip_prefix("secret-rotation:") == Some(point)
        {
            tracing::error!(point, "fail point reached: aborting (test hook)");
            std::process::abort();
        }
    }

    async fn load(&self, name: &str) -> Result<SecretState, SecretError> {
        check_name(name)?;
        self.store.secret(name).await?.ok_or(SecretError::NotFound)
    }

    /// Adds a secret. Rotating kinds get their first value by a full rotation at once.
    pub async fn register(
        &self,
        registration: Registration,
        actor: &Actor,
    ) -> Result<SecretView, SecretError> {
        let Registration {
            name,
            rotator,
            tier,
            cadence_days,
            owner,
            description,
            tags,
            initial_value,
        } = registration;
        check_name(&name)?;
        rotator.validate().map_err(SecretError::InvalidArgument)?;
        let tier = if tier == 0 { 2 } else { tier };
        let tier_days = tier_cadence_days(tier)
            .ok_or_else(|| SecretError::InvalidArgument("tier: 1, 2 or 3".to_owned()))?;
        let cadence_days = if cadence_days == 0 {
            tier_days
        } else {
            cadence_days
        };
        if cadence_days > MAX_CADENCE_DAYS {
            return Err(SecretError::InvalidArgument(format!(
                "cadence_days: at most {MAX_CADENCE_DAYS}"
            )));
        }
        check_text("owner", &owner)?;
        check_text("description", &description)?;
        if tags.len() > MAX_TAGS
            || tags
                .iter()
                .any(|(key, value)| key.len() > MAX_TAG_BYTES || value.len() > MAX_TAG_BYTES)
        {
            return Err(SecretError::InvalidArgument(format!(
                "tags: at most {MAX_TAGS}, keys and values up to {MAX_TAG_BYTES} bytes"
            )));
        }
        let rotates = rotator_for(&rotator, &self.credentials).rotates();
        match (&initial_value, rotates) {
            (Some(value), false) => check_value(value)?,
            (None, false) => {
                return Err(SecretError::InvalidArgument(
                    "initial_value: an external secret needs its first value".to_owned(),
                ));
            }
            (Some(_), true) => {
                return Err(SecretError::InvalidArgument(
                    "initial_value: only for external secrets (the rotator makes values)"
                        .to_owned(),
                ));
            }
            (None, true) => {}
        }
        let now = self.now();
        let record = SecretRecord {
            name: name.clone(),
            kind: rotator.kind().to_owned(),
            tier,
            cadence_days,
            owner,
            description,
            tags,
            rotator: serde_json::to_string(&rotator)
                .map_err(|error| SecretError::InvalidArgument(error.to_string()))?,
            created_at: now,
            last_rotated_at: None,
            warned_at: None,
            generation: 0,
            rotation: None,
        };
        let mut commit = engine::Commit::new(&name, actor, now);
        commit.step("register", 0, AuditAction::SecretRegister);
        let mut record = record;
        if let Some(value) = initial_value {
            let version = self.version_record(&name, 1, &value, String::new(), now)?;
            commit.versions.push(SecretVersionRecord {
                stage: SecretStage::Current,
                activated_at: Some(now),
                ..version
            });
            record.last_rotated_at = Some(now);
            commit.step("put", 1, AuditAction::SecretPut);
            commit.rotated(1, None);
        }
        match self.store.commit_secret(commit.build(None, record)).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists) => return Err(SecretError::AlreadyExists),
            Err(error) => return Err(error.into()),
        }
        if rotates {
            self.rotate(&name, false, actor).await?;
        }
        self.export_metrics().await;
        self.get(&name).await
    }

    /// Returns every secret's metadata.
    pub async fn list(&self) -> Result<Vec<SecretView>, SecretError> {
        let now = self.now();
        self.store
            .list_secrets()
            .await?
            .into_iter()
            .map(|state| view(state, now))
            .collect()
    }

    /// Returns one secret's metadata.
    pub async fn get(&self, name: &str) -> Result<SecretView, SecretError> {
        view(self.load(name).await?, self.now())
    }

    /// Returns up to `limit` history rows, newest first.
    pub async fn history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<SecretHistoryRecord>, SecretError> {
        self.load(name).await?;
        Ok(self.store.secret_history(name, limit).await?)
    }

    /// Records an operator's new value (external and random secrets): it becomes
    /// `current`, the old current `previous`, the old previous `retired`.
    pub async fn put(
        &self,
        name: &str,
        value: SecretValue,
        actor: &Actor,
    ) -> Result<SecretView, SecretError> {
        check_value(&value)?;
        let state = self.load(name).await?;
        let config = rotator_config(&state.record)?;
        if !matches!(
            config,
            RotatorConfig::External(_) | RotatorConfig::Random(_)
        ) {
            return Err(SecretError::FailedPrecondition(
                "this secret's value lives in its target system: rotate it instead".to_owned(),
            ));
        }
        if state.record.rotation.is_some() {
            return Err(SecretError::FailedPrecondition(
                "a rotation is unfinished: rotate to finish it first".to_owned(),
            ));
        }
        let now = self.now();
        let version = next_version(&state);
        let mut commit = engine::Commit::new(name, actor, now);
        let new = self.version_record(name, version, &value, String::new(), now)?;
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Current,
            activated_at: Some(now),
            ..new
        });
        let previous = engine::promote(&state, &mut commit, false, now);
        commit.step("put", version, AuditAction::SecretPut);
        commit.rotated(version, previous);
        let mut record = state.record.clone();
        record.last_rotated_at = Some(now);
        record.warned_at = None;
        if !self
            .store
            .commit_secret(commit.build(Some(state.record.generation), record))
            .await?
        {
            return Err(SecretError::Conflict);
        }
        self.export_metrics().await;
        self.get(name).await
    }

    /// Makes `previous` current again (the rotator re-enables it first); the replaced
    /// current becomes `previous`.
    pub async fn rollback(&self, name: &str, actor: &Actor) -> Result<SecretView, SecretError> {
        let state = self.load(name).await?;
        if state.record.rotation.is_some() {
            return Err(SecretError::FailedPrecondition(
                "a rotation is unfinished: rotate to finish it first".to_owned(),
            ));
        }
        let current = stage_of(&state, SecretStage::Current);
        let Some(previous) = stage_of(&state, SecretStage::Previous) else {
            return Err(SecretError::FailedPrecondition(
                "no previous version to roll back to".to_owned(),
            ));
        };
        let config = rotator_config(&state.record)?;
        let rotator = rotator_for(&config, &self.credentials);
        let previous_value = self.open(previous)?;
        rotator
            .reinstate(rotators::VersionView {
                value: &previous_value,
                label: &previous.label,
            })
            .await
            .map_err(|error| SecretError::Rotator {
                step: "rollback",
                error,
            })?;
        let now = self.now();
        let mut commit = engine::Commit::new(name, actor, now);
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Current,
            activated_at: Some(now),
            retired_at: None,
            ..previous.clone()
        });
        if let Some(current) = current {
            commit.versions.push(SecretVersionRecord {
                stage: SecretStage::Previous,
                ..current.clone()
            });
        }
        commit.step("rollback", previous.version, AuditAction::SecretRollback);
        commit.rotated(previous.version, current.map(|current| current.version));
        if !self
            .store
            .commit_secret(commit.build(Some(state.record.generation), state.record.clone()))
            .await?
        {
            return Err(SecretError::Conflict);
        }
        self.export_metrics().await;
        self.get(name).await
    }

    /// Returns the current value (and the previous one while valid, when asked); every
    /// read is audited (name and versions, never the value).
    pub async fn read(
        &self,
        name: &str,
        include_previous: bool,
        actor: &Actor,
    ) -> Result<ReadOutcome, SecretError> {
        let state = self.load(name).await?;
        let current = stage_of(&state, SecretStage::Current).ok_or_else(|| {
            SecretError::FailedPrecondition("the secret has no current value yet".to_owned())
        })?;
        let previous = if include_previous {
            stage_of(&state, SecretStage::Previous)
        } else {
            None
        };
        let outcome = ReadOutcome {
            current: ReadVersion {
                version: current.version,
                stage: SecretStage::Current,
                value: self.open(current)?,
            },
            previous: previous
                .map(|previous| {
                    Ok::<_, SecretError>(ReadVersion {
                        version: previous.version,
                        stage: SecretStage::Previous,
                        value: self.open(previous)?,
                    })
                })
                .transpose()?,
        };
        let versions = match &outcome.previous {
            Some(previous) => format!("v{} v{}", outcome.current.version, previous.version),
            None => format!("v{}", outcome.current.version),
        };
        let entry = actor
            .with_reason(format!("{versions}; {}", actor.reason))
            .entry(self.now(), AuditAction::SecretRead, name);
        self.audit.append_audit(entry).await?;
        Ok(outcome)
    }

    /// Seals `value` as a version row (stage `pending`, to be overridden).
    fn version_record(
        &self,
        name: &str,
        version: u64,
        value: &SecretValue,
        label: String,
        now: UnixMillis,
    ) -> Result<SecretVersionRecord, SecretError> {
        let sealed = seal::seal(&self.keyring, name, version, value)?;
        Ok(SecretVersionRecord {
            name: name.to_owned(),
            version,
            stage: SecretStage::Pending,
            data_key: sealed.data_key,
            sealed_value: sealed.sealed_value,
            label,
            created_at: now,
            activated_at: None,
            retired_at: None,
        })
    }

    fn open(&self, version: &SecretVersionRecord) -> Result<SecretValue, SecretError> {
        seal::open(
            &self.keyring,
            &version.name,
            version.version,
            &version.data_key,
            &version.sealed_value,
        )
    }

    /// One scheduler pass: resumes unfinished rotations, rotates secrets at 90 % of their
    /// cadence, records the 80 % warning once per version, flags overdue ones, and
    /// exports the per-secret gauges. Exactly once across replicas: every step is a
    /// generation-checked commit, and a replica losing the `create` race skips the secret.
    pub async fn run_scheduled(&self) -> Vec<ScheduledAction> {
        let mut actions = Vec::new();
        let states = match self.store.list_secrets().await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "listing secrets for the scheduler failed");
                return actions;
            }
        };
        let now = self.now();
        for state in states {
            let name = state.record.name.clone();
            let Ok(view) = view(state.clone(), now) else {
                continue;
            };
            let rotates = rotator_for(&view.rotator, &self.credentials).rotates();
            let actor = Actor::system(uuid::Uuid::now_v7().to_string(), "scheduled");
            let due = rotates
                && now >= fraction_of_cadence(&state.record, 9, 10)
                && !self.failed_recently(&name, now).await;
            if state.record.rotation.is_some() || due {
                let resumed = state.record.rotation.is_some();
                match engine::rotate(self, &name, false, &actor, Some(state.record.generation))
                    .await
                {
                    Ok(outcome) if resumed => actions.push(ScheduledAction::Resumed {
                        name: name.clone(),
                        version: outcome.version,
                    }),
                    Ok(outcome) => actions.push(ScheduledAction::Rotated {
                        name: name.clone(),
                        version: outcome.version,
                    }),
                    Err(SecretError::Conflict) => {}
                    Err(error) => {
                        tracing::warn!(secret = %name, %error, "scheduled secret rotation failed");
                        metrics::counter!("tessera_secret_rotation_failures_total", "secret" => name.clone()).increment(1);
                        actions.push(ScheduledAction::Failed {
                            name: name.clone(),
                            error: error.to_string(),
                        });
                    }
                }
            } else if view.warning && state.record.warned_at.is_none() {
                let mut commit = engine::Commit::new(&name, &actor, now);
                let version = stage_of(&state, SecretStage::Current).map_or(0, |v| v.version);
                commit.step("warning", version, AuditAction::SecretWarning);
                let mut record = state.record.clone();
                record.warned_at = Some(now);
                if let Ok(true) = self
                    .store
                    .commit_secret(commit.build(Some(state.record.generation), record))
                    .await
                {
                    tracing::warn!(secret = %name, due = %view.next_rotation_at, "secret rotation due soon");
                    actions.push(ScheduledAction::Warned { name: name.clone() });
                }
            }
            if view.overdue {
                tracing::warn!(secret = %name, due = %view.next_rotation_at, "secret rotation overdue");
                actions.push(ScheduledAction::Overdue { name: name.clone() });
            }
        }
        self.export_metrics().await;
        actions
    }

    /// Rotates `name` now (or finishes its unfinished rotation).
    pub async fn rotate(
        &self,
        name: &str,
        emergency: bool,
        actor: &Actor,
    ) -> Result<RotateOutcome, SecretError> {
        let outcome = engine::rotate(self, name, emergency, actor, None).await?;
        self.export_metrics().await;
        Ok(outcome)
    }

    /// True when the newest history row of `name` is a rotation rolled back less than
    /// [`RETRY_AFTER_FAILURE`] ago: a scheduler pass does not start another rotation
    /// against a target that just refused one (each attempt leaves a retired version).
    async fn failed_recently(&self, name: &str, now: UnixMillis) -> bool {
        match self.store.secret_history(name, 1).await {
            Ok(history) => history.first().is_some_and(|entry| {
                entry.step == "discard" && now < entry.at.plus(RETRY_AFTER_FAILURE)
            }),
            Err(_) => true,
        }
    }

    /// Sets `tessera_secret_last_rotated_timestamp_seconds`,
    /// `tessera_secret_next_rotation_timestamp_seconds` and `tessera_secret_overdue`
    /// (after every write on this replica, and every scheduler pass on each).
    pub async fn export_metrics(&self) {
        let Ok(views) = self.list().await else {
            return;
        };
        for view in views {
            let name = view.record.name.clone();
            let last = view
                .record
                .last_rotated_at
                .unwrap_or(view.record.created_at);
            metrics::gauge!("tessera_secret_last_rotated_timestamp_seconds", "secret" => name.clone())
                .set(last.0 as f64 / 1000.0);
            metrics::gauge!("tessera_secret_next_rotation_timestamp_seconds", "secret" => name.clone())
                .set(view.next_rotation_at.0 as f64 / 1000.0);
            metrics::gauge!("tessera_secret_overdue", "secret" => name).set(if view.overdue {
                1.0
            } else {
                0.0
            });
        }
    }
}

fn check_text(field: &str, text: &str) -> Result<(), SecretError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(SecretError::InvalidArgument(format!(
            "{field}: longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_value(value: &SecretValue) -> Result<(), SecretError> {
    if value.expose().is_empty() || value.expose().len() > MAX_VALUE_BYTES {
        return Err(SecretError::InvalidArgument(format!(
            "value: 1 to {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn rotator_config(record: &SecretRecord) -> Result<RotatorConfig, SecretError> {
    serde_json::from_str(&record.rotator)
        .map_err(|error| SecretError::Store(StoreError::Corrupt(format!("rotator: {error}"))))
}

fn stage_of(state: &SecretState, stage: SecretStage) -> Option<&SecretVersionRecord> {
    state.versions.iter().find(|version| version.stage == stage)
}

fn next_version(state: &SecretState) -> u64 {
    state
        .versions
        .iter()
        .map(|version| version.version)
        .max()
        .unwrap_or(0)
        + 1
}

/// The instant `numerator/denominator` of the cadence after the last rotation (or the
/// registration).
fn fraction_of_cadence(record: &SecretRecord, numerator: u32, denominator: u32) -> UnixMillis {
    let base = record.last_rotated_at.unwrap_or(record.created_at);
    base.plus(DAY * record.cadence_days * numerator / denominator)
}

fn view(state: SecretState, now: UnixMillis) -> Result<SecretView, SecretError> {
    let rotator = rotator_config(&state.record)?;
    let rotation_step = state
        .record
        .rotation
        .as_deref()
        .and_then(|text| serde_json::from_str::<engine::Rotation>(text).ok())
        .map(|rotation| rotation.step.as_str().to_owned());
    Ok(SecretView {
        next_rotation_at: fraction_of_cadence(&state.record, 1, 1),
        warning: now >= fraction_of_cadence(&state.record, 8, 10),
        overdue: now >= fraction_of_cadence(&state.record, 1, 1),
        record: state.record,
        versions: state.versions,
        rotator,
        rotation_step,
    })
}

/// The audit entry of a failed step.
fn failed(entry: AuditEntry) -> AuditEntry {
    AuditEntry {
        outcome: AuditOutcome::Failed,
        ..entry
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    Created,
    Set,
    Tested,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Created => "created",
            Step::Set => "set",
            Step::Tested => "tested",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_path_tricks_uppercase_and_length() {
        for good in ["db", "payments/db", "a.b-c_d/e1", &"a".repeat(128)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Db",
            "../etc",
            "a/../b",
            "a//b",
            "a/",
            "/a",
            ".a",
            "a/./b",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_never_show_in_debug() {
        let value = SecretValue::new(b"hunter2".to_vec());
        assert!(!format!("{value:?}").contains("hunter2"));
    }

    #[test]
    fn tiers_are_the_seeds() {
        assert_eq!(tier_cadence_days(1), Some(90));
        assert_eq!(tier_cadence_days(2), Some(180));
        assert_eq!(tier_cadence_days(3), Some(365));
        assert_eq!(tier_cadence_days(4), None);
    }
}

//! The staged rotation `create → set → test → finish` (DESIGN §8). Each step is one
//! generation-checked commit recording the step reached (`rotation` on the secret's
//! row), its history row and its audit entry; the rotator's side effect for a step runs
//! before that commit and is idempotent. So a rotation interrupted anywhere (the issuer
//! killed) is found unfinished by the next `rotate` or scheduler pass, on any replica,
//! which repeats at most the one step whose commit was lost and carries on. A failed
//! `set` or `test` rolls back: the rotator undoes what it installed, the pending version
//! is retired, `current` never changed.

use serde::{Deserialize, Serialize};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, SecretRotation};

use super::rotators::{RotatorError, VersionView, rotator_for};
use super::{SecretError, Secrets, Step, failed, next_version, rotator_config, stage_of};
use crate::audit::{Actor, AuditAction, AuditEntry};
use crate::store::{
    SecretCommit, SecretHistoryRecord, SecretRecord, SecretStage, SecretState, SecretVersionRecord,
};

/// An unfinished rotation, stored as JSON on the secret's row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Rotation {
    pub(super) step: Step,
    pub(super) version: u64,
    pub(super) emergency: bool,
    pub(super) actor: String,
    pub(super) request_id: String,
}

/// What `rotate` did.
#[derive(Debug)]
pub struct RotateOutcome {
    /// The version now current.
    pub version: u64,
    /// The steps this call ran.
    pub steps: Vec<&'static str>,
    /// True when it finished a rotation found unfinished.
    pub resumed: bool,
}

/// Builds one commit: versions, history rows, audit entries and the event.
pub(super) struct Commit<'a> {
    name: String,
    actor: &'a Actor,
    at: UnixMillis,
    pub(super) versions: Vec<SecretVersionRecord>,
    history: Vec<SecretHistoryRecord>,
    audit: Vec<AuditEntry>,
    changes: Vec<BundleChange>,
}

impl<'a> Commit<'a> {
    pub(super) fn new(name: &str, actor: &'a Actor, at: UnixMillis) -> Commit<'a> {
        Commit {
            name: name.to_owned(),
            actor,
            at,
            versions: Vec::new(),
            history: Vec::new(),
            audit: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Records a successful step.
    pub(super) fn step(&mut self, step: &str, version: u64, action: AuditAction) {
        self.record(step, version, action, None);
    }

    /// Records a failed step with why (never a value).
    pub(super) fn failed_step(
        &mut self,
        step: &str,
        version: u64,
        action: AuditAction,
        detail: String,
    ) {
        self.record(step, version, action, Some(detail));
    }

    fn record(&mut self, step: &str, version: u64, action: AuditAction, detail: Option<String>) {
        self.history.push(SecretHistoryRecord {
            name: self.name.clone(),
            at: self.at,
            step: step.to_owned(),
            version,
            outcome: if detail.is_some() { "failed" } else { "ok" }.to_owned(),
            actor: self.actor.principal.as_str().to_owned(),
            request_id: self.actor.request_id.clone(),
            detail: detail.clone().unwrap_or_default(),
        });
        let mut reason = format!("step={step} version={version}");
        if let Some(detail) = &detail {
            reason.push_str(&format!(" error={detail}"));
        }
        if !self.actor.reason.is_empty() {
            reason.push_str(&format!("; {}", self.actor.reason));
        }
        let entry = self
            .actor
            .with_reason(reason)
            .entry(self.at, action, self.name.clone());
        self.audit.push(if detail.is_some() {
            failed(entry)
        } else {
            entry
        });
    }

    /// Publishes `SecretRotated` (versions only).
    pub(super) fn rotated(&mut self, current_version: u64, previous_version: Option<u64>) {
        self.changes.push(BundleChange::SecretRotated {
            change: SecretRotation {
                name: self.name.clone(),
                current_version,
                previous_version,
            },
        });
    }

    pub(super) fn build(
        self,
        expected_generation: Option<i64>,
        record: SecretRecord,
    ) -> SecretCommit {
        SecretCommit {
            expected_generation,
            record,
            versions: self.versions,
            history: self.history,
            changes: self.changes,
            audit: self.audit,
            at: self.at,
        }
    }
}

/// Moves the stages for a new current version: the current becomes `previous` (or
/// `retired` in an emergency), the previous `retired`. Returns the version left valid as
/// `previous`.
pub(super) fn promote(
    state: &SecretState,
    commit: &mut Commit<'_>,
    emergency: bool,
    now: UnixMillis,
) -> Option<u64> {
    if let Some(previous) = stage_of(state, SecretStage::Previous) {
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Retired,
            retired_at: Some(now),
            ..previous.clone()
        });
    }
    let current = stage_of(state, SecretStage::Current)?;
    if emergency {
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Retired,
            retired_at: Some(now),
            ..current.clone()
        });
        None
    } else {
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Previous,
            ..current.clone()
        });
        Some(current.version)
    }
}

fn rotation_of(record: &SecretRecord) -> Result<Option<Rotation>, SecretError> {
    record
        .rotation
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| {
            SecretError::Store(crate::store::StoreError::Corrupt(format!(
                "rotation: {error}"
            )))
        })
}

fn with_rotation(record: &SecretRecord, rotation: Option<&Rotation>) -> SecretRecord {
    SecretRecord {
        rotation: rotation.map(|rotation| serde_json::to_string(rotation).unwrap_or_default()),
        ..record.clone()
    }
}

/// Runs (or resumes) a rotation of `name` to its end. A scheduler pass gives the
/// generation it decided on (`scheduled`) and gives up, with `Conflict`, as soon as the
/// secret moved past it or a commit is lost (another replica is rotating it), so a due
/// secret is rotated, and reported, by one replica; operators' calls follow the winner.
pub(super) async fn rotate(
    secrets: &Secrets,
    name: &str,
    emergency: bool,
    actor: &Actor,
    scheduled: Option<i64>,
) -> Result<RotateOutcome, SecretError> {
    let is_scheduled = scheduled.is_some();
    let mut steps: Vec<&'static str> = Vec::new();
    let mut resumed: Option<bool> = None;
    // Bounded: each pass either commits a step or follows another writer's commit.
    for _ in 0..32 {
        let state = secrets.load(name).await?;
        let config = rotator_config(&state.record)?;
        let rotator = rotator_for(&config, &secrets.credentials);
        if !rotator.rotates() {
            return Err(SecretError::FailedPrecondition(
                "an external secret rotates at its provider: record the new value with put"
                    .to_owned(),
            ));
        }
        if let Some(decided) = scheduled
            && resumed.is_none()
            && state.record.generation != decided
        {
            return Err(SecretError::Conflict);
        }
        let rotation = rotation_of(&state.record)?;
        let started = !steps.is_empty() || resumed == Some(true);
        resumed.get_or_insert(rotation.is_some());
        let now = secrets.now();
        let generation = Some(state.record.generation);
        let Some(rotation) = rotation else {
            if started {
                // Finished, by this call or by a writer it followed.
                let version = stage_of(&state, SecretStage::Current).map_or(0, |v| v.version);
                return Ok(RotateOutcome {
                    version,
                    steps,
                    resumed: resumed == Some(true),
                });
            }
            // create
            let current = stage_of(&state, SecretStage::Current);
            let current_value = current.map(|current| secrets.open(current)).transpose()?;
            let created =
                rotator
                    .create(current.zip(current_value.as_ref()).map(|(current, value)| {
                        VersionView {
                            value,
                            label: &current.label,
                        }
                    }))
                    .await
                    .map_err(|error| SecretError::Rotator {
                        step: "create",
                        error,
                    })?;
            let version = next_version(&state);
            let pending =
                secrets.version_record(name, version, &created.value, created.label, now)?;
            let rotation = Rotation {
                step: Step::Created,
                version,
                emergency,
                actor: actor.principal.as_str().to_owned(),
                request_id: actor.request_id.clone(),
            };
            let mut commit = Commit::new(name, actor, now);
            commit.versions.push(pending);
            commit.step("create", version, AuditAction::SecretRotate);
            let record = with_rotation(&state.record, Some(&rotation));
            if !secrets
                .store
                .commit_secret(commit.build(generation, record))
                .await?
            {
                if is_scheduled {
                    return Err(SecretError::Conflict);
                }
                continue;
            }
            steps.push("create");
            secrets.fail_point("after-create");
            continue;
        };
        let Some(pending) = state.versions.iter().find(|version| {
            version.version == rotation.version && version.stage == SecretStage::Pending
        }) else {
            return Err(SecretError::Store(crate::store::StoreError::Corrupt(
                "unfinished rotation without its pending version".to_owned(),
            )));
        };
        let pending_value = secrets.open(pending)?;
        let pending_view = || VersionView {
            value: &pending_value,
            label: &pending.label,
        };
        let (step_name, next, result): (&'static str, Option<Step>, Result<(), RotatorError>) =
            match rotation.step {
                Step::Created => ("set", Some(Step::Set), rotator.set(pending_view()).await),
                Step::Set => (
                    "test",
                    Some(Step::Tested),
                    rotator.test(pending_view()).await,
                ),
                Step::Tested => ("finish", None, Ok(())),
            };
        if let Err(error) = result {
            abandon(
                secrets,
                &state,
                &rotation,
                pending,
                &pending_value,
                step_name,
                &error,
                actor,
            )
            .await?;
            return Err(SecretError::Rotator {
                step: step_name,
                error,
            });
        }
        let mut commit = Commit::new(name, actor, now);
        if let Some(next) = next {
            commit.step(step_name, rotation.version, AuditAction::SecretRotate);
            let advanced = Rotation {
                step: next,
                ..rotation.clone()
            };
            let record = with_rotation(&state.record, Some(&advanced));
            if !secrets
                .store
                .commit_secret(commit.build(generation, record))
                .await?
            {
                if is_scheduled {
                    return Err(SecretError::Conflict);
                }
                continue;
            }
            steps.push(step_name);
            secrets.fail_point(&format!("after-{step_name}"));
            continue;
        }
        // finish: revoke what leaves, then move the stages in one commit.
        let emergency = rotation.emergency || emergency;
        let current = stage_of(&state, SecretStage::Current);
        let previous = stage_of(&state, SecretStage::Previous);
        let current_value = current.map(|version| secrets.open(version)).transpose()?;
        let previous_value = previous.map(|version| secrets.open(version)).transpose()?;
        let retiring = previous
            .zip(previous_value.as_ref())
            .map(|(version, value)| VersionView {
                value,
                label: &version.label,
            });
        let revoke_now = if emergency {
            current
                .zip(current_value.as_ref())
                .map(|(version, value)| VersionView {
                    value,
                    label: &version.label,
                })
        } else {
            None
        };
        rotator
            .finish(pending_view(), retiring, revoke_now)
            .await
            .map_err(|error| SecretError::Rotator {
                step: "finish",
                error,
            })?;
        commit.versions.push(SecretVersionRecord {
            stage: SecretStage::Current,
            activated_at: Some(now),
            ..pending.clone()
        });
        let still_previous = promote(&state, &mut commit, emergency, now);
        commit.step("finish", rotation.version, AuditAction::SecretRotate);
        if emergency && let Some(current) = current {
            commit.step(
                "revoke_previous",
                current.version,
                AuditAction::SecretRotate,
            );
        }
        commit.rotated(rotation.version, still_previous);
        let mut record = with_rotation(&state.record, None);
        record.last_rotated_at = Some(now);
        record.warned_at = None;
        if !secrets
            .store
            .commit_secret(commit.build(generation, record))
            .await?
        {
            if is_scheduled {
                return Err(SecretError::Conflict);
            }
            continue;
        }
        steps.push("finish");
        if emergency && current.is_some() {
            steps.push("revoke_previous");
        }
        tracing::info!(secret = %name, version = rotation.version, emergency, "secret rotated");
        return Ok(RotateOutcome {
            version: rotation.version,
            steps,
            resumed: resumed == Some(true),
        });
    }
    Err(SecretError::Conflict)
}

/// Rolls a failed rotation back: the rotator undoes `set`, the pending version is
/// retired, `current` is untouched; the failure and the discard are recorded.
#[allow(clippy::too_many_arguments)]
async fn abandon(
    secrets: &Secrets,
    state: &SecretState,
    rotation: &Rotation,
    pending: &SecretVersionRecord,
    pending_value: &super::SecretValue,
    step: &'static str,
    error: &RotatorError,
    actor: &Actor,
) -> Result<(), SecretError> {
    let now = secrets.now();
    let config = rotator_config(&state.record)?;
    let rotator = rotator_for(&config, &secrets.credentials);
    let restore = stage_of(state, SecretStage::Previous);
    let restore_value = restore.map(|version| secrets.open(version)).transpose()?;
    let discarded = rotator
        .discard(
            VersionView {
                value: pending_value,
                label: &pending.label,
            },
            restore
                .zip(restore_value.as_ref())
                .map(|(version, value)| VersionView {
                    value,
                    label: &version.label,
                }),
        )
        .await;
    let mut commit = Commit::new(&state.record.name, actor, now);
    commit.failed_step(
        step,
        rotation.version,
        AuditAction::SecretRotate,
        error.to_string(),
    );
    match &discarded {
        Ok(()) => commit.step("discard", rotation.version, AuditAction::SecretRotate),
        Err(discard_error) => commit.failed_step(
            "discard",
            rotation.version,
            AuditAction::SecretRotate,
            discard_error.to_string(),
        ),
    }
    commit.versions.push(SecretVersionRecord {
        stage: SecretStage::Retired,
        retired_at: Some(now),
        ..pending.clone()
    });
    let record = with_rotation(&state.record, None);
    secrets
        .store
        .commit_secret(commit.build(Some(state.record.generation), record))
        .await?;
    tracing::warn!(secret = %state.record.name, step, %error, "secret rotation failed and was rolled back");
    Ok(())
}

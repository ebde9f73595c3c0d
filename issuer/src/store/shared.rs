//! What both backends do the same way, written once above them: the order of the
//! statements in every multi-statement write (key commits, revocations, emergencies,
//! sessions, clients), audit chaining, the assembly of revocation events, which sessions
//! a revocation selects, the checks on what a statement matched, and retention. A
//! backend supplies only its statements, as a [`WriteTx`]: SQL text and row mapping.
//!
//! The bodies are `async` because PostgreSQL's statements are. SQLite's statements are
//! synchronous, so its [`WriteTx`] futures never wait and the SQLite backend completes a
//! body in one poll on its blocking thread (`sqlite::tx::complete`).

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::RevocationEntry;

use tokio::sync::Notify;

use super::emergency::DeactivatedCredentials;
use super::{
    AuditEntry, AuditRecord, ClientRecord, EmergencyCommit, EmergencyCommitted, KeyCommit,
    KeyWrite, RefreshTokenRecord, Revocation, RevocationEffect, SessionRecord, StoreError,
};
use crate::audit::ChainHead;

/// Target of the per-operation spans (`store.<operation>`, at debug level) both backends
/// open around every `Store` and `SessionStore` call. The OTLP layer enables it
/// (`tessera_common::telemetry`); the log filter leaves it off unless asked, so with
/// tracing export off a store call pays one disabled-callsite check.
pub(crate) const SPAN_TARGET: &str = "tessera::store";

/// Refresh tokens are kept this long past their expiry before pruning deletes them, so a
/// token presented just after it expired is still recognised (and reuse still detected).
pub(crate) const EXPIRED_TOKEN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The statements of one open write transaction. Each method is one step of a shared
/// body below; the backend holds the transaction (and its locks) around the whole body.
///
/// Implementations report how many rows a statement matched instead of deciding what
/// that means: the decision (conflict, not found) is made once, here.
pub(crate) trait WriteTx {
    /// The backend's failure, into which a [`StoreError`] decided here converts.
    type Failure: From<StoreError>;

    /// Creates `key_set`'s row at generation 0 if it has none, then moves its generation
    /// from `expected` to `expected + 1`; returns whether it did (false: someone else
    /// committed to the set first).
    async fn bump_generation(
        &self,
        key_set: KeySetName,
        expected: i64,
    ) -> Result<bool, Self::Failure>;

    /// Inserts or updates one key row; returns the rows written (0 for an update of a key
    /// that is not in its set).
    async fn write_key(&self, write: &KeyWrite) -> Result<u64, Self::Failure>;

    /// Appends one event per change at consecutive revisions (taking whatever lock keeps
    /// revisions committed in order) and returns the last, `None` when there is none.
    async fn insert_events(
        &self,
        changes: &[BundleChange],
        at: UnixMillis,
    ) -> Result<Option<Revision>, Self::Failure>;

    /// Returns the newest revision (0 when the log is empty).
    async fn latest_revision(&self) -> Result<Revision, Self::Failure>;

    /// Takes whatever lock makes this transaction the audit log's only appender until it
    /// ends, then returns the chain's newest link (`None` when the log is empty).
    async fn lock_audit_head(&self) -> Result<Option<ChainHead>, Self::Failure>;

    /// Inserts a chained audit record.
    async fn insert_audit(&self, record: &AuditRecord) -> Result<(), Self::Failure>;

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), Self::Failure>;

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), Self::Failure>;

    /// Ends the still-open sessions `effect` selects and revokes the active and rotated
    /// refresh tokens of every session it selects; returns how many sessions it ended.
    async fn end_sessions(
        &self,
        effect: &RevocationEffect,
        at: UnixMillis,
    ) -> Result<u64, Self::Failure>;

    async fn insert_revocation(&self, entry: &RevocationEntry) -> Result<(), Self::Failure>;

    /// Deletes revocation entries with `drop_after <= now`; returns how many went.
    async fn delete_revocations_until(&self, now: UnixMillis) -> Result<u64, Self::Failure>;

    /// Deletes refresh tokens that expired at or before `cutoff`.
    async fn delete_refresh_tokens_until(&self, cutoff: UnixMillis) -> Result<(), Self::Failure>;

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), Self::Failure>;

    /// Sets a client's `disabled_at` unless it is already set; returns the rows matched
    /// (0 when the client does not exist).
    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
    ) -> Result<u64, Self::Failure>;

    /// Stores `value` under `name` unless a value exists; returns whether it stored it.
    async fn insert_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, Self::Failure>;

    /// Returns the value stored under `name`, as this transaction sees it.
    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Self::Failure>;

    /// Revokes every live API key, service token and webhook token of `tenant_id` at
    /// `at` (an emergency tenant revocation); returns how many of each.
    async fn deactivate_tenant_credentials(
        &self,
        tenant_id: &TenantId,
        at: UnixMillis,
    ) -> Result<DeactivatedCredentials, Self::Failure>;
}

// === impl KeyCommit ===

impl KeyCommit {
    /// Returns whether committing appends events (then subscribers must be woken).
    pub(crate) fn appends_events(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Returns whether committing deletes a wrapped private key (a retired or revoked
    /// key's), so a backend that keeps deleted bytes around (SQLite's WAL) scrubs them.
    pub(crate) fn drops_material(&self) -> bool {
        self.writes
            .iter()
            .any(|write| matches!(write, KeyWrite::Update(key) if key.wrapped_private.is_none()))
    }
}

// === impl Revocation ===

impl Revocation {
    /// Returns whether committing appends events (then subscribers must be woken).
    pub(crate) fn appends_events(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Returns the events publishing the entries, in order.
    pub(crate) fn changes(&self) -> Vec<BundleChange> {
        self.entries
            .iter()
            .map(|entry| BundleChange::RevocationAdded {
                entry: entry.clone(),
            })
            .collect()
    }
}

// === impl RevocationEffect ===

impl RevocationEffect {
    /// Returns the `sessions` columns and the values they must equal for a session to be
    /// one this effect ends; none selects every session. Every effect that names a tenant
    /// selects within it, so naming another tenant's session or family ends nothing.
    pub(crate) fn session_conditions(&self) -> Vec<(&'static str, &str)> {
        match self {
            RevocationEffect::Session {
                tenant_id,
                session_id,
            } => vec![
                ("tenant_id", tenant_id.as_str()),
                ("session_id", session_id.as_str()),
            ],
            RevocationEffect::Family {
                tenant_id,
                family_id,
            } => vec![("tenant_id", tenant_id.as_str()), ("family_id", family_id)],
            RevocationEffect::User { tenant_id, subject } => tenant_id
                .iter()
                .map(|tenant_id| ("tenant_id", tenant_id.as_str()))
                .chain([("subject", subject.as_str())])
                .collect(),
            RevocationEffect::Tenant(tenant_id) => vec![("tenant_id", tenant_id.as_str())],
            RevocationEffect::All => Vec::new(),
        }
    }
}

/// Returns `conditions` as a SQL condition, the values bound from parameter 2 on (the
/// first is the instant) in the backend's `placeholder` syntax; `TRUE` when there is none.
pub(crate) fn where_equal(
    conditions: &[(&'static str, &str)],
    placeholder: fn(usize) -> String,
) -> String {
    if conditions.is_empty() {
        return "TRUE".to_owned();
    }
    conditions
        .iter()
        .enumerate()
        .map(|(index, (column, _))| format!("{column} = {}", placeholder(index + 2)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Returns the one row a read by a unique key found, if any.
pub(crate) fn at_most_one<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Wakes this replica's subscribers after a commit that appended events (on PostgreSQL
/// the LISTEN task wakes them again when the NOTIFY comes back; a spurious wake is
/// harmless).
pub(crate) fn signal_if(change_signal: &Notify, appends_events: bool) {
    if appends_events {
        change_signal.notify_one();
    }
}

// === transaction bodies ===

/// Applies a key commit: bumps the set's generation if it is still the expected one
/// ([`StoreError::Conflict`] otherwise), writes the keys (an update of a key not in the
/// set is [`StoreError::NotFound`]), appends the events, then the audit entries. Returns
/// the last event's revision (the current one when there is none).
pub(crate) async fn commit_keys<T: WriteTx>(
    tx: &T,
    commit: &KeyCommit,
) -> Result<Revision, T::Failure> {
    if !tx
        .bump_generation(commit.key_set, commit.expected_generation)
        .await?
    {
        return Err(StoreError::Conflict.into());
    }
    for write in &commit.writes {
        if tx.write_key(write).await? == 0 {
            return Err(StoreError::NotFound.into());
        }
    }
    let revision = append_events(tx, &commit.changes, commit.at).await?;
    append_audit(tx, &commit.audit).await?;
    Ok(revision)
}

/// Ends the sessions `effects` select, stores `entries`, appends one `RevocationAdded`
/// event per entry, then the audit entries. Returns the last revision and the number of
/// sessions newly ended.
///
/// Sessions are ended before the entries are published: on PostgreSQL the session rows'
/// locks are taken before the events lock, the order every transaction uses.
pub(crate) async fn revoke<T: WriteTx>(
    tx: &T,
    revocation: &Revocation,
) -> Result<(Revision, u64), T::Failure> {
    let at = revocation.at;
    let mut n_sessions_ended = 0_u64;
    for effect in &revocation.effects {
        n_sessions_ended += tx.end_sessions(effect, at).await?;
    }
    for entry in &revocation.entries {
        tx.insert_revocation(entry).await?;
    }
    let revision = append_events(tx, &revocation.changes(), at).await?;
    append_audit(tx, &revocation.audit).await?;
    Ok((revision, n_sessions_ended))
}

/// Deletes revocation entries past their `drop_after` and refresh tokens expired longer
/// than [`EXPIRED_TOKEN_RETENTION_MS`] ago; returns how many entries went.
pub(crate) async fn prune_revocations<T: WriteTx>(
    tx: &T,
    now: UnixMillis,
) -> Result<u64, T::Failure> {
    let n_entries = tx.delete_revocations_until(now).await?;
    let cutoff = UnixMillis(now.0.saturating_sub(EXPIRED_TOKEN_RETENTION_MS));
    tx.delete_refresh_tokens_until(cutoff).await?;
    Ok(n_entries)
}

/// Inserts a session, its first refresh token and its audit entry.
pub(crate) async fn create_session<T: WriteTx>(
    tx: &T,
    session: &SessionRecord,
    first_token: &RefreshTokenRecord,
    audit: &AuditEntry,
) -> Result<(), T::Failure> {
    tx.insert_session(session).await?;
    tx.insert_refresh_token(first_token).await?;
    append_audit(tx, std::slice::from_ref(audit)).await?;
    Ok(())
}

/// Inserts a client and its audit entry.
pub(crate) async fn insert_client<T: WriteTx>(
    tx: &T,
    client: &ClientRecord,
    audit: &AuditEntry,
) -> Result<(), T::Failure> {
    tx.insert_client(client).await?;
    append_audit(tx, std::slice::from_ref(audit)).await?;
    Ok(())
}

/// Disables a client (keeping the first disabling instant) and appends its audit entry;
/// [`StoreError::NotFound`] when there is no such client.
pub(crate) async fn disable_client<T: WriteTx>(
    tx: &T,
    client_id: &ClientId,
    at: UnixMillis,
    audit: &AuditEntry,
) -> Result<(), T::Failure> {
    if tx.disable_client(client_id, at).await? == 0 {
        return Err(StoreError::NotFound.into());
    }
    append_audit(tx, std::slice::from_ref(audit)).await?;
    Ok(())
}

/// Stores `value` under `name` unless a value exists; returns the value now stored.
pub(crate) async fn put_meta_if_absent<T: WriteTx>(
    tx: &T,
    name: &str,
    value: &[u8],
) -> Result<Vec<u8>, T::Failure> {
    if tx.insert_meta_if_absent(name, value).await? {
        return Ok(value.to_vec());
    }
    // Another writer stored it first; its value is the one that stays.
    tx.meta(name).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("meta `{name}` vanished inside its transaction")).into()
    })
}

/// Appends `changes` as events; returns the last revision, or the current one when there
/// is no change (so a commit always answers with the revision it is visible at).
pub(crate) async fn append_events<T: WriteTx>(
    tx: &T,
    changes: &[BundleChange],
    at: UnixMillis,
) -> Result<Revision, T::Failure> {
    match tx.insert_events(changes, at).await? {
        Some(revision) => Ok(revision),
        None => tx.latest_revision().await,
    }
}

/// Appends `entries` to the audit chain, in order, and returns their records: reads the
/// chain's head once (under the backend's audit lock) and links each entry to the one
/// before ([`AuditRecord::following`]). Appends nothing, and takes no lock, when there
/// is no entry.
pub(crate) async fn append_audit<T: WriteTx>(
    tx: &T,
    entries: &[AuditEntry],
) -> Result<Vec<AuditRecord>, T::Failure> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut head = tx.lock_audit_head().await?;
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = AuditRecord::following(head, entry);
        tx.insert_audit(&record).await?;
        head = Some(record.head());
        records.push(record);
    }
    Ok(records)
}

/// Appends one entry to the audit chain and returns its record (see [`append_audit`]).
pub(crate) async fn append_audit_entry<T: WriteTx>(
    tx: &T,
    entry: &AuditEntry,
) -> Result<AuditRecord, T::Failure> {
    let head = tx.lock_audit_head().await?;
    let record = AuditRecord::following(head, entry);
    tx.insert_audit(&record).await?;
    Ok(record)
}

/// Records the incident unless it is already recorded (then writes nothing and answers
/// so), applies every key commit as [`commit_keys`] does, then the revocation as
/// [`revoke`] does: all of it or, on any failure, none.
pub(crate) async fn commit_emergency<T: WriteTx>(
    tx: &T,
    commit: &EmergencyCommit,
) -> Result<EmergencyCommitted, T::Failure> {
    let incident = &commit.incident;
    if !tx
        .insert_meta_if_absent(&incident.name, &incident.value)
        .await?
    {
        return Ok(EmergencyCommitted::AlreadyRecorded);
    }
    for key_commit in &commit.key_commits {
        commit_keys(tx, key_commit).await?;
    }
    let mut deactivated = DeactivatedCredentials::default();
    for tenant in commit.deactivated_tenants() {
        deactivated.add(
            tx.deactivate_tenant_credentials(tenant, commit.revocation.at)
                .await?,
        );
    }
    let (revision, n_sessions) = if deactivated == DeactivatedCredentials::default() {
        revoke(tx, &commit.revocation).await?
    } else {
        // The counts exist only inside this transaction: they join the reason of the
        // revocation's audit entry here rather than in a second entry.
        let mut revocation = commit.revocation.clone();
        for entry in &mut revocation.audit {
            entry.reason = format!("{}; {deactivated}", entry.reason);
        }
        revoke(tx, &revocation).await?
    };
    Ok(EmergencyCommitted::Applied {
        revision,
        n_sessions,
        deactivated,
    })
}

#[cfg(test)]
mod tests {
    use tessera_common::ids::{SessionId, Subject, TenantId};

    use super::*;

    fn dollar(index: usize) -> String {
        format!("${index}")
    }

    /// The tenant is part of the selector of every effect that names one, so a session or
    /// family id of another tenant selects nothing of that tenant, on either backend.
    #[test]
    fn every_effect_that_names_a_tenant_selects_within_it() {
        let acme = TenantId::new("acme").unwrap();
        let alice = Subject::new("alice").unwrap();
        let cases = [
            (
                RevocationEffect::Session {
                    tenant_id: acme.clone(),
                    session_id: SessionId::new("s1").unwrap(),
                },
                "tenant_id = $2 AND session_id = $3",
                vec!["acme", "s1"],
            ),
            (
                RevocationEffect::Family {
                    tenant_id: acme.clone(),
                    family_id: "f1".into(),
                },
                "tenant_id = $2 AND family_id = $3",
                vec!["acme", "f1"],
            ),
            (
                RevocationEffect::User {
                    tenant_id: Some(acme.clone()),
                    subject: alice.clone(),
                },
                "tenant_id = $2 AND subject = $3",
                vec!["acme", "alice"],
            ),
            (
                RevocationEffect::User {
                    tenant_id: None,
                    subject: alice,
                },
                "subject = $2",
                vec!["alice"],
            ),
            (
                RevocationEffect::Tenant(acme),
                "tenant_id = $2",
                vec!["acme"],
            ),
            (RevocationEffect::All, "TRUE", vec![]),
        ];
        for (effect, expected_sql, expected_values) in cases {
            let conditions = effect.session_conditions();
            assert_eq!(where_equal(&conditions, dollar), expected_sql, "{effect:?}");
            let values: Vec<&str> = conditions.iter().map(|(_, value)| *value).collect();
            assert_eq!(values, expected_values, "{effect:?}");
        }
        let sqlite = where_equal(&[("tenant_id", "acme")], |index| format!("?{index}"));
        assert_eq!(sqlite, "tenant_id = ?2");
    }

    #[test]
    fn a_revocation_publishes_one_event_per_entry_in_order() {
        let entry = |value: &str| RevocationEntry {
            kind: tessera_common::revocation::RevocationKind::Jti,
            value: value.to_owned(),
            tenant_id: Some("acme".into()),
            revoked_at: UnixMillis(1),
            drop_after: UnixMillis(2),
        };
        let revocation = Revocation {
            entries: vec![entry("a"), entry("b")],
            effects: Vec::new(),
            audit: Vec::new(),
            at: UnixMillis(1),
        };
        assert!(revocation.appends_events());
        assert_eq!(
            revocation.changes(),
            vec![
                BundleChange::RevocationAdded { entry: entry("a") },
                BundleChange::RevocationAdded { entry: entry("b") },
            ]
        );
        let empty = Revocation {
            entries: Vec::new(),
            ..revocation
        };
        assert!(!empty.appends_events());
    }
}

//! Conversions between domain types and generated proto types. Nothing else in the issuer
//! names a proto type outside `grpc/`.

use tessera_common::UnixMillis;
use tessera_common::bundle::{
    BundleChange, BundleEvent, CredentialChange, StandingKind, TrustBundle, ValidationPolicy,
};
use tessera_common::claims::AccessClaims;
use tessera_common::keys::{KeySchedule, KeyState};
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_proto::v1 as pb;

/// Converts an instant to a protobuf Timestamp.
pub fn timestamp(at: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.0.div_euclid(1000),
        nanos: (at.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn key_state(state: KeyState) -> pb::KeyState {
    match state {
        KeyState::Pending { .. } => pb::KeyState::Pending,
        KeyState::Active { .. } => pb::KeyState::Active,
        KeyState::Retiring { .. } => pb::KeyState::Retiring,
        KeyState::Retired { .. } => pb::KeyState::Retired,
        KeyState::Revoked { .. } => pb::KeyState::Revoked,
    }
}

/// Converts a key's schedule, with its state at `now`.
pub fn key(schedule: &KeySchedule, now: UnixMillis) -> pb::Key {
    pb::Key {
        kid: schedule.kid.to_string(),
        key_set: schedule.key_set.as_str().to_owned(),
        algorithm: schedule.algorithm.as_str().to_owned(),
        state: key_state(schedule.state_at(now)).into(),
        created_at: Some(timestamp(schedule.created_at)),
        activates_at: Some(timestamp(schedule.activates_at)),
        deactivates_at: schedule.deactivates_at.map(timestamp),
        verify_until: schedule.verify_until.map(timestamp),
        revoked_at: schedule.revoked_at.map(timestamp),
        // Serializing a struct of strings cannot fail.
        public_jwk_json: serde_json::to_string(&schedule.public_jwk).unwrap_or_default(),
    }
}

fn revocation_kind(kind: RevocationKind) -> pb::RevocationKind {
    match kind {
        RevocationKind::Jti => pb::RevocationKind::Jti,
        RevocationKind::Session => pb::RevocationKind::Session,
        RevocationKind::User => pb::RevocationKind::User,
        RevocationKind::Tenant => pb::RevocationKind::Tenant,
        RevocationKind::Family => pb::RevocationKind::Family,
        RevocationKind::Key => pb::RevocationKind::Key,
        RevocationKind::All => pb::RevocationKind::All,
    }
}

/// Converts a revocation entry.
pub fn revocation(entry: &RevocationEntry) -> pb::RevocationEntry {
    pb::RevocationEntry {
        kind: revocation_kind(entry.kind).into(),
        value: entry.value.clone(),
        tenant_id: entry.tenant_id.clone().unwrap_or_default(),
        revoked_at: Some(timestamp(entry.revoked_at)),
        drop_after: Some(timestamp(entry.drop_after)),
    }
}

/// Converts the validation policy.
pub fn policy(policy: &ValidationPolicy) -> pb::ValidationPolicy {
    pb::ValidationPolicy {
        issuer: policy.issuer.clone(),
        audiences: policy.audiences.clone(),
        leeway_seconds: policy.leeway_seconds,
        max_token_ttl_seconds: policy.max_token_ttl_seconds,
        token_lifetimes: policy
            .token_lifetimes
            .iter()
            .map(|(token_type, &max_ttl_seconds)| pb::TokenLifetime {
                token_type: token_type.as_str().to_owned(),
                max_ttl_seconds,
            })
            .collect(),
    }
}

/// Converts a whole bundle into a snapshot message.
pub fn snapshot(bundle: &TrustBundle, now: UnixMillis) -> pb::TrustBundleUpdate {
    pb::TrustBundleUpdate {
        revision: bundle.revision.0,
        sent_at: Some(timestamp(now)),
        kind: Some(pb::trust_bundle_update::Kind::Snapshot(
            pb::TrustBundleSnapshot {
                keys: bundle
                    .keys
                    .values()
                    .map(|schedule| key(schedule, now))
                    .collect(),
                revocations: bundle.revocations.entries().map(revocation).collect(),
                policy: Some(policy(&bundle.policy)),
            },
        )),
    }
}

/// Converts one event into a change (`None` kept for kinds the stream may not carry).
pub fn change(event: &BundleEvent, now: UnixMillis) -> Option<pb::BundleChange> {
    use pb::bundle_change::Change;
    let change = match &event.change {
        BundleChange::KeyUpserted { key: schedule } => Change::KeyUpserted(key(schedule, now)),
        BundleChange::KeyUnpublished { kid } => Change::KeyUnpublished(kid.to_string()),
        BundleChange::KeyRevoked { key: schedule } => Change::KeyRevoked(key(schedule, now)),
        BundleChange::RevocationAdded { entry } => Change::RevocationAdded(revocation(entry)),
        BundleChange::PolicyChanged { policy: changed } => Change::PolicyChanged(policy(changed)),
        BundleChange::CredentialChanged { change } => Change::CredentialChanged(credential(change)),
        BundleChange::SecretRotated { change } => Change::SecretRotated(pb::SecretRotated {
            name: change.name.clone(),
            current_version: change.current_version,
            previous_version: change.previous_version.unwrap_or(0),
        }),
    };
    Some(pb::BundleChange {
        revision: event.revision.0,
        change: Some(change),
    })
}

/// The wire form of a credential change (public fields only).
fn credential(change: &CredentialChange) -> pb::CredentialChange {
    let kind = match change.kind {
        StandingKind::ApiKey => pb::CredentialKind::ApiKey,
        StandingKind::ServiceToken => pb::CredentialKind::ServiceToken,
        StandingKind::WebhookToken => pb::CredentialKind::WebhookToken,
    };
    pb::CredentialChange {
        kind: kind as i32,
        credential_id: change.credential_id.clone(),
        tenant_id: change.tenant_id.clone(),
        state: change.state.clone(),
        grace_until: change.grace_until.map(timestamp),
        expires_at: Some(timestamp(change.expires_at)),
    }
}

/// Converts events into one delta message at the last event's revision.
pub fn delta(
    events: &[std::sync::Arc<BundleEvent>],
    now: UnixMillis,
) -> Option<pb::TrustBundleUpdate> {
    let last = events.last()?;
    Some(pb::TrustBundleUpdate {
        revision: last.revision.0,
        sent_at: Some(timestamp(now)),
        kind: Some(pb::trust_bundle_update::Kind::Delta(pb::TrustBundleDelta {
            changes: events
                .iter()
                .filter_map(|event| change(event, now))
                .collect(),
        })),
    })
}

/// Converts access-token claims into the typed claims message.
pub fn claims(claims: &AccessClaims, kid: &str) -> pb::TokenClaims {
    pb::TokenClaims {
        subject: claims.sub.clone(),
        tenant_id: claims.tenant_id.clone(),
        role: claims.role.clone(),
        permissions: claims.permissions.clone(),
        session_id: claims.session_id.clone(),
        jti: claims.jti.clone(),
        expires_at: Some(timestamp(UnixMillis::from_secs(claims.exp))),
        issued_at: Some(timestamp(UnixMillis(claims.iat_ms))),
        issuer: claims.iss.clone(),
        audience: claims.aud.clone(),
        token_type: claims.token_type.clone(),
        mfa_verified: claims.mfa_verified,
        features: claims.features.clone(),
        kid: kid.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_milliseconds_and_handle_negative_instants() {
        assert_eq!(
            timestamp(UnixMillis(1_500)),
            prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(UnixMillis(-1)),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }
}

//! `tessera.v1.KeyService`: list, rotate and revoke keys of every set (HMAC sets too,
//! metadata only); the JWKS, which holds only published, asymmetric keys.

use std::sync::Arc;
use std::time::Duration;

use super::reason::required_reason;
use tessera_common::UnixMillis;
use tessera_common::bundle::TrustBundle;
use tessera_common::ids::KeyId;
use tessera_common::keys::{KeySetName, KeyState};
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert;
use super::status::from_key;
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::Scope;
use crate::keys::rotation::Trigger;

/// Longest prepublish an operator may ask for on a manual rotation.
const MAX_MANUAL_PREPUBLISH: Duration = Duration::from_secs(7 * 24 * 3600);

/// The KeyService implementation.
pub struct KeyServiceImpl {
    pub app: Arc<App>,
}

fn parse_key_set(value: &str) -> Result<KeySetName, Status> {
    value
        .parse()
        .map_err(|_| Status::invalid_argument("key_set: must be `access`, `action` or `webhook`"))
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for KeyServiceImpl {
    #[instrument(skip_all, name = "KeyService/ListKeys")]
    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.app
            .authorize(&request, "KeyService/ListKeys", Scope::Admin)
            .await?;
        let message = request.into_inner();
        let key_set = match message.key_set.as_str() {
            "" => None,
            other => Some(parse_key_set(other)?),
        };
        let now = self.app.now();
        let keys = self.app.keys.list(key_set).await.map_err(from_key)?;
        let keys = keys
            .iter()
            .filter(|schedule| message.include_unpublished || schedule.state_at(now).is_published())
            .map(|schedule| convert::key(schedule, now))
            .collect();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    #[instrument(skip_all, name = "KeyService/RotateKeys")]
    async fn rotate_keys(
        &self,
        request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "KeyService/RotateKeys", Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        // Keys sign every tenant's tokens: only an unconfined admin may change them.
        self.app
            .require_unconfined(&caller, "KeyService/RotateKeys", &request_id)
            .await?;
        let message = request.into_inner();
        let key_set = parse_key_set(&message.key_set)?;
        let reason = required_reason(&message.reason)?;
        let prepublish = Duration::from_secs(u64::from(message.prepublish_seconds));
        if prepublish > MAX_MANUAL_PREPUBLISH {
            return Err(Status::invalid_argument(
                "prepublish_seconds: at most 604800 (7 days)",
            ));
        }
        let trigger = if message.emergency {
            Trigger::Emergency
        } else {
            Trigger::Manual { prepublish }
        };
        let context = Actor::client(caller.client_id.clone(), request_id, reason);
        let outcome = self
            .app
            .keys
            .rotate(key_set, trigger, &context)
            .await
            .map_err(from_key)?;
        // Publish to this replica's subscribers before answering, so a caller that waits
        // for the RPC can rely on local sidecars having been sent the change.
        let _ = self.app.hub.catch_up().await;
        Ok(Response::new(pb::RotateKeysResponse {
            new_kid: outcome
                .new_kid
                .map(|kid| kid.to_string())
                .unwrap_or_default(),
            previous_kid: outcome
                .previous_kid
                .map(|kid| kid.to_string())
                .unwrap_or_default(),
            activates_at: outcome.activates_at.map(convert::timestamp),
            previous_verify_until: outcome.previous_verify_until.map(convert::timestamp),
            revision: outcome.revision.0,
            revoked_kids: outcome
                .revoked_kids
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }

    #[instrument(skip_all, name = "KeyService/RevokeKey")]
    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "KeyService/RevokeKey", Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        // Keys sign every tenant's tokens: only an unconfined admin may change them.
        self.app
            .require_unconfined(&caller, "KeyService/RevokeKey", &request_id)
            .await?;
        let message = request.into_inner();
        let kid =
            KeyId::new(message.kid).map_err(|error| Status::invalid_argument(error.to_string()))?;
        let reason = required_reason(&message.reason)?;
        let context = Actor::client(caller.client_id.clone(), request_id, reason);
        let outcome = self
            .app
            .keys
            .revoke(&kid, &context)
            .await
            .map_err(from_key)?;
        let _ = self.app.hub.catch_up().await;
        Ok(Response::new(pb::RevokeKeyResponse {
            kid: kid.to_string(),
            replacement_kid: outcome
                .new_kid
                .map(|kid| kid.to_string())
                .unwrap_or_default(),
            revision: outcome.revision.0,
        }))
    }

    #[instrument(skip_all, name = "KeyService/GetJwks")]
    async fn get_jwks(
        &self,
        request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        self.app
            .authorize(&request, "KeyService/GetJwks", Scope::BundleRead)
            .await?;
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: jwks_json(&self.app),
        }))
    }
}

/// Returns the published JWKS (pending, active and retiring keys) as JSON.
pub fn jwks_json(app: &App) -> String {
    jwks_of(&app.hub.current(), app.now())
}

/// Returns the JWKS of `bundle` at `now`. HMAC keys never reach the bundle (the key
/// manager appends no event for them); this filter is the second line, so a symmetric
/// key could not be published even if one did.
fn jwks_of(bundle: &TrustBundle, now: UnixMillis) -> String {
    let keys: Vec<_> = bundle
        .keys
        .values()
        .filter(|schedule| schedule.key_set.is_published() && !schedule.algorithm.is_symmetric())
        .filter(|schedule| {
            matches!(
                schedule.state_at(now),
                KeyState::Pending { .. } | KeyState::Active { .. } | KeyState::Retiring { .. }
            )
        })
        .map(|schedule| schedule.public_jwk.clone())
        .collect();
    serde_json::to_string(&tessera_common::jwk::JwkSet { keys })
        .unwrap_or_else(|_| "{\"keys\":[]}".into())
}

#[cfg(test)]
mod tests {
    use tessera_common::bundle::ValidationPolicy;
    use tessera_common::keys::{Algorithm, KeySchedule};

    use super::*;
    use crate::keys::material;

    fn schedule(kid: &str, key_set: KeySetName, algorithm: Algorithm) -> KeySchedule {
        KeySchedule {
            kid: KeyId::new(kid).unwrap(),
            key_set,
            algorithm,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(0),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk: material::generate(algorithm, kid).unwrap().public_jwk,
        }
    }

    #[test]
    fn jwks_never_holds_an_hmac_key_even_one_that_reached_the_bundle() {
        let policy: ValidationPolicy = serde_json::from_value(serde_json::json!({
            "issuer": "tessera",
            "audiences": ["api"],
            "leeway_seconds": 30,
            "max_token_ttl_seconds": 900,
        }))
        .unwrap();
        let mut bundle = TrustBundle::empty(policy);
        for key in [
            schedule("access-1", KeySetName::Access, Algorithm::Es256),
            schedule("webhook-1", KeySetName::Webhook, Algorithm::Hs256),
            // Wrong set and algorithm together: refused on either count.
            schedule("access-2", KeySetName::Access, Algorithm::Hs256),
        ] {
            bundle.keys.insert(key.kid.clone(), key);
        }
        let jwks = jwks_of(&bundle, UnixMillis(1));
        assert!(jwks.contains("access-1"), "{jwks}");
        assert!(!jwks.contains("webhook-1"), "{jwks}");
        assert!(!jwks.contains("access-2"), "{jwks}");
        assert!(!jwks.contains("oct"), "{jwks}");
    }
}

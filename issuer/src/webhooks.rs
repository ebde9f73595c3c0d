//! Webhook signing for tenants (issue 10): each tenant's HMAC-SHA256 secrets, derived from
//! the live keys of the `webhook` key set, signing and verifying messages in the Standard
//! Webhooks format (`format`), and the `whsec_` form receivers configure.
//!
//! Key model. A tenant's secret for `webhook` key K is HMAC-SHA256(K, `TENANT_LABEL` ‖
//! 0x00 ‖ tenant id): a pseudo-random function of the set key, so the secrets of two
//! tenants are unrelated to each other and to K, and a receiver holding its tenant's
//! secret learns nothing about another tenant's. K itself is random, wrapped under the KEK
//! in the store like every key, and rotated by the scheduler on the set's policy (30 d,
//! 3 d overlap); every creation, rotation and retirement of K is audited by the key
//! manager. A tenant's secrets therefore exist for every tenant at once and rotate
//! together on that schedule: during an overlap the successor signs first and the
//! predecessor's signature is listed too, until its `verify_until`.
//!
//! What this model does not do: rotate or revoke one tenant's secret alone (a leaked
//! tenant secret is replaced by rotating the whole set, `keys rotate --key-set webhook`,
//! which hands every tenant a new secret and keeps the old ones verifying through the
//! overlap; `--emergency` withdraws them at once).

pub mod format;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::UnixMillis;
use tessera_common::ids::{KeyId, TenantId};
use tessera_common::keys::{KeySchedule, KeySetName, KeyState};
use zeroize::Zeroizing;

use crate::keys::mac::MacKey;
use crate::keys::manager::KeyError;
use crate::keys::manager::KeyManager;
pub use format::{
    InvalidWebhookId, ReceivedHeaders, SignError, SignedHeaders, TagKey, Verdict, WebhookId,
};

/// Context label of a tenant's derived secret; versioned so a change of derivation never
/// silently yields the same secrets.
const TENANT_LABEL: &[u8] = b"tessera-webhook-tenant-v1";
/// Prefix of a secret in the form Standard Webhooks libraries take.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One tenant's secret for one `webhook` key. Its `Debug` shows only the kid and state.
pub struct TenantWebhookKey {
    schedule: KeySchedule,
    state: KeyState,
    secret: Zeroizing<[u8; 32]>,
    key: hmac::Key,
}

impl std::fmt::Debug for TenantWebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantWebhookKey")
            .field("kid", &self.schedule.kid)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl TenantWebhookKey {
    /// Derives `tenant`'s secret from the set key `mac`, whose schedule is `schedule`.
    pub fn derive(schedule: KeySchedule, mac: &MacKey, tenant: &TenantId, now: UnixMillis) -> Self {
        let mut context = Vec::with_capacity(TENANT_LABEL.len() + 1 + tenant.as_str().len());
        context.extend_from_slice(TENANT_LABEL);
        context.push(0);
        context.extend_from_slice(tenant.as_str().as_bytes());
        let secret = mac.derive_secret(&context);
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref());
        let state = schedule.state_at(now);
        TenantWebhookKey {
            schedule,
            state,
            secret,
            key,
        }
    }

    /// Returns the key's schedule.
    pub fn schedule(&self) -> &KeySchedule {
        &self.schedule
    }

    /// Returns the state at the time the key was loaded.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// Returns true when the key signs new messages (active, or retiring within its
    /// overlap); a pending key is handed to receivers but does not sign yet.
    pub fn signs(&self) -> bool {
        matches!(
            self.state,
            KeyState::Active { .. } | KeyState::Retiring { .. }
        )
    }

    /// Returns the secret as `whsec_<base64>`, for the tenant's receivers only.
    pub fn whsec(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.secret.as_ref())
        ))
    }
}

impl TagKey for TenantWebhookKey {
    fn kid(&self) -> &KeyId {
        &self.schedule.kid
    }

    fn hmac_key(&self) -> &hmac::Key {
        &self.key
    }
}

/// Returns `tenant`'s keys live at `now` (pending, active, retiring), newest activation
/// first, so the active key comes before the retiring ones.
pub async fn tenant_keys(
    keys: &KeyManager,
    tenant: &TenantId,
    now: UnixMillis,
) -> Result<Vec<TenantWebhookKey>, KeyError> {
    Ok(keys
        .mac_keys(KeySetName::Webhook, now)
        .await?
        .into_iter()
        .map(|(schedule, mac)| TenantWebhookKey::derive(schedule, &mac, tenant, now))
        .collect())
}

/// Returns only the keys that sign at `now`, the active one first.
fn signing(keys: Vec<TenantWebhookKey>) -> Vec<TenantWebhookKey> {
    keys.into_iter().filter(TenantWebhookKey::signs).collect()
}

/// Signs `payload` for `tenant` as message `webhook_id` (a fresh id when `None`) at `now`.
pub async fn sign(
    keys: &KeyManager,
    tenant: &TenantId,
    payload: &[u8],
    webhook_id: Option<WebhookId>,
    now: UnixMillis,
) -> Result<SignedHeaders, WebhookError> {
    if payload.len() > format::MAX_PAYLOAD_BYTES {
        return Err(SignError::PayloadTooLarge.into());
    }
    let signing = signing(tenant_keys(keys, tenant, now).await?);
    if signing.is_empty() {
        return Err(KeyError::NoSigner(KeySetName::Webhook).into());
    }
    let webhook_id = webhook_id.unwrap_or_else(WebhookId::generate);
    Ok(format::sign(&signing, webhook_id, payload, now)?)
}

/// Verifies a received message for `tenant` at `now` against the keys that sign now: a
/// pending key has signed nothing, a retired one no longer counts.
pub async fn verify(
    keys: &KeyManager,
    tenant: &TenantId,
    headers: ReceivedHeaders<'_>,
    payload: &[u8],
    now: UnixMillis,
) -> Result<Verdict, KeyError> {
    if payload.len() > format::MAX_PAYLOAD_BYTES {
        return Ok(Verdict::PayloadTooLarge);
    }
    let signing = signing(tenant_keys(keys, tenant, now).await?);
    Ok(format::verify(&signing, headers, payload, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_common::keys::Algorithm;

    fn schedule(kid: &str, activates_at: i64, verify_until: Option<i64>) -> KeySchedule {
        KeySchedule {
            kid: KeyId::new(kid).unwrap(),
            key_set: KeySetName::Webhook,
            algorithm: Algorithm::Hs256,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(activates_at),
            deactivates_at: verify_until.map(|_| UnixMillis(activates_at + 10)),
            verify_until: verify_until.map(UnixMillis),
            revoked_at: None,
            public_jwk: tessera_common::jwk::Jwk {
                kty: "oct".into(),
                kid: kid.into(),
                alg: "HS256".into(),
                use_: "sig".into(),
                n: None,
                e: None,
                crv: None,
                x: None,
                y: None,
            },
        }
    }

    fn mac(kid: &str, byte: u8) -> MacKey {
        MacKey::from_secret(KeyId::new(kid).unwrap(), Algorithm::Hs256, &[byte; 32]).unwrap()
    }

    #[test]
    fn tenants_get_unrelated_secrets_from_one_set_key_and_debug_hides_them() {
        let set_key = mac("w1", 9);
        let acme = TenantWebhookKey::derive(
            schedule("w1", 0, None),
            &set_key,
            &TenantId::new("acme").unwrap(),
            UnixMillis(1),
        );
        let globex = TenantWebhookKey::derive(
            schedule("w1", 0, None),
            &set_key,
            &TenantId::new("globex").unwrap(),
            UnixMillis(1),
        );
        assert!(acme.whsec().starts_with(SECRET_PREFIX));
        assert_ne!(acme.whsec(), globex.whsec());
        // The derivation is HMAC-SHA256(set key, label ‖ 0 ‖ tenant), as documented.
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]),
            b"tessera-webhook-tenant-v1\0acme",
        );
        assert_eq!(
            acme.whsec().as_str(),
            format!("whsec_{}", STANDARD.encode(expected.as_ref()))
        );
        let debug = format!("{acme:?}");
        assert!(debug.contains("w1") && debug.contains("active"), "{debug}");
        assert!(!debug.contains(&acme.whsec()[SECRET_PREFIX.len()..]));
        // Only active and retiring keys sign; a pending one waits.
        let pending = TenantWebhookKey::derive(
            schedule("w2", 100, None),
            &mac("w2", 1),
            &TenantId::new("acme").unwrap(),
            UnixMillis(1),
        );
        assert!(acme.signs() && !pending.signs());
    }
}

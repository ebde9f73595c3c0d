//! The verification pipeline: a [`Verifier`] holds the bundle's keys parsed once (built
//! per bundle revision, reusing the keys whose schedule did not change) and runs the
//! checks of `crate::verify` in order for any claims type. The sidecar and the issuer's
//! introspection both run it; the sidecar caches a [`Verified`] token and runs
//! [`Verified::check`] again on every hit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{
    ClaimRules, ParsedJws, Rejection, TenantRule, VerifyingKey, check_authorization, check_claims,
    check_revocation, check_signature, check_tenant, decode_claims, parse_compact,
};
use crate::claims::{JwsHeader, TokenClaims, TokenType};
use crate::clock::UnixMillis;
use crate::ids::KeyId;
use crate::keys::{KeySchedule, KeyState};
use crate::revocation::RevocationSet;

/// What the caller requires of a token, beyond its signature.
#[derive(Clone, Debug)]
pub struct Rules<'a> {
    pub claims: ClaimRules<'a>,
    /// The tenants whose tokens the caller may learn about.
    pub tenant: TenantRule<'a>,
    pub required_permissions: &'a [String],
    pub required_role: Option<&'a str>,
}

/// A key of the bundle: its schedule, and the parsed key unless its JWK was unusable.
#[derive(Debug)]
pub struct KeyEntry {
    pub schedule: KeySchedule,
    pub verifying_key: Option<Arc<VerifyingKey>>,
}

impl KeyEntry {
    /// Returns the parsed key if it verifies anything at `now`: a key past its overlap
    /// window verifies nothing (even before the issuer's unpublish message arrives), nor
    /// does one whose JWK could not be parsed.
    pub fn usable_at(&self, now: UnixMillis) -> Result<&Arc<VerifyingKey>, Rejection> {
        if matches!(self.schedule.state_at(now), KeyState::Retired { .. }) {
            return Err(Rejection::UnknownKid);
        }
        self.verifying_key.as_ref().ok_or(Rejection::UnknownKid)
    }
}

/// The bundle's keys, each parsed once.
#[derive(Debug, Default)]
pub struct Verifier {
    keys: HashMap<String, KeyEntry>,
}

/// A token whose signature verified, with its claims decoded.
pub struct Verified<C> {
    pub kid: String,
    pub header: JwsHeader,
    /// The type the header `typ` names (checked against the claims and the key later).
    pub token_type: TokenType,
    pub claims: C,
    /// The claims object exactly as signed.
    pub claims_json: String,
    /// The key that verified the signature; a cached verification is only trusted while
    /// the bundle still holds this very key.
    pub verifying_key: Arc<VerifyingKey>,
}

impl<C> std::fmt::Debug for Verified<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Claims identify users: keep them out of logs.
        f.debug_struct("Verified")
            .field("kid", &self.kid)
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

// === impl Verifier ===

impl Verifier {
    /// Parses `keys`, reusing the parsed keys of `previous` whose schedule did not change
    /// (a bundle revision usually touches one key or none).
    pub fn build(keys: &BTreeMap<KeyId, KeySchedule>, previous: Option<&Verifier>) -> Self {
        let keys = keys
            .iter()
            .map(|(kid, schedule)| {
                let reused = previous
                    .and_then(|previous| previous.keys.get(kid.as_str()))
                    .filter(|entry| entry.schedule == *schedule && entry.verifying_key.is_some());
                let verifying_key = match reused {
                    Some(entry) => entry.verifying_key.clone(),
                    None => parse(schedule),
                };
                let entry = KeyEntry {
                    schedule: schedule.clone(),
                    verifying_key,
                };
                (kid.as_str().to_owned(), entry)
            })
            .collect();
        Verifier { keys }
    }

    /// Returns the key `kid`, if the bundle holds it.
    pub fn key(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
    }

    /// Runs the whole pipeline on `token` at `now`.
    pub fn verify<C: TokenClaims>(
        &self,
        token: &str,
        rules: &Rules<'_>,
        revocations: &RevocationSet,
        now: UnixMillis,
    ) -> Result<Verified<C>, Rejection> {
        let jws = parse_compact(token)?;
        let kid = jws.header.kid.as_deref().ok_or(Rejection::Malformed)?;
        let key = self.key(kid).ok_or(Rejection::UnknownKid)?.usable_at(now)?;
        let verified = authenticate::<C>(&jws, kid, key)?;
        verified.check(rules, revocations, now)?;
        Ok(verified)
    }
}

fn parse(schedule: &KeySchedule) -> Option<Arc<VerifyingKey>> {
    match VerifyingKey::from_schedule(schedule) {
        Ok(key) => Some(Arc::new(key)),
        Err(error) => {
            tracing::warn!(%error, "published key is unusable; its tokens will be refused");
            None
        }
    }
}

/// Checks the signature of `jws` under `key` (the key of `kid`) and decodes its claims:
/// the part of the pipeline that depends only on the token and the key, so its result
/// may be cached.
pub fn authenticate<C: TokenClaims>(
    jws: &ParsedJws<'_>,
    kid: &str,
    key: &Arc<VerifyingKey>,
) -> Result<Verified<C>, Rejection> {
    check_signature(jws, key)?;
    let decoded = decode_claims::<C>(jws)?;
    Ok(Verified {
        kid: kid.to_owned(),
        header: jws.header.clone(),
        token_type: decoded.token_type,
        claims: decoded.claims,
        claims_json: decoded.claims_json,
        verifying_key: key.clone(),
    })
}

// === impl Verified ===

impl<C: TokenClaims> Verified<C> {
    /// Runs the checks that follow the signature, in order: the tenant, the claims, the
    /// revocation entries and the key's own revocation, permissions and role. Everything
    /// here depends on `now` or on the caller, so it runs on every cache hit too.
    pub fn check(
        &self,
        rules: &Rules<'_>,
        revocations: &RevocationSet,
        now: UnixMillis,
    ) -> Result<(), Rejection> {
        let registered = self.claims.registered();
        // First: a caller must not learn whether another tenant's token is expired or
        // revoked.
        check_tenant(registered.tenant_id, rules.tenant)?;
        check_claims(
            self.token_type,
            registered,
            &self.verifying_key,
            &rules.claims,
            now,
        )?;
        check_revocation(&self.claims, &self.kid, &self.verifying_key, revocations)?;
        check_authorization(
            &self.claims,
            rules.required_permissions,
            rules.required_role,
        )
    }
}

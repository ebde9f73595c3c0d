//! `ValidateOpaqueToken` at the sidecar: service tokens (`tbs_`) and webhook tokens
//! (`tbw_`), with the machinery of [`crate::apikeys`] minus rate limits. Shape and
//! checksum are checked locally (a typo never leaves the pod); the first sight is
//! verified by `ServiceTokenService.ValidateServiceToken` with no requirements (one call
//! for concurrent first sights); the answer is cached for the credential cache TTL, never
//! past the token's expiry, and dropped on the token's pushed change, its tenant's
//! emergency revocation or a snapshot; permissions, role and subject are checked locally.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::credential::CredentialKind;
use tessera_common::{Clock, UnixMillis};
use tessera_proto::v1 as pb;
use tonic::Status;

use crate::apikeys::{NEGATIVE_TTL, unavailable};
use crate::convert::millis;
use crate::credcache::{CredentialCache, Entry, Purges, bounded_ttl};
use crate::credential_request::{Shape, check_bounds, satisfies, shape};
use crate::issuer_client::IssuerClient;
use crate::metrics;

/// The cached answer about one token.
// Lives behind the cache's `Arc`, built once and never moved: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TokenAnswer {
    Valid {
        info: pb::OpaqueTokenInfo,
        expires_at: Option<UnixMillis>,
    },
    Refused(pb::OpaqueTokenRefusal),
}

/// The opaque-token validator.
#[derive(Debug)]
pub struct OpaqueTokens {
    cache: Arc<CredentialCache<TokenAnswer>>,
    issuer: IssuerClient,
    ttl: Duration,
}

impl OpaqueTokens {
    /// Returns a validator caching answers for `ttl`.
    pub fn new(
        issuer: IssuerClient,
        purges: Arc<Purges>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        OpaqueTokens {
            cache: CredentialCache::new(purges, clock),
            issuer,
            ttl,
        }
    }

    /// Answers one `ValidateOpaqueToken`.
    pub async fn validate(
        &self,
        request: &pb::ValidateOpaqueTokenRequest,
    ) -> Result<pb::ValidateOpaqueTokenResponse, Status> {
        check_bounds(
            &request.token,
            &request.required_permissions,
            &[
                ("required_role", &request.required_role),
                ("required_subject", &request.required_subject),
            ],
        )?;
        let text = request.token.trim();
        let (kind, token_id) =
            match shape(text, &[CredentialKind::Service, CredentialKind::Webhook]) {
                Shape::Ok { kind, id } => (kind, id),
                Shape::Malformed => return Ok(local(pb::OpaqueTokenRefusal::Malformed)),
                Shape::BadChecksum => return Ok(local(pb::OpaqueTokenRefusal::BadChecksum)),
            };
        let found = self
            .cache
            .get_or_fetch(
                text,
                token_id,
                |entry, now| match &entry.value {
                    TokenAnswer::Valid { expires_at, .. } => {
                        expires_at.is_none_or(|expires_at| now < expires_at)
                    }
                    TokenAnswer::Refused(_) => true,
                },
                |now| self.fetch(text, token_id, now),
            )
            .await?;
        let source = if found.fetched_here {
            "issuer"
        } else {
            "cache"
        };
        metrics::record_credential_validation(kind.name(), source);
        let info = match &found.entry.value {
            TokenAnswer::Refused(refusal) => return Ok(refused(*refusal)),
            TokenAnswer::Valid { info, .. } => info,
        };
        let subject_matches =
            request.required_subject.is_empty() || request.required_subject == info.subject;
        if !subject_matches
            || !satisfies(
                &info.permissions,
                &info.role,
                &request.required_permissions,
                &request.required_role,
            )
        {
            return Ok(refused(pb::OpaqueTokenRefusal::InsufficientPermissions));
        }
        Ok(pb::ValidateOpaqueTokenResponse {
            valid: true,
            refusal: pb::OpaqueTokenRefusal::Unspecified as i32,
            info: Some(info.clone()),
        })
    }

    /// Asks the issuer about `text` (a first sight), at `now` on the sidecar's clock.
    async fn fetch(
        &self,
        text: &str,
        token_id: &str,
        now: UnixMillis,
    ) -> Result<Entry<TokenAnswer>, Status> {
        let request = pb::ValidateOpaqueTokenRequest {
            token: text.to_owned(),
            ..Default::default()
        };
        let response = self
            .issuer
            .validate_service_token(request)
            .await
            .map_err(|status| unavailable(&status))?;
        let info = match response.info {
            Some(info) if response.valid => info,
            _ => {
                let refusal = pb::OpaqueTokenRefusal::try_from(response.refusal)
                    .unwrap_or(pb::OpaqueTokenRefusal::Unknown);
                let ttl = match refusal {
                    pb::OpaqueTokenRefusal::Unknown
                    | pb::OpaqueTokenRefusal::Revoked
                    | pb::OpaqueTokenRefusal::Expired => NEGATIVE_TTL,
                    _ => Duration::ZERO,
                };
                return Ok(Entry {
                    value: TokenAnswer::Refused(refusal),
                    credential_id: token_id.to_owned(),
                    tenant_id: None,
                    verified_at: now,
                    ttl,
                });
            }
        };
        let expires_at = info.expires_at.as_ref().map(millis);
        Ok(Entry {
            credential_id: token_id.to_owned(),
            tenant_id: Some(info.tenant_id.clone()),
            verified_at: now,
            ttl: bounded_ttl(now, self.ttl, &[expires_at]),
            value: TokenAnswer::Valid { info, expires_at },
        })
    }
}

fn local(refusal: pb::OpaqueTokenRefusal) -> pb::ValidateOpaqueTokenResponse {
    metrics::record_credential_validation("opaque_token", "local");
    refused(refusal)
}

fn refused(refusal: pb::OpaqueTokenRefusal) -> pb::ValidateOpaqueTokenResponse {
    pb::ValidateOpaqueTokenResponse {
        valid: false,
        refusal: refusal as i32,
        info: None,
    }
}

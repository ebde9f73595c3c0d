//! `AdminService/RevokeLeakedCredentials`: revokes credentials found leaked (by
//! `tessera-issuer scan --revoke`). Each presented credential is verified as if it were
//! being used — parsed (prefix, shape, checksum), its record found by id, its secret
//! compared in constant time under the record's pepper — so only someone holding the
//! credential can revoke it, never someone who knows an id. A record outside a confined
//! caller's tenants gets the answer a record that does not exist would get.
//!
//! What each kind that has records today becomes:
//! - a caller credential (`tbc_`, or `tbk_` of a client created before `tbc_`): its client
//!   is disabled (audited `client.disable`), as `DisableClient` does;
//! - a refresh token (`tbf_`): its family is revoked (audited `revoke.family`, and the
//!   entry reaches every sidecar, so the family's access tokens die too), as refresh-token
//!   reuse does;
//! - a tenant API key (`tbk_`): revoked as `RevokeApiKey` does (audited `api_key.revoke`);
//! - a service token (`tbs_`) or webhook token (`tbw_`): revoked as `RevokeServiceToken`
//!   and `RevokeWebhookToken` do (audited `service.token.revoked` /
//!   `webhook.token.revoked`, pushed to sidecars); an expired or revoked one is
//!   `already_dead`.

use tessera_common::credential::{Credential, CredentialKind, MAX_CREDENTIAL_BYTES};
use tessera_common::ids::ClientId;
use tessera_common::limits::MAX_LIST_ENTRIES;
use tessera_proto::v1 as pb;
use tonic::Status;
use tracing::info;

use super::super::api_key_service::from_api_key;
use super::super::service_token_service::from_opaque_token;
use super::super::status::{from_session, from_store};
use crate::api_keys::ApiKeyError;
use crate::app::App;
use crate::audit::{Actor, AuditAction};
use crate::auth::Caller;
use crate::opaque_tokens::OpaqueTokenError;
use crate::sessions::service::RevocationTarget;
use crate::store::{ApiKeyState, OpaqueTokenKind, OpaqueTokenState, RefreshState};

/// Most credentials one request may present.
pub const MAX_LEAKED_CREDENTIALS: usize = MAX_LIST_ENTRIES;

/// Checks the request's size limits before any credential is looked at.
pub fn check_limits(message: &pb::RevokeLeakedCredentialsRequest) -> Result<(), Status> {
    if message.credentials.is_empty() {
        return Err(Status::invalid_argument("credentials: at least one"));
    }
    if message.credentials.len() > MAX_LEAKED_CREDENTIALS {
        return Err(Status::invalid_argument(format!(
            "credentials: more than {MAX_LEAKED_CREDENTIALS} entries"
        )));
    }
    if let Some(index) = message
        .credentials
        .iter()
        .position(|credential| credential.len() > MAX_CREDENTIAL_BYTES)
    {
        return Err(Status::invalid_argument(format!(
            "credentials[{index}]: longer than {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    tessera_common::limits::check_text(
        "reason",
        &message.reason,
        tessera_common::limits::MAX_REASON_BYTES,
    )
    .map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Verifies and revokes one presented credential.
pub async fn revoke_one(
    app: &App,
    caller: &Caller,
    actor: &Actor,
    presented: &str,
) -> Result<pb::LeakedCredentialOutcome, Status> {
    let Ok(credential) = Credential::parse(presented) else {
        return Ok(pb::LeakedCredentialOutcome::Unknown);
    };
    match credential.kind {
        CredentialKind::IssuerCaller => {
            revoke_caller(
                app,
                caller,
                actor,
                &credential,
                pb::LeakedCredentialOutcome::Unknown,
            )
            .await
        }
        // A tbk_ credential is a tenant API key, or the caller credential of a client
        // created before tbc_ existed: the client is looked for first (ids of both are
        // random, so they do not collide), then the key.
        CredentialKind::ApiKey => {
            let not_a_client = pb::LeakedCredentialOutcome::Unspecified;
            match revoke_caller(app, caller, actor, &credential, not_a_client).await? {
                outcome if outcome == not_a_client => {
                    revoke_api_key(app, caller, actor, &credential).await
                }
                outcome => Ok(outcome),
            }
        }
        CredentialKind::Refresh => revoke_refresh(app, caller, actor, presented).await,
        CredentialKind::Service => {
            revoke_opaque(app, caller, actor, &credential, OpaqueTokenKind::Service).await
        }
        CredentialKind::Webhook => {
            revoke_opaque(app, caller, actor, &credential, OpaqueTokenKind::Webhook).await
        }
    }
}

/// Revokes the service or webhook token `credential`, as `RevokeServiceToken` and
/// `RevokeWebhookToken` do (audited, the change pushed to sidecars).
async fn revoke_opaque(
    app: &App,
    caller: &Caller,
    actor: &Actor,
    credential: &Credential,
    kind: OpaqueTokenKind,
) -> Result<pb::LeakedCredentialOutcome, Status> {
    let record = match app.opaque_tokens.get(kind, &credential.id, |_| true).await {
        Ok(record) => record,
        Err(OpaqueTokenError::NotFound(_)) => return Ok(pb::LeakedCredentialOutcome::Unknown),
        Err(error) => return Err(from_opaque_token(error)),
    };
    if !app.auth.credentials().verify(credential, &record).await
        || !caller.may_act_on(record.tenant_id.as_str())
    {
        return Ok(pb::LeakedCredentialOutcome::Unknown);
    }
    if record.state != OpaqueTokenState::Active || record.expires_at <= app.now() {
        return Ok(pb::LeakedCredentialOutcome::AlreadyDead);
    }
    match app
        .opaque_tokens
        .revoke(actor, kind, &record.token_id, |_| true)
        .await
    {
        Ok(_) => {
            info!(token_id = %record.token_id, kind = kind.as_str(), "leaked opaque token revoked");
            Ok(pb::LeakedCredentialOutcome::Revoked)
        }
        // Revoked meanwhile (a concurrent revocation or confirmation won).
        Err(OpaqueTokenError::FailedPrecondition(_)) => {
            Ok(pb::LeakedCredentialOutcome::AlreadyDead)
        }
        Err(error) => Err(from_opaque_token(error)),
    }
}

/// Disables the client `credential` authenticates as. `not_found` is the answer for no
/// such client (and so for a client the caller may not see).
async fn revoke_caller(
    app: &App,
    caller: &Caller,
    actor: &Actor,
    credential: &Credential,
    not_found: pb::LeakedCredentialOutcome,
) -> Result<pb::LeakedCredentialOutcome, Status> {
    let Ok(client_id) = ClientId::new(credential.id.clone()) else {
        return Ok(not_found);
    };
    let Some(record) = app.store.client(&client_id).await.map_err(from_store)? else {
        return Ok(not_found);
    };
    if !app.auth.credentials().verify(credential, &record).await
        || !caller.covers_tenants(&record.tenants)
    {
        return Ok(not_found);
    }
    let now = app.now();
    if record.disabled_at.is_some_and(|at| at <= now) {
        return Ok(pb::LeakedCredentialOutcome::AlreadyDead);
    }
    let audit = actor.entry(now, AuditAction::ClientDisable, client_id.to_string());
    app.store
        .disable_client(&client_id, now, audit)
        .await
        .map_err(from_store)?;
    app.auth.forget(&client_id).await;
    info!(client_id = %client_id, "leaked caller credential revoked: client disabled");
    Ok(pb::LeakedCredentialOutcome::Revoked)
}

/// Revokes the tenant API key `credential`, as `RevokeApiKey` does (audited
/// `api_key.revoke`, the change pushed to sidecars).
async fn revoke_api_key(
    app: &App,
    caller: &Caller,
    actor: &Actor,
    credential: &Credential,
) -> Result<pb::LeakedCredentialOutcome, Status> {
    let record = match app.api_keys.get(&credential.id, |_| true).await {
        Ok(record) => record,
        Err(ApiKeyError::NotFound) => return Ok(pb::LeakedCredentialOutcome::Unknown),
        Err(error) => return Err(from_api_key(error)),
    };
    if !app.auth.credentials().verify(credential, &record).await
        || !caller.may_act_on(record.tenant_id.as_str())
    {
        return Ok(pb::LeakedCredentialOutcome::Unknown);
    }
    let now = app.now();
    let dead = match record.state {
        ApiKeyState::Revoked | ApiKeyState::Expired => true,
        ApiKeyState::Rotated => record.grace_until.is_none_or(|until| until <= now),
        ApiKeyState::Active => false,
    } || record.expires_at <= now;
    if dead {
        return Ok(pb::LeakedCredentialOutcome::AlreadyDead);
    }
    match app.api_keys.revoke(actor, &record.key_id, |_| true).await {
        Ok(_) => {
            info!(key_id = %record.key_id, "leaked api key revoked");
            Ok(pb::LeakedCredentialOutcome::Revoked)
        }
        // Revoked or expired meanwhile (a concurrent revocation won).
        Err(ApiKeyError::NotActive(_)) => Ok(pb::LeakedCredentialOutcome::AlreadyDead),
        Err(error) => Err(from_api_key(error)),
    }
}

/// Revokes the family of the refresh token `presented`.
async fn revoke_refresh(
    app: &App,
    caller: &Caller,
    actor: &Actor,
    presented: &str,
) -> Result<pb::LeakedCredentialOutcome, Status> {
    let Some((token, session)) = app
        .sessions
        .inspect(presented)
        .await
        .map_err(from_session)?
    else {
        return Ok(pb::LeakedCredentialOutcome::Unknown);
    };
    if !caller.may_act_on(session.tenant_id.as_str()) {
        return Ok(pb::LeakedCredentialOutcome::Unknown);
    }
    let now = app.now();
    // A rotated token of a live family still counts as live: its family is compromised
    // (and presenting it would be reuse), so the family is revoked.
    let dead = matches!(token.state, RefreshState::Revoked { .. })
        || token.expires_at <= now
        || session.revoked_at.is_some_and(|at| at <= now)
        || session.expires_at.is_some_and(|at| at <= now);
    if dead {
        return Ok(pb::LeakedCredentialOutcome::AlreadyDead);
    }
    app.sessions
        .revoke(
            RevocationTarget::Family(token.family_id.clone()),
            Some(session.tenant_id.clone()),
            actor,
        )
        .await
        .map_err(from_session)?;
    info!(family_id = %token.family_id, "leaked refresh token revoked: family revoked");
    Ok(pb::LeakedCredentialOutcome::Revoked)
}

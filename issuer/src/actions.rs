//! Single-use tokens (issue 11, DESIGN §4): signed action links (`tba_`), password-reset
//! (`tbr_`) and email-verification (`tbe_`) tokens, all JWS of the `action` key set with
//! the seed's `ThorbisActionToken` claims and a single-use record in the store.
//!
//! Consumption runs in a fixed order, and the order is the contract:
//! 1. the token's prefix and size, then the one verification pipeline of
//!    `tessera_common::verify` (signature, typ/token_type/key set, tenant the caller may
//!    see, iss/aud/exp/nbf, revocation) — a forgery never reaches the store;
//! 2. what the consumer asserts: action, resource, client IP in the allowlist, user-agent
//!    hash (constant-time);
//! 3. two-step actions: without a confirmation token the first call only mints one
//!    (short-lived, bound to this token's jti) and consumes nothing; the second call
//!    presents both and consumes both;
//! 4. the store's ONE conditional write: of any number of concurrent consumers on any
//!    replica exactly one gets `Consumed`; the others learn why (already used,
//!    invalidated, unknown).
//!
//! Each refusal is a typed [`Refusal`]; details go to logs and the
//! `tessera_auth_validation_attempt_total{outcome}` counter.
//!
//! A completed password reset records the change (later access tokens carry it as
//! `last_password_change`) and revokes the user's tokens issued before it through the
//! ordinary user revocation (DESIGN §5), which also ends their sessions.

pub mod binding;
pub mod consumption;
pub mod lifetimes;
pub mod token;

use consumption::binds;
pub use consumption::{Refusal, check_presented};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::claims::{ActionClaims, TokenType};
use tessera_common::ids::{Subject, TenantId};
use tessera_common::limits::MAX_TOKEN_BYTES;
use tessera_common::verify::{ClaimRules, Rules, TenantRule};
use tessera_common::{Clock, UnixMillis};
use tracing::{info, warn};

use crate::audit::{Actor, AuditAction};
use crate::hub::BundleHub;
use crate::keys::KeyManager;
use crate::keys::manager::KeyError;
use crate::keys::signer::SignError;
use crate::sessions::SessionService;
use crate::sessions::service::{RevocationTarget, SessionError};
use crate::store::{
    ActionSettingsRecord, Consumption, OneTimeKind, OneTimeTokenRecord, OneTimeTokenStore,
    StoreError,
};
use crate::tokens::TokenPolicy;

use self::lifetimes::LifetimeOutOfBounds;
use self::token::{BadInput, CONFIRMS_PARAM, TokenContent};

/// The action name of password-reset tokens.
pub const RESET_ACTION: &str = "reset_password";
/// The action name of email-verification tokens.
pub const VERIFY_EMAIL_ACTION: &str = "verify_email";

/// Why a request could not be served (as opposed to a token refused).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    InvalidArgument(#[from] BadInput),
    #[error(transparent)]
    Lifetime(#[from] LifetimeOutOfBounds),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A request for an action link (validated at the edge by [`ActionLinkRequest::check`]).
#[derive(Clone, Debug)]
pub struct ActionLinkRequest {
    pub tenant_id: TenantId,
    pub user_id: String,
    pub action: String,
    pub resource_id: String,
    pub params: BTreeMap<String, String>,
    pub expires_in: Option<Duration>,
    pub requires_confirmation: bool,
    pub ip_allowlist: Vec<String>,
    pub user_agent: Option<String>,
}

impl ActionLinkRequest {
    /// Checks every caller-supplied field against its bound.
    pub fn check(&self) -> Result<(), BadInput> {
        token::check_action(&self.action)?;
        token::check_id("user_id", &self.user_id)?;
        token::check_id("resource_id", &self.resource_id)?;
        token::check_params(&self.params)?;
        token::check_allowlist(&self.ip_allowlist)?;
        if let Some(user_agent) = &self.user_agent {
            token::check_user_agent(user_agent)?;
        }
        Ok(())
    }
}

/// A minted token. `Debug` leaves the token and the URL (which carries it) out.
#[derive(Clone)]
pub struct MintedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: UnixMillis,
    /// The link, when the tenant has a base URL.
    pub url: Option<String>,
    /// Older tokens this one superseded (password reset).
    pub n_superseded: u64,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("n_superseded", &self.n_superseded)
            .finish_non_exhaustive()
    }
}

/// What a consumer presents with a token.
#[derive(Clone, Debug, Default)]
pub struct Presented<'a> {
    pub action: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub confirmation_token: Option<&'a str>,
}

/// The result of a consumption.
#[derive(Debug)]
pub enum Consumed {
    /// Consumed now, by this call.
    Done(Box<ActionClaims>),
    /// A two-step action's first step: nothing consumed; present this confirmation token
    /// together with the original to complete.
    ConfirmationRequired(Box<ActionClaims>, MintedToken),
    /// Refused; the claims when the token's signature verified.
    Refused(Refusal, Option<Box<ActionClaims>>),
}

/// Where an inspected token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Live,
    Used,
    Invalidated,
    Unknown,
}

/// How long a replica trusts its cached answer to "when did this user last change their
/// password" (a change made through another replica shows in later tokens after at most
/// this long; one made through this replica at once). The revocation of the user's
/// earlier tokens does not depend on it: that is a pushed revocation entry.
const PASSWORD_CHANGE_CACHE_TTL: Duration = Duration::from_secs(2);
/// How long past its expiry a single-use record is kept before the scheduler deletes it.
/// Past expiry plus the verifiers' leeway the token fails its own `exp` check before its
/// record is read, so an hour is ample, and the table holds at most the live tokens plus
/// an hour of expired ones.
pub const PRUNE_AFTER: Duration = Duration::from_secs(3_600);
/// Most users whose password-change instant a replica caches.
const PASSWORD_CHANGE_CACHE_ENTRIES: u64 = 100_000;

/// Issues and consumes single-use tokens.
pub struct ActionLinks {
    store: Arc<dyn OneTimeTokenStore>,
    /// (tenant, user) → last recorded password change, for `last_password_change`.
    password_changes: moka::future::Cache<(String, String), Option<UnixMillis>>,
    keys: Arc<KeyManager>,
    hub: Arc<BundleHub>,
    sessions: Arc<SessionService>,
    tokens: TokenPolicy,
    clock: Arc<dyn Clock>,
}

// === impl ActionLinks ===

impl ActionLinks {
    pub fn new(
        store: Arc<dyn OneTimeTokenStore>,
        keys: Arc<KeyManager>,
        hub: Arc<BundleHub>,
        sessions: Arc<SessionService>,
        tokens: TokenPolicy,
        clock: Arc<dyn Clock>,
    ) -> ActionLinks {
        ActionLinks {
            store,
            password_changes: moka::future::Cache::builder()
                .max_capacity(PASSWORD_CHANGE_CACHE_ENTRIES)
                .time_to_live(PASSWORD_CHANGE_CACHE_TTL)
                .build(),
            keys,
            hub,
            sessions,
            tokens,
            clock,
        }
    }

    /// Returns the store (the emergency paths invalidate through it).
    pub fn store(&self) -> &Arc<dyn OneTimeTokenStore> {
        &self.store
    }

    /// Returns the `last_password_change` (seconds) an access token of `user_id` issued
    /// now carries: the later of what the caller says and the change recorded by a
    /// completed password reset.
    pub async fn last_password_change(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
        stated: i64,
    ) -> Result<i64, ActionError> {
        let key = (tenant_id.as_str().to_owned(), user_id.to_owned());
        let recorded = match self.password_changes.get(&key).await {
            Some(recorded) => recorded,
            None => {
                let recorded = self.store.password_changed_at(tenant_id, user_id).await?;
                self.password_changes.insert(key, recorded).await;
                recorded
            }
        };
        Ok(recorded.map_or(stated, |changed_at| stated.max(changed_at.as_secs())))
    }

    /// Deletes the single-use records that expired more than [`PRUNE_AFTER`] ago (used,
    /// invalidated or not); returns how many. Run by the scheduler.
    pub async fn prune(&self) -> Result<u64, ActionError> {
        let before = self.clock.now().minus(PRUNE_AFTER);
        let n_pruned = self.store.prune_one_time_tokens(before).await?;
        if n_pruned > 0 {
            info!(n_pruned, "expired single-use token records pruned");
        }
        Ok(n_pruned)
    }

    /// Returns the longest lifetime verifiers accept for `token_type`.
    pub fn max_lifetime(&self, token_type: TokenType) -> Duration {
        self.hub.current().policy.max_lifetime(token_type)
    }

    /// Mints an action link.
    pub async fn create_link(
        &self,
        request: ActionLinkRequest,
    ) -> Result<MintedToken, ActionError> {
        request.check()?;
        let settings = self.store.action_settings(&request.tenant_id).await?;
        let lifetime = lifetimes::resolve(
            &request.action,
            request.expires_in,
            settings.as_ref().map(|settings| &settings.lifetimes),
            self.max_lifetime(TokenType::Action),
        )?;
        let content = TokenContent {
            token_type: TokenType::Action,
            tenant_id: request.tenant_id.as_str().to_owned(),
            user_id: request.user_id,
            action: request.action,
            resource_id: request.resource_id,
            params: request.params,
            ip_allowlist: request.ip_allowlist,
            user_agent: request.user_agent,
            confirmation_required: request.requires_confirmation,
        };
        self.mint(
            &content,
            OneTimeKind::Action,
            lifetime,
            settings.as_ref(),
            None,
            None,
        )
        .await
    }

    /// Mints a password-reset token for `user_id`, invalidating the user's older ones.
    pub async fn issue_reset(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
        expires_in: Option<Duration>,
        actor: &Actor,
    ) -> Result<MintedToken, ActionError> {
        token::check_id("user_id", user_id)?;
        let settings = self.store.action_settings(tenant_id).await?;
        let lifetime = lifetimes::resolve(
            lifetimes::PASSWORD_RESET,
            expires_in,
            settings.as_ref().map(|settings| &settings.lifetimes),
            self.max_lifetime(TokenType::Reset),
        )?;
        let content = fixed_content(TokenType::Reset, tenant_id, user_id, RESET_ACTION, user_id);
        let audit = actor.entry(
            self.clock.now(),
            AuditAction::PasswordResetIssue,
            format!("{tenant_id}/{user_id}"),
        );
        self.mint(
            &content,
            OneTimeKind::Reset,
            lifetime,
            settings.as_ref(),
            None,
            Some(audit),
        )
        .await
    }

    /// Mints an email-verification token binding `user_id` to `email`.
    pub async fn issue_verification(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
        email: &str,
        expires_in: Option<Duration>,
    ) -> Result<MintedToken, ActionError> {
        token::check_id("user_id", user_id)?;
        token::check_id("email", email)?;
        let settings = self.store.action_settings(tenant_id).await?;
        let lifetime = lifetimes::resolve(
            lifetimes::EMAIL_VERIFICATION,
            expires_in,
            settings.as_ref().map(|settings| &settings.lifetimes),
            self.max_lifetime(TokenType::Verification),
        )?;
        let content = fixed_content(
            TokenType::Verification,
            tenant_id,
            user_id,
            VERIFY_EMAIL_ACTION,
            email,
        );
        self.mint(
            &content,
            OneTimeKind::Verification,
            lifetime,
            settings.as_ref(),
            None,
            None,
        )
        .await
    }

    /// Consumes an action link (see the module header for the order of checks).
    pub async fn consume_link(
        &self,
        token: &str,
        presented: &Presented<'_>,
        may_see_tenant: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Consumed, ActionError> {
        let claims = match self.verify(token, TokenType::Action, may_see_tenant) {
            Ok(claims) => claims,
            Err(refusal) => return Ok(refused(refusal, None)),
        };
        if claims.params.contains_key(CONFIRMS_PARAM) {
            // A confirmation token is presented beside its link, never instead of it.
            return Ok(refused(Refusal::ConfirmationInvalid, Some(claims)));
        }
        if let Some(refusal) = check_presented(&claims, presented) {
            return Ok(refused(refusal, Some(claims)));
        }
        let tenant_id = tenant_of(&claims)?;
        let confirmation_jti = match (claims.confirmation_required, presented.confirmation_token) {
            (false, None) => None,
            (false, Some(_)) => {
                return Ok(refused(Refusal::ConfirmationInvalid, Some(claims)));
            }
            (true, None) => return self.first_step(claims, &tenant_id).await,
            (true, Some(confirmation)) => {
                match self.verify(confirmation, TokenType::Action, may_see_tenant) {
                    Ok(confirmation) if binds(&confirmation, &claims) => Some(confirmation.jti),
                    Ok(_) => return Ok(refused(Refusal::ConfirmationInvalid, Some(claims))),
                    Err(refusal) => {
                        let refusal = match refusal {
                            Refusal::Expired => Refusal::Expired,
                            _ => Refusal::ConfirmationInvalid,
                        };
                        return Ok(refused(refusal, Some(claims)));
                    }
                }
            }
        };
        let consumption = self
            .store
            .consume_one_time_token(
                &tenant_id,
                OneTimeKind::Action,
                &claims.jti,
                confirmation_jti.as_deref(),
                self.clock.now(),
            )
            .await?;
        Ok(settle(consumption, claims))
    }

    /// Completes a password reset: consumes the `tbr_` token, records the change, then
    /// revokes every token of the user issued before it (ending their sessions).
    pub async fn complete_reset(
        &self,
        token: &str,
        may_see_tenant: &(dyn Fn(&str) -> bool + Sync),
        actor: &Actor,
    ) -> Result<Consumed, ActionError> {
        let claims = match self.verify(token, TokenType::Reset, may_see_tenant) {
            Ok(claims) => claims,
            Err(refusal) => return Ok(refused(refusal, None)),
        };
        let tenant_id = tenant_of(&claims)?;
        let now = self.clock.now();
        let audit = actor.entry(
            now,
            AuditAction::PasswordChange,
            format!("{tenant_id}/{}", claims.user_id),
        );
        let consumption = self
            .store
            .complete_password_reset(&tenant_id, &claims.user_id, &claims.jti, now, audit)
            .await?;
        if consumption != Consumption::Consumed {
            return Ok(settle(consumption, claims));
        }
        self.password_changes
            .insert(
                (tenant_id.as_str().to_owned(), claims.user_id.clone()),
                Some(now),
            )
            .await;
        let subject = Subject::new(claims.user_id.clone()).map_err(|error| BadInput {
            field: "user_id",
            problem: error.to_string(),
        })?;
        let revoked = self
            .sessions
            .revoke(
                RevocationTarget::User(subject),
                Some(tenant_id.clone()),
                &actor.with_reason("password changed through a reset".to_owned()),
            )
            .await?;
        info!(tenant_id = %tenant_id, n_sessions = revoked.n_sessions, "password reset completed; earlier tokens revoked");
        Ok(Consumed::Done(Box::new(claims)))
    }

    /// Consumes an email-verification token (for `email` when given).
    pub async fn consume_verification(
        &self,
        token: &str,
        email: Option<&str>,
        may_see_tenant: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Consumed, ActionError> {
        let claims = match self.verify(token, TokenType::Verification, may_see_tenant) {
            Ok(claims) => claims,
            Err(refusal) => return Ok(refused(refusal, None)),
        };
        if email.is_some_and(|email| email != claims.resource_id) {
            return Ok(refused(Refusal::WrongResource, Some(claims)));
        }
        let tenant_id = tenant_of(&claims)?;
        let consumption = self
            .store
            .consume_one_time_token(
                &tenant_id,
                OneTimeKind::Verification,
                &claims.jti,
                None,
                self.clock.now(),
            )
            .await?;
        Ok(settle(consumption, claims))
    }

    /// Verifies a token of any of the three kinds (told by its prefix) and reads its
    /// record's state, consuming nothing.
    pub async fn inspect(
        &self,
        token: &str,
        may_see_tenant: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Result<(ActionClaims, TokenState), Refusal>, ActionError> {
        let token_type = [TokenType::Reset, TokenType::Verification]
            .into_iter()
            .find(|token_type| token::strip_prefix(token, *token_type).is_some())
            .unwrap_or(TokenType::Action);
        let claims = match self.verify(token, token_type, may_see_tenant) {
            Ok(claims) => claims,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let tenant_id = tenant_of(&claims)?;
        let record = self.store.one_time_token(&tenant_id, &claims.jti).await?;
        let state = match record {
            None => TokenState::Unknown,
            Some(record) if record.invalidated_at.is_some() => TokenState::Invalidated,
            Some(record) if record.used_at.is_some() => TokenState::Used,
            Some(_) => TokenState::Live,
        };
        Ok(Ok((claims, state)))
    }

    /// Returns a tenant's settings.
    pub async fn settings(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<ActionSettingsRecord>, ActionError> {
        Ok(self.store.action_settings(tenant_id).await?)
    }

    /// Replaces a tenant's base URL and lifetime overrides (each override checked against
    /// the published bound of its token type).
    pub async fn put_settings(
        &self,
        tenant_id: TenantId,
        base_url: &str,
        overrides: BTreeMap<String, u32>,
        actor: &Actor,
    ) -> Result<ActionSettingsRecord, ActionError> {
        let base_url = if base_url.is_empty() {
            String::new()
        } else {
            token::normalize_base_url(base_url)?
        };
        if overrides.len() > lifetimes::MAX_OVERRIDES {
            return Err(BadInput {
                field: "lifetimes",
                problem: format!("more than {} entries", lifetimes::MAX_OVERRIDES),
            }
            .into());
        }
        for (name, seconds) in &overrides {
            token::check_action(name)?;
            let token_type = match name.as_str() {
                lifetimes::PASSWORD_RESET => TokenType::Reset,
                lifetimes::EMAIL_VERIFICATION => TokenType::Verification,
                _ => TokenType::Action,
            };
            lifetimes::check(
                name,
                Duration::from_secs(u64::from(*seconds)),
                self.max_lifetime(token_type),
            )?;
        }
        let now = self.clock.now();
        let settings = ActionSettingsRecord {
            tenant_id: tenant_id.clone(),
            base_url,
            lifetimes: overrides,
            updated_at: now,
        };
        let audit = actor.entry(now, AuditAction::ActionSettingsSet, tenant_id.as_str());
        self.store
            .put_action_settings(settings.clone(), audit)
            .await?;
        Ok(settings)
    }

    // --- private ---

    /// Signs `content`, records it, and builds its link.
    async fn mint(
        &self,
        content: &TokenContent,
        kind: OneTimeKind,
        lifetime: Duration,
        settings: Option<&ActionSettingsRecord>,
        parent_jti: Option<String>,
        audit: Option<crate::audit::AuditEntry>,
    ) -> Result<MintedToken, ActionError> {
        let started = Instant::now();
        let now = self.clock.now();
        let signer = self
            .keys
            .signer(tessera_common::keys::KeySetName::Action, now)?;
        let jti = uuid::Uuid::now_v7().to_string();
        let audience = self.tokens.audiences.first().cloned().unwrap_or_default();
        let claims = token::build_claims(
            content,
            &self.tokens.issuer,
            &audience,
            jti.clone(),
            now,
            lifetime,
        );
        let jws = signer.sign_jws(content.token_type.jws_typ(), &claims)?;
        let token = format!("{}{jws}", token::prefix(content.token_type));
        let record = OneTimeTokenRecord {
            jti: jti.clone(),
            kind,
            tenant_id: TenantId::new(content.tenant_id.clone()).map_err(|error| BadInput {
                field: "tenant_id",
                problem: error.to_string(),
            })?,
            user_id: content.user_id.clone(),
            action: content.action.clone(),
            resource_id: content.resource_id.clone(),
            issued_at: now,
            expires_at: UnixMillis::from_secs(claims.exp),
            used_at: None,
            invalidated_at: None,
            invalidation_reason: None,
            parent_jti,
        };
        let n_superseded = self
            .store
            .insert_one_time_token(record, kind == OneTimeKind::Reset, audit)
            .await?;
        let method = match kind {
            OneTimeKind::Reset => "password_reset",
            OneTimeKind::Verification => "email_verification",
            OneTimeKind::Action | OneTimeKind::Confirmation => "action_link",
        };
        metrics::counter!("tessera_token_generation_total", "method" => method).increment(1);
        metrics::histogram!("tessera_token_generation_duration_seconds", "method" => method)
            .record(started.elapsed().as_secs_f64());
        if n_superseded > 0 {
            metrics::counter!("tessera_token_invalidation_total", "reason" => "superseded")
                .increment(n_superseded);
        }
        let url = settings
            .filter(|settings| !settings.base_url.is_empty())
            .map(|settings| {
                token::link(
                    &settings.base_url,
                    &content.action,
                    &token,
                    &content.resource_id,
                    content.confirmation_required,
                )
            });
        Ok(MintedToken {
            token,
            jti,
            expires_at: UnixMillis::from_secs(claims.exp),
            url,
            n_superseded,
        })
    }

    /// The first step of a two-step action: checks the link is still live (a read, to
    /// mint nothing for a dead link; the consumption itself is decided by the second
    /// step's conditional write) and mints a confirmation token bound to it.
    async fn first_step(
        &self,
        claims: ActionClaims,
        tenant_id: &TenantId,
    ) -> Result<Consumed, ActionError> {
        let record = self.store.one_time_token(tenant_id, &claims.jti).await?;
        let refusal = match &record {
            None => Some(Refusal::Unknown),
            Some(record) if record.invalidated_at.is_some() => Some(Refusal::Invalidated),
            Some(record) if record.used_at.is_some() => Some(Refusal::AlreadyUsed),
            Some(record) if record.kind != OneTimeKind::Action => Some(Refusal::Unknown),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            return Ok(refused(refusal, Some(claims)));
        }
        let now = self.clock.now();
        let remaining = Duration::from_millis(
            u64::try_from(claims.exp.saturating_mul(1000).saturating_sub(now.0)).unwrap_or(0),
        );
        let lifetime = lifetimes::CONFIRMATION_LIFETIME.min(remaining);
        if lifetime.is_zero() {
            return Ok(refused(Refusal::Expired, Some(claims)));
        }
        let mut params = BTreeMap::new();
        params.insert(CONFIRMS_PARAM.to_owned(), claims.jti.clone());
        let content = TokenContent {
            token_type: TokenType::Action,
            tenant_id: claims.tenant_id.clone(),
            user_id: claims.user_id.clone(),
            action: claims.action.clone(),
            resource_id: claims.resource_id.clone(),
            params,
            ip_allowlist: claims.ip_allowlist.clone().unwrap_or_default(),
            user_agent: None,
            confirmation_required: false,
        };
        let mut confirmation = self
            .mint(
                &content,
                OneTimeKind::Confirmation,
                lifetime,
                None,
                Some(claims.jti.clone()),
                None,
            )
            .await?;
        confirmation.url = None;
        record_attempt("confirmation_required");
        Ok(Consumed::ConfirmationRequired(
            Box::new(claims),
            confirmation,
        ))
    }

    /// Runs the verification pipeline on a prefixed token of `token_type`.
    fn verify(
        &self,
        token: &str,
        token_type: TokenType,
        may_see_tenant: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<ActionClaims, Refusal> {
        if token.len() > MAX_TOKEN_BYTES + 4 {
            return Err(Refusal::TooLarge);
        }
        let Some(jws) = token::strip_prefix(token, token_type) else {
            let other_kind = [TokenType::Action, TokenType::Reset, TokenType::Verification]
                .into_iter()
                .any(|other| token::strip_prefix(token, other).is_some());
            return Err(if other_kind || token.matches('.').count() == 2 {
                Refusal::WrongTokenType
            } else {
                Refusal::Malformed
            });
        };
        let verification = self.hub.verification();
        let rules = Rules {
            claims: ClaimRules::new(&verification.bundle.policy, token_type),
            tenant: TenantRule::Admitted(may_see_tenant),
            required_permissions: &[],
            required_role: None,
        };
        let now = self.clock.now();
        verification
            .verifier
            .verify::<ActionClaims>(jws, &rules, &verification.bundle.revocations, now)
            .map(|verified| verified.claims)
            .map_err(|rejection| {
                warn!(
                    token_type = token_type.as_str(),
                    reason = rejection.as_str(),
                    "single-use token refused by verification"
                );
                Refusal::from_rejection(rejection)
            })
    }
}

/// Returns the content of a reset or verification token.
fn fixed_content(
    token_type: TokenType,
    tenant_id: &TenantId,
    user_id: &str,
    action: &str,
    resource_id: &str,
) -> TokenContent {
    TokenContent {
        token_type,
        tenant_id: tenant_id.as_str().to_owned(),
        user_id: user_id.to_owned(),
        action: action.to_owned(),
        resource_id: resource_id.to_owned(),
        params: BTreeMap::new(),
        ip_allowlist: Vec::new(),
        user_agent: None,
        confirmation_required: false,
    }
}

fn tenant_of(claims: &ActionClaims) -> Result<TenantId, ActionError> {
    TenantId::new(claims.tenant_id.clone()).map_err(|error| {
        ActionError::InvalidArgument(BadInput {
            field: "tenant_id",
            problem: error.to_string(),
        })
    })
}

fn settle(consumption: Consumption, claims: ActionClaims) -> Consumed {
    match Refusal::from_consumption(consumption) {
        None => {
            record_attempt("success");
            Consumed::Done(Box::new(claims))
        }
        Some(refusal) => refused(refusal, Some(claims)),
    }
}

fn refused(refusal: Refusal, claims: Option<ActionClaims>) -> Consumed {
    record_attempt(refusal.as_str());
    Consumed::Refused(refusal, claims.map(Box::new))
}

fn record_attempt(outcome: &'static str) {
    metrics::counter!("tessera_auth_validation_attempt_total", "outcome" => outcome).increment(1);
}

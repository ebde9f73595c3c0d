//! What a consumption asserts and how a refusal is told: the typed [`Refusal`] (each
//! failure its own reason, mapped once from the verification pipeline's rejections and
//! from the store's answer) and the checks of what the consumer presents (action,
//! resource, IP allowlist, user agent) and of a confirmation's binding to its link. Pure.

use tessera_common::claims::ActionClaims;
use tessera_common::verify::Rejection;

use super::Presented;
use super::binding;
use super::token::CONFIRMS_PARAM;
use crate::store::Consumption;

/// Why a presented token was not consumed (or inspected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    Malformed,
    TooLarge,
    /// Unknown kid, wrong algorithm, bad signature, or a key outside its window.
    BadSignature,
    /// Another kind of token: another prefix, typ, `token_type`, key set, issuer or
    /// audience (an access token presented as an action token lands here).
    WrongTokenType,
    Expired,
    NotYetValid,
    /// Revoked by a user, tenant or global revocation, or its key was revoked.
    Revoked,
    /// The token belongs to a tenant the caller may not act on.
    WrongTenant,
    WrongAction,
    WrongResource,
    IpNotAllowed,
    UserAgentMismatch,
    AlreadyUsed,
    Invalidated,
    /// No record of the token (never issued by this issuer's store, or pruned).
    Unknown,
    /// The confirmation token is missing where needed, not one, or bound to another token.
    ConfirmationInvalid,
}

impl Refusal {
    /// Returns the snake_case name used in metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too_large",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongTokenType => "wrong_token_type",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Revoked => "revoked",
            Refusal::WrongTenant => "wrong_tenant",
            Refusal::WrongAction => "wrong_action",
            Refusal::WrongResource => "wrong_resource",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::UserAgentMismatch => "user_agent_mismatch",
            Refusal::AlreadyUsed => "already_used",
            Refusal::Invalidated => "invalidated",
            Refusal::Unknown => "unknown",
            Refusal::ConfirmationInvalid => "confirmation_invalid",
        }
    }

    /// Returns the refusal a verification-pipeline rejection becomes.
    pub fn from_rejection(rejection: Rejection) -> Refusal {
        match rejection {
            Rejection::Malformed => Refusal::Malformed,
            Rejection::TooLarge => Refusal::TooLarge,
            Rejection::UnknownKid
            | Rejection::AlgorithmMismatch
            | Rejection::BadSignature
            | Rejection::KeyNotActive => Refusal::BadSignature,
            Rejection::Expired => Refusal::Expired,
            Rejection::NotYetValid => Refusal::NotYetValid,
            Rejection::Revoked | Rejection::KeyRevoked => Refusal::Revoked,
            Rejection::WrongTenant => Refusal::WrongTenant,
            Rejection::WrongIssuer
            | Rejection::WrongAudience
            | Rejection::WrongTokenType
            | Rejection::LifetimeTooLong
            | Rejection::UnknownTokenType
            | Rejection::InsufficientPermissions
            | Rejection::WrongRole
            | Rejection::BundleStale => Refusal::WrongTokenType,
        }
    }

    pub(super) fn from_consumption(consumption: Consumption) -> Option<Refusal> {
        match consumption {
            Consumption::Consumed => None,
            Consumption::AlreadyUsed => Some(Refusal::AlreadyUsed),
            Consumption::Invalidated => Some(Refusal::Invalidated),
            Consumption::Unknown => Some(Refusal::Unknown),
        }
    }
}

/// Checks what the consumer asserts against the verified claims: action, resource, IP
/// allowlist, user agent — in that order.
pub fn check_presented(claims: &ActionClaims, presented: &Presented<'_>) -> Option<Refusal> {
    if presented
        .action
        .is_some_and(|action| action != claims.action)
    {
        return Some(Refusal::WrongAction);
    }
    if presented
        .resource_id
        .is_some_and(|resource| resource != claims.resource_id)
    {
        return Some(Refusal::WrongResource);
    }
    if let Some(allowlist) = &claims.ip_allowlist
        && !binding::ip_allowed(allowlist, presented.client_ip)
    {
        return Some(Refusal::IpNotAllowed);
    }
    if let Some(expected) = &claims.user_agent_hash
        && !binding::user_agent_matches(expected, presented.user_agent)
    {
        return Some(Refusal::UserAgentMismatch);
    }
    None
}

/// Returns whether `confirmation` is a confirmation token of `link`.
pub(super) fn binds(confirmation: &ActionClaims, link: &ActionClaims) -> bool {
    confirmation.params.get(CONFIRMS_PARAM) == Some(&link.jti)
        && confirmation.tenant_id == link.tenant_id
        && confirmation.user_id == link.user_id
        && confirmation.action == link.action
        && confirmation.resource_id == link.resource_id
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use tessera_common::UnixMillis;
    use tessera_common::claims::TokenType;

    use super::super::token::{self, TokenContent};
    use super::*;

    fn claims() -> ActionClaims {
        let content = TokenContent {
            token_type: TokenType::Action,
            tenant_id: "acme".into(),
            user_id: "u1".into(),
            action: "confirm_payment".into(),
            resource_id: "inv-1".into(),
            params: BTreeMap::new(),
            ip_allowlist: vec!["10.0.0.0/8".into()],
            user_agent: Some("UA/1".into()),
            confirmation_required: false,
        };
        token::build_claims(
            &content,
            "tessera",
            "tessera-api",
            "j1".into(),
            UnixMillis(1_700_000_000_000),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn presented_facts_are_checked_in_order() {
        let claims = claims();
        let good = Presented {
            action: Some("confirm_payment"),
            resource_id: Some("inv-1"),
            client_ip: Some("10.1.2.3".parse().unwrap()),
            user_agent: Some("UA/1"),
            confirmation_token: None,
        };
        assert_eq!(check_presented(&claims, &good), None);
        let case = |presented: Presented<'_>| check_presented(&claims, &presented);
        assert_eq!(
            case(Presented {
                action: Some("approve_estimate"),
                ..good.clone()
            }),
            Some(Refusal::WrongAction)
        );
        assert_eq!(
            case(Presented {
                resource_id: Some("inv-2"),
                ..good.clone()
            }),
            Some(Refusal::WrongResource)
        );
        assert_eq!(
            case(Presented {
                client_ip: Some("192.0.2.1".parse().unwrap()),
                ..good.clone()
            }),
            Some(Refusal::IpNotAllowed)
        );
        assert_eq!(
            case(Presented {
                client_ip: None,
                ..good.clone()
            }),
            Some(Refusal::IpNotAllowed)
        );
        assert_eq!(
            case(Presented {
                user_agent: Some("UA/2"),
                ..good.clone()
            }),
            Some(Refusal::UserAgentMismatch)
        );
    }

    #[test]
    fn confirmation_binds_to_one_link() {
        let link = claims();
        let mut confirmation = claims();
        confirmation.jti = "c1".into();
        confirmation
            .params
            .insert(CONFIRMS_PARAM.into(), "j1".into());
        assert!(binds(&confirmation, &link));
        confirmation
            .params
            .insert(CONFIRMS_PARAM.into(), "j2".into());
        assert!(!binds(&confirmation, &link));
    }
}

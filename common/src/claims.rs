//! Token types and their claims (DESIGN §4): one [`TokenType`] enum naming every JWS token
//! Tessera signs, with its `typ`, its `token_type` claim, the key set that signs it and its
//! longest lifetime; one claims struct per shape ([`AccessClaims`], [`ActionClaims`],
//! [`ServiceClaims`]), all read through the [`TokenClaims`] trait by the one verification
//! pipeline (`crate::verify`).
//!
//! A new token type is a variant here (and a claims struct when its shape is new): the
//! pipeline, the sidecar's `token_type` selector and the revocation horizon follow.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::KeySetName;

mod kinds;

pub use kinds::{AccessClaims, ActionClaims, AnyClaims, ServiceClaims};

/// JWS `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = TokenType::Access.jws_typ();

/// A kind of signed token. Each has its own JWS `typ` (explicit typing, RFC 8725 §3.11),
/// so a token of one kind never passes as another even when their claims look alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// A JWT access token (`at+jwt`), signed by the `access` set.
    Access,
    /// A single-use action link (`action+jwt`), signed by the `action` set.
    Action,
    /// A password-reset token, signed by the `action` set.
    Reset,
    /// An email-verification token, signed by the `action` set.
    Verification,
    /// A service token in its JWS form: a workload's own bearer credential, signed by the
    /// `access` set (it grants access, like an access token, but lives a day).
    Service,
}

/// A `token_type` no [`TokenType`] is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token type `{0}`")]
pub struct UnknownTokenType(pub String);

/// One hour, in the const context of [`TokenType::default_max_lifetime`].
const HOUR: Duration = Duration::from_secs(3600);

impl TokenType {
    /// Every token type, in a stable order.
    pub const ALL: [TokenType; 5] = [
        TokenType::Access,
        TokenType::Action,
        TokenType::Reset,
        TokenType::Verification,
        TokenType::Service,
    ];

    /// Returns the value of the `token_type` claim (and of `ValidateToken.token_type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Action => "action",
            TokenType::Reset => "reset",
            TokenType::Verification => "verification",
            TokenType::Service => "service",
        }
    }

    /// Returns the JWS header `typ` tokens of this type carry.
    pub const fn jws_typ(self) -> &'static str {
        match self {
            TokenType::Access => "at+jwt",
            TokenType::Action => "action+jwt",
            TokenType::Reset => "reset+jwt",
            TokenType::Verification => "verification+jwt",
            TokenType::Service => "service+jwt",
        }
    }

    /// Returns the type whose JWS `typ` is `typ`.
    pub fn from_jws_typ(typ: &str) -> Option<TokenType> {
        Self::ALL.into_iter().find(|kind| kind.jws_typ() == typ)
    }

    /// Returns the key set whose keys sign tokens of this type (and no other set's).
    pub const fn key_set(self) -> KeySetName {
        match self {
            TokenType::Access | TokenType::Service => KeySetName::Access,
            TokenType::Action | TokenType::Reset | TokenType::Verification => KeySetName::Action,
        }
    }

    /// Returns the longest lifetime of a token of this type when the issuer publishes
    /// none (DESIGN §4): access 15 min, action links 24 h (their 30 min default has a
    /// per-action override, bounded by the action set's 24 h), reset 1 h, email
    /// verification 24 h, service 24 h.
    pub const fn default_max_lifetime(self) -> Duration {
        match self {
            TokenType::Access => Duration::from_secs(15 * 60),
            TokenType::Reset => HOUR,
            // The seed's approve_estimate link lives seven days.
            TokenType::Action => Duration::from_secs(7 * 24 * 3600),
            TokenType::Verification | TokenType::Service => Duration::from_secs(24 * 3600),
        }
    }

    /// Returns the types the keys of `key_set` sign.
    pub fn signed_by(key_set: KeySetName) -> impl Iterator<Item = TokenType> {
        Self::ALL
            .into_iter()
            .filter(move |kind| kind.key_set() == key_set)
    }
}

impl std::str::FromStr for TokenType {
    type Err = UnknownTokenType;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| UnknownTokenType(value.chars().take(64).collect()))
    }
}

impl std::fmt::Display for TokenType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims every Tessera token carries, borrowed from its claims struct.
///
/// `iat` is the standard second-resolution issuance time; `iat_ms` is the same instant in
/// milliseconds, which revocation matching compares against (DESIGN §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub iat: i64,
    pub iat_ms: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: &'a str,
    pub tenant_id: &'a str,
    pub token_type: &'a str,
}

/// The claims of one token shape, as the verification pipeline reads them.
pub trait TokenClaims: Sized + Send + Sync + 'static {
    /// The token types whose claims take this shape.
    const TYPES: &'static [TokenType];

    /// Decodes the claims of a token of `token_type` (one of [`Self::TYPES`]).
    fn decode(payload: &[u8], token_type: TokenType) -> serde_json::Result<Self>;

    /// Returns the claims every token carries.
    fn registered(&self) -> Registered<'_>;

    /// Returns the session the token belongs to, if any (revocation by session).
    fn session_id(&self) -> Option<&str> {
        None
    }

    /// Returns the refresh family the token belongs to, if any (revocation by family).
    fn family_id(&self) -> Option<&str> {
        None
    }

    /// Returns the permissions the token grants (checked against required ones).
    fn permissions(&self) -> &[String] {
        &[]
    }

    /// Returns the token's role, if its type has one.
    fn role(&self) -> Option<&str> {
        None
    }
}

/// The JOSE header Tessera writes and reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_type_round_trips_its_names_and_has_a_distinct_typ() {
        for kind in TokenType::ALL {
            assert_eq!(kind.as_str().parse::<TokenType>(), Ok(kind));
            assert_eq!(TokenType::from_jws_typ(kind.jws_typ()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let typs: std::collections::BTreeSet<_> =
            TokenType::ALL.iter().map(|kind| kind.jws_typ()).collect();
        assert_eq!(typs.len(), TokenType::ALL.len());
        assert_eq!(
            "refresh".parse::<TokenType>(),
            Err(UnknownTokenType("refresh".into()))
        );
        assert_eq!(TokenType::from_jws_typ("JWT"), None);
    }

    #[test]
    fn access_keys_sign_access_and_service_tokens_and_action_keys_the_rest() {
        let access: Vec<_> = TokenType::signed_by(KeySetName::Access).collect();
        assert_eq!(access, [TokenType::Access, TokenType::Service]);
        let action: Vec<_> = TokenType::signed_by(KeySetName::Action).collect();
        assert_eq!(
            action,
            [TokenType::Action, TokenType::Reset, TokenType::Verification]
        );
    }
}

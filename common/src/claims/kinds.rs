//! The claims structs, one per token shape, and [`AnyClaims`] for a verifier that takes
//! whatever type a token names (the sidecar, whose caller picks the type per request).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Registered, TokenClaims, TokenType};

/// The claims of an access token (the seed's `ThorbisBearerToken`, DESIGN §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: String,
    pub iat_ms: i64,
    pub tenant_id: String,
    pub role: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    pub session_id: String,
    /// [`TokenType::Access`] for access tokens; kept as text so a token naming another
    /// type is refused as the wrong type, not as malformed.
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub mfa_verified: bool,
    #[serde(default)]
    pub last_password_change: i64,
    #[serde(default)]
    pub features: Vec<String>,
    /// Refresh-token family, for tokens minted by a session (revocation by family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_id: Option<String>,
}

/// The claims of an action link, password-reset or email-verification token (DESIGN §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionClaims {
    pub iss: String,
    /// The user the action concerns (as `user_id`).
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: String,
    pub iat_ms: i64,
    pub tenant_id: String,
    /// `action`, `reset` or `verification`.
    pub token_type: String,
    /// What the link does, e.g. `approve_invoice`.
    pub action: String,
    pub resource_id: String,
    pub user_id: String,
    /// Addresses (or CIDR ranges) the link may be consumed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
    /// Hash of the user agent the link is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent_hash: Option<String>,
    pub single_use: bool,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub confirmation_required: bool,
}

/// The claims of a service token in its JWS form: a workload's identity and scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    pub iss: String,
    /// The service.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: String,
    pub iat_ms: i64,
    pub tenant_id: String,
    /// `service`.
    pub token_type: String,
    /// What the service may do (checked like an access token's permissions).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The claims of a token of any type, decoded into the struct of the type it names (the
/// shape alone is ambiguous, so it has no `Deserialize`: see [`TokenClaims::decode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyClaims {
    Access(AccessClaims),
    Action(ActionClaims),
    Service(ServiceClaims),
}

/// Builds [`Registered`] from a struct with the common fields.
macro_rules! registered {
    ($claims:expr) => {
        Registered {
            iss: &$claims.iss,
            sub: &$claims.sub,
            aud: &$claims.aud,
            iat: $claims.iat,
            iat_ms: $claims.iat_ms,
            exp: $claims.exp,
            nbf: $claims.nbf,
            jti: &$claims.jti,
            tenant_id: &$claims.tenant_id,
            token_type: &$claims.token_type,
        }
    };
}

// === impl AccessClaims ===

impl TokenClaims for AccessClaims {
    const TYPES: &'static [TokenType] = &[TokenType::Access];

    fn decode(payload: &[u8], _: TokenType) -> serde_json::Result<Self> {
        serde_json::from_slice(payload)
    }

    fn registered(&self) -> Registered<'_> {
        registered!(self)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn family_id(&self) -> Option<&str> {
        self.family_id.as_deref()
    }

    fn permissions(&self) -> &[String] {
        &self.permissions
    }

    fn role(&self) -> Option<&str> {
        Some(&self.role)
    }
}

// === impl ActionClaims ===

impl TokenClaims for ActionClaims {
    const TYPES: &'static [TokenType] =
        &[TokenType::Action, TokenType::Reset, TokenType::Verification];

    fn decode(payload: &[u8], _: TokenType) -> serde_json::Result<Self> {
        serde_json::from_slice(payload)
    }

    fn registered(&self) -> Registered<'_> {
        registered!(self)
    }
}

// === impl ServiceClaims ===

impl TokenClaims for ServiceClaims {
    const TYPES: &'static [TokenType] = &[TokenType::Service];

    fn decode(payload: &[u8], _: TokenType) -> serde_json::Result<Self> {
        serde_json::from_slice(payload)
    }

    fn registered(&self) -> Registered<'_> {
        registered!(self)
    }

    fn permissions(&self) -> &[String] {
        &self.scopes
    }
}

// === impl AnyClaims ===

impl AnyClaims {
    /// Returns the access claims, when the token is an access token.
    pub fn as_access(&self) -> Option<&AccessClaims> {
        match self {
            AnyClaims::Access(claims) => Some(claims),
            _ => None,
        }
    }
}

/// Runs `$body` on the claims struct inside an [`AnyClaims`].
macro_rules! dispatch {
    ($any:expr, $claims:ident => $body:expr) => {
        match $any {
            AnyClaims::Access($claims) => $body,
            AnyClaims::Action($claims) => $body,
            AnyClaims::Service($claims) => $body,
        }
    };
}

impl TokenClaims for AnyClaims {
    const TYPES: &'static [TokenType] = &TokenType::ALL;

    fn decode(payload: &[u8], token_type: TokenType) -> serde_json::Result<Self> {
        Ok(match token_type {
            TokenType::Access => AnyClaims::Access(serde_json::from_slice(payload)?),
            TokenType::Action | TokenType::Reset | TokenType::Verification => {
                AnyClaims::Action(serde_json::from_slice(payload)?)
            }
            TokenType::Service => AnyClaims::Service(serde_json::from_slice(payload)?),
        })
    }

    fn registered(&self) -> Registered<'_> {
        dispatch!(self, claims => claims.registered())
    }

    fn session_id(&self) -> Option<&str> {
        dispatch!(self, claims => claims.session_id())
    }

    fn family_id(&self) -> Option<&str> {
        dispatch!(self, claims => claims.family_id())
    }

    fn permissions(&self) -> &[String] {
        dispatch!(self, claims => claims.permissions())
    }

    fn role(&self) -> Option<&str> {
        dispatch!(self, claims => claims.role())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn common() -> serde_json::Value {
        json!({
            "iss": "tessera", "sub": "u1", "aud": "tessera-api", "iat": 1, "exp": 2,
            "nbf": 1, "jti": "j1", "iat_ms": 1_000, "tenant_id": "acme",
        })
    }

    #[test]
    fn any_claims_decode_into_the_struct_of_the_named_type() {
        let mut action = common();
        action["token_type"] = json!("reset");
        action["action"] = json!("reset_password");
        action["resource_id"] = json!("u1");
        action["user_id"] = json!("u1");
        action["single_use"] = json!(true);
        let payload = serde_json::to_vec(&action).unwrap();
        let decoded = AnyClaims::decode(&payload, TokenType::Reset).unwrap();
        let AnyClaims::Action(claims) = &decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(claims.action, "reset_password");
        assert_eq!(decoded.registered().token_type, "reset");
        assert_eq!(decoded.session_id(), None);
        assert_eq!(decoded.role(), None);
        // The same payload is not an access token.
        assert!(AnyClaims::decode(&payload, TokenType::Access).is_err());

        let mut service = common();
        service["token_type"] = json!("service");
        service["scopes"] = json!(["billing:read"]);
        let payload = serde_json::to_vec(&service).unwrap();
        let decoded = AnyClaims::decode(&payload, TokenType::Service).unwrap();
        assert_eq!(decoded.permissions(), ["billing:read".to_owned()]);
        assert_eq!(decoded.registered().tenant_id, "acme");
    }
}

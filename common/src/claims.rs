//! The claims of a Tessera access token (the seed's `ThorbisBearerToken`, DESIGN §4).

use serde::{Deserialize, Serialize};

/// JWS `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// `token_type`s of the tokens the `action` key set signs: action links, password-reset
/// and email-verification tokens (DESIGN §4). Never `access`.
pub const ACTION_TOKEN_TYPES: [&str; 3] = ["action", "reset", "verification"];

/// The claims object of an access token.
///
/// `iat` is the standard second-resolution issuance time; `iat_ms` is the same instant
/// in milliseconds, which revocation matching compares against (DESIGN §5).
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
    /// `access` for access tokens; the action set's tokens carry one of
    /// [`ACTION_TOKEN_TYPES`].
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

/// The JOSE header Tessera writes and reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

//! The shape of single-use tokens: the `tba_` / `tbr_` / `tbe_` prefix in front of a JWS
//! of the `action` key set, the seed's `ThorbisActionToken` claims, the bounds on what a
//! caller may put in them, and the link built around a token. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::claims::{ActionClaims, TokenType};
use tessera_common::ids::check_identifier;
use tessera_common::limits::check_text;

use super::binding::{IpRange, MAX_ALLOWLIST_ENTRIES, MAX_USER_AGENT_BYTES, user_agent_hash};

/// Longest action name.
pub const MAX_ACTION_BYTES: usize = 64;
/// Longest resource id (a verification token's resource is the email address).
pub const MAX_RESOURCE_BYTES: usize = 256;
/// Most parameters a link may carry.
pub const MAX_PARAMS: usize = 32;
/// Longest parameter name.
pub const MAX_PARAM_NAME_BYTES: usize = 64;
/// Longest parameter value.
pub const MAX_PARAM_VALUE_BYTES: usize = 512;
/// Most bytes all parameters together may take: the token must stay well under the 8 KiB
/// every verifier accepts, after base64 and the other claims.
pub const MAX_PARAMS_BYTES: usize = 2048;
/// Parameter names starting with this are Tessera's own (a confirmation token's binding).
pub const RESERVED_PARAM_PREFIX: &str = "_tessera";
/// The parameter binding a confirmation token to the `jti` of the link it confirms.
pub const CONFIRMS_PARAM: &str = "_tessera_confirms";
/// Longest base URL of a tenant's links.
pub const MAX_BASE_URL_BYTES: usize = 512;

/// Returns the prefix of tokens of `token_type` (`tba_`, `tbr_`, `tbe_`).
pub const fn prefix(token_type: TokenType) -> &'static str {
    match token_type {
        TokenType::Reset => "tbr_",
        TokenType::Verification => "tbe_",
        _ => "tba_",
    }
}

/// Returns the JWS inside `token` when it carries the prefix of `token_type`. A token of
/// another kind is refused by its prefix before any key is touched.
pub fn strip_prefix(token: &str, token_type: TokenType) -> Option<&str> {
    token.strip_prefix(prefix(token_type))
}

/// A caller's input that breaks a bound (INVALID_ARGUMENT at the edge).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadInput {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> BadInput {
    BadInput {
        field,
        problem: problem.into(),
    }
}

/// Checks an action name: 1 to 64 of `a-z 0-9 _ . -`, so it is safe in a URL path.
pub fn check_action(action: &str) -> Result<(), BadInput> {
    let valid = !action.is_empty()
        && action.len() <= MAX_ACTION_BYTES
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(bad(
            "action",
            format!("must be 1 to {MAX_ACTION_BYTES} of a-z, 0-9, `_`, `.`, `-`"),
        ))
    }
}

/// Checks a resource id or user id: an identifier of at most 256 bytes.
pub fn check_id(field: &'static str, value: &str) -> Result<(), BadInput> {
    check_identifier(field, value).map_err(|error| bad(field, error.to_string()))?;
    if value.len() > MAX_RESOURCE_BYTES {
        return Err(bad(
            field,
            format!("longer than {MAX_RESOURCE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks a link's parameters against their bounds; Tessera's own names are refused.
pub fn check_params(params: &BTreeMap<String, String>) -> Result<(), BadInput> {
    if params.len() > MAX_PARAMS {
        return Err(bad("params", format!("more than {MAX_PARAMS} entries")));
    }
    let mut total = 0;
    for (name, value) in params {
        if name.is_empty() || name.len() > MAX_PARAM_NAME_BYTES {
            return Err(bad(
                "params",
                format!("names must be 1 to {MAX_PARAM_NAME_BYTES} bytes"),
            ));
        }
        if name.starts_with(RESERVED_PARAM_PREFIX) {
            return Err(bad(
                "params",
                format!("names starting with `{RESERVED_PARAM_PREFIX}` are reserved"),
            ));
        }
        check_text("params", name, MAX_PARAM_NAME_BYTES)
            .and_then(|()| check_text("params", value, MAX_PARAM_VALUE_BYTES))
            .map_err(|error| bad("params", error.to_string()))?;
        total += name.len() + value.len();
    }
    if total > MAX_PARAMS_BYTES {
        return Err(bad(
            "params",
            format!("more than {MAX_PARAMS_BYTES} bytes in all"),
        ));
    }
    Ok(())
}

/// Checks an IP allowlist: at most 16 addresses or CIDR ranges.
pub fn check_allowlist(allowlist: &[String]) -> Result<(), BadInput> {
    if allowlist.len() > MAX_ALLOWLIST_ENTRIES {
        return Err(bad(
            "ip_allowlist",
            format!("more than {MAX_ALLOWLIST_ENTRIES} entries"),
        ));
    }
    for entry in allowlist {
        IpRange::parse(entry).map_err(|error| bad("ip_allowlist", error.to_string()))?;
    }
    Ok(())
}

/// Checks a user agent's size and characters.
pub fn check_user_agent(user_agent: &str) -> Result<(), BadInput> {
    check_text("user_agent", user_agent, MAX_USER_AGENT_BYTES)
        .map_err(|error| bad("user_agent", error.to_string()))
}

/// Checks and normalises a tenant's base URL: `https://host[:port][/path]` (plain `http`
/// only for localhost, for development), no query or fragment, no trailing `/`.
pub fn normalize_base_url(base_url: &str) -> Result<String, BadInput> {
    let trimmed = base_url.trim_end_matches('/');
    let field = "base_url";
    if trimmed.len() > MAX_BASE_URL_BYTES {
        return Err(bad(
            field,
            format!("longer than {MAX_BASE_URL_BYTES} bytes"),
        ));
    }
    let rest = if let Some(rest) = trimmed.strip_prefix("https://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err(bad(field, "must be https (http only for localhost)"));
        }
        rest
    } else {
        return Err(bad(field, "must start with https://"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    let valid = !host.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:[]%".contains(&b));
    if !valid {
        return Err(bad(
            field,
            "must be a plain URL (host, optional port and path; no query, fragment or credentials)",
        ));
    }
    Ok(trimmed.to_owned())
}

/// What a new token says (validated).
#[derive(Clone, Debug)]
pub struct TokenContent {
    pub token_type: TokenType,
    pub tenant_id: String,
    pub user_id: String,
    pub action: String,
    pub resource_id: String,
    pub params: BTreeMap<String, String>,
    pub ip_allowlist: Vec<String>,
    pub user_agent: Option<String>,
    pub confirmation_required: bool,
}

/// Builds the claims of a token with id `jti` issued at `now` for `lifetime`.
pub fn build_claims(
    content: &TokenContent,
    issuer: &str,
    audience: &str,
    jti: String,
    now: UnixMillis,
    lifetime: Duration,
) -> ActionClaims {
    ActionClaims {
        iss: issuer.to_owned(),
        sub: content.user_id.clone(),
        aud: audience.to_owned(),
        iat: now.as_secs(),
        exp: now.plus(lifetime).as_secs(),
        nbf: now.as_secs(),
        jti,
        iat_ms: now.0,
        tenant_id: content.tenant_id.clone(),
        token_type: content.token_type.as_str().to_owned(),
        action: content.action.clone(),
        resource_id: content.resource_id.clone(),
        user_id: content.user_id.clone(),
        ip_allowlist: (!content.ip_allowlist.is_empty()).then(|| content.ip_allowlist.clone()),
        user_agent_hash: content.user_agent.as_deref().map(user_agent_hash),
        single_use: true,
        params: content.params.clone(),
        confirmation_required: content.confirmation_required,
    }
}

/// Returns `<base_url>/actions/<action>?token=…&resource=…` (`&confirm=required` when
/// the action is two-step), every value percent-encoded.
pub fn link(base_url: &str, action: &str, token: &str, resource_id: &str, confirm: bool) -> String {
    let mut url = format!("{base_url}/actions/{}", encode(action));
    let _ = write!(
        url,
        "?token={}&resource={}",
        encode(token),
        encode(resource_id)
    );
    if confirm {
        url.push_str("&confirm=required");
    }
    url
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_the_token_type() {
        assert_eq!(strip_prefix("tba_x.y.z", TokenType::Action), Some("x.y.z"));
        assert_eq!(strip_prefix("tbr_x.y.z", TokenType::Action), None);
        assert_eq!(strip_prefix("tbr_x", TokenType::Reset), Some("x"));
        assert_eq!(strip_prefix("tbe_x", TokenType::Verification), Some("x"));
    }

    #[test]
    fn links_are_encoded() {
        let url = link(
            "https://app.example.com",
            "confirm_payment",
            "tba_a.b-c",
            "inv 1&x",
            true,
        );
        assert_eq!(
            url,
            "https://app.example.com/actions/confirm_payment?token=tba_a.b-c&resource=inv%201%26x&confirm=required"
        );
    }

    #[test]
    fn inputs_are_bounded() {
        assert!(check_action("confirm_payment").is_ok());
        assert!(check_action("Confirm").is_err());
        assert!(check_action("a/b").is_err());
        assert!(check_action(&"a".repeat(65)).is_err());
        let mut params = BTreeMap::from([("amount".to_owned(), "10".to_owned())]);
        assert!(check_params(&params).is_ok());
        params.insert(CONFIRMS_PARAM.to_owned(), "j".to_owned());
        assert!(check_params(&params).is_err(), "reserved names");
        let big: BTreeMap<String, String> =
            (0..5).map(|i| (format!("k{i}"), "v".repeat(500))).collect();
        assert!(check_params(&big).is_err(), "total size");
        assert!(check_allowlist(&["10.0.0.0/8".into()]).is_ok());
        assert!(check_allowlist(&["nope".into()]).is_err());
        assert!(check_allowlist(&vec!["10.0.0.1".to_owned(); 17]).is_err());
    }

    #[test]
    fn base_urls_are_plain_https() {
        assert_eq!(
            normalize_base_url("https://app.example.com/").unwrap(),
            "https://app.example.com"
        );
        assert!(normalize_base_url("http://localhost:8080").is_ok());
        assert!(normalize_base_url("http://app.example.com").is_err());
        assert!(normalize_base_url("https://a.example.com/?q=1").is_err());
        assert!(normalize_base_url("https://user@a.example.com").is_err());
        assert!(normalize_base_url("javascript:alert(1)").is_err());
        assert!(normalize_base_url("https://").is_err());
    }
}

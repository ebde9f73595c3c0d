//! Challenge settings (issue 11): the delivery providers, which of them serve each
//! challenge method (a primary and an optional backup), the magic-link base URL and the
//! one-time rate limits, read from the TOML file given with `--challenge-config`
//! (`TESSERA_CHALLENGE_CONFIG`). Without the file no provider exists (challenges can
//! only be returned to the caller) and the limits are the defaults of
//! `one_time_limits.rs`.
//!
//! ```toml
//! link_base_url = "https://app.example.com/login/magic"
//!
//! [providers.mail]
//! kind = "smtp"
//! host = "smtp.example.com"
//! port = 587
//! starttls = "required"          # "off" | "opportunistic" | "required" | "wrapper"
//! username = "tessera"
//! password_file = "/run/secrets/smtp_password"
//! from = "Example <no-reply@example.com>"
//!
//! [providers.sms]
//! kind = "webhook"
//! url = "https://sms-gateway.internal/send"
//! # secret_file = "/run/secrets/sms_hook"   # else the tenant's webhook key signs
//!
//! [methods.otp_email]
//! primary = "mail"
//! backup = "mail-backup"
//!
//! [limits.challenge_start]
//! per_user = 10
//! per_ip = 50
//! window_seconds = 900
//! ```
//!
//! Secrets (SMTP password, webhook secret) are read from files, never written inline,
//! and never reach `Debug`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::challenges::ChallengeMethod;
use crate::one_time_limits::LimitSettings;

/// The longest provider name.
const MAX_PROVIDER_NAME: usize = 64;
/// Default time one delivery attempt may take.
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// The `--challenge-config` file as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct ChallengeFile {
    link_base_url: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderFile>,
    #[serde(default)]
    methods: BTreeMap<String, RouteFile>,
    #[serde(default)]
    limits: LimitSettings,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    kind: String,
    // SMTP
    host: Option<String>,
    port: Option<u16>,
    starttls: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    ca_file: Option<PathBuf>,
    // webhook
    url: Option<String>,
    secret_file: Option<PathBuf>,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    primary: String,
    backup: Option<String>,
}

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text only (local relays and tests).
    Off,
    /// STARTTLS when the server offers it, plain text otherwise.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (port 465).
    Wrapper,
}

/// An SMTP provider's settings.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    pub from: String,
    /// Extra root certificate (PEM) for the server's TLS certificate.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// A webhook provider's settings.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: hyper::Uri,
    /// A configured signing secret; `None`: the tenant's webhook key signs.
    pub secret: Option<Zeroizing<Vec<u8>>>,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One provider's settings.
#[derive(Clone, Debug)]
pub enum ProviderSettings {
    Smtp(SmtpSettings),
    Webhook(WebhookSettings),
}

/// The providers of one method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub primary: String,
    pub backup: Option<String>,
}

/// Resolved challenge settings.
#[derive(Clone, Debug, Default)]
pub struct ChallengeSettings {
    /// Base of magic links: `<base>?challenge=<id>&token=<hex>`.
    pub link_base_url: Option<String>,
    pub providers: BTreeMap<String, ProviderSettings>,
    pub routes: BTreeMap<ChallengeMethod, Route>,
    pub limits: LimitSettings,
}

impl ChallengeSettings {
    /// Reads and checks the file at `path`; the error names the offending field.
    pub fn from_file(path: &Path) -> Result<ChallengeSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!("challenge_config: cannot read {}: {error}", path.display())
        })?;
        ChallengeSettings::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and checks `text`; relative secret paths are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<ChallengeSettings, String> {
        let file: ChallengeFile =
            toml::from_str(text).map_err(|error| format!("challenge_config: {error}"))?;
        file.limits.validate()?;
        if let Some(url) = &file.link_base_url {
            check_link_base(url)?;
        }
        let mut providers = BTreeMap::new();
        for (name, provider) in &file.providers {
            check_provider_name(name)?;
            providers.insert(name.clone(), provider_settings(name, provider, base_dir)?);
        }
        let mut routes = BTreeMap::new();
        for (method_name, route) in &file.methods {
            let method = ChallengeMethod::parse(method_name).ok_or_else(|| {
                format!("methods.{method_name}: unknown method (otp_email, otp_sms, magic_link)")
            })?;
            for name in std::iter::once(&route.primary).chain(&route.backup) {
                if !providers.contains_key(name) {
                    return Err(format!("methods.{method_name}: no provider named `{name}`"));
                }
            }
            if route.backup.as_ref() == Some(&route.primary) {
                return Err(format!("methods.{method_name}.backup: same as primary"));
            }
            if method == ChallengeMethod::MagicLink && file.link_base_url.is_none() {
                return Err("link_base_url: required when magic_link has providers".to_owned());
            }
            routes.insert(
                method,
                Route {
                    primary: route.primary.clone(),
                    backup: route.backup.clone(),
                },
            );
        }
        Ok(ChallengeSettings {
            link_base_url: file.link_base_url,
            providers,
            routes,
            limits: file.limits,
        })
    }
}

/// Resolves `--challenge-config` (no file: no providers, default limits).
pub(super) fn resolve(
    settings: &super::ServeArgs,
) -> Result<ChallengeSettings, super::ConfigError> {
    match &settings.challenge_config {
        None => Ok(ChallengeSettings::default()),
        Some(path) => ChallengeSettings::from_file(path).map_err(|message| {
            let (field, rest) = message
                .split_once(": ")
                .unwrap_or(("challenge_config", message.as_str()));
            super::invalid(field, rest)
        }),
    }
}

fn check_provider_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "providers.{name}: names are 1 to {MAX_PROVIDER_NAME} of [a-z0-9_-]"
        ))
    }
}

fn check_link_base(url: &str) -> Result<(), String> {
    let parsed: hyper::Uri = url
        .parse()
        .map_err(|_| "link_base_url: not a URL".to_owned())?;
    match parsed.scheme_str() {
        Some("https") | Some("http") if parsed.query().is_none() && url.len() <= 512 => Ok(()),
        _ => Err("link_base_url: an http(s) URL of at most 512 bytes without a query".to_owned()),
    }
}

fn read_secret(field: String, path: &Path, base_dir: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let path = base_dir.join(path);
    let bytes = Zeroizing::new(
        std::fs::read(&path)
            .map_err(|error| format!("{field}: cannot read {}: {error}", path.display()))?,
    );
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(format!("{field}: the file is empty"));
    }
    Ok(Zeroizing::new(trimmed.to_vec()))
}

fn provider_settings(
    name: &str,
    file: &ProviderFile,
    base_dir: &Path,
) -> Result<ProviderSettings, String> {
    let field = |key: &str| format!("providers.{name}.{key}");
    let timeout = Duration::from_secs(file.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(format!("{}: 1 to 60", field("timeout_seconds")));
    }
    match file.kind.as_str() {
        "smtp" => {
            if file.url.is_some() || file.secret_file.is_some() {
                return Err(format!(
                    "{}: smtp providers take no url or secret_file",
                    field("kind")
                ));
            }
            let host = file
                .host
                .clone()
                .filter(|host| !host.is_empty())
                .ok_or_else(|| format!("{}: required", field("host")))?;
            let security = match file.starttls.as_deref().unwrap_or("required") {
                "off" => SmtpSecurity::Off,
                "opportunistic" => SmtpSecurity::Opportunistic,
                "required" => SmtpSecurity::Required,
                "wrapper" => SmtpSecurity::Wrapper,
                _ => {
                    return Err(format!(
                        "{}: off, opportunistic, required or wrapper",
                        field("starttls")
                    ));
                }
            };
            let from = file
                .from
                .clone()
                .ok_or_else(|| format!("{}: required", field("from")))?;
            from.parse::<lettre::message::Mailbox>()
                .map_err(|_| format!("{}: not a mailbox", field("from")))?;
            let password = match &file.password_file {
                Some(path) => {
                    let bytes = read_secret(field("password_file"), path, base_dir)?;
                    Some(Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(
                        |_| format!("{}: not UTF-8", field("password_file")),
                    )?))
                }
                None => None,
            };
            if password.is_some() != file.username.is_some() {
                return Err(format!(
                    "{}: username and password_file go together",
                    field("username")
                ));
            }
            let ca_pem = match &file.ca_file {
                Some(path) => Some(
                    std::fs::read(base_dir.join(path))
                        .map_err(|error| format!("{}: {error}", field("ca_file")))?,
                ),
                None => None,
            };
            Ok(ProviderSettings::Smtp(SmtpSettings {
                host,
                port: file.port.unwrap_or(match security {
                    SmtpSecurity::Wrapper => 465,
                    _ => 587,
                }),
                security,
                username: file.username.clone(),
                password,
                from,
                ca_pem,
                timeout,
            }))
        }
        "webhook" => {
            if file.host.is_some() || file.password_file.is_some() || file.from.is_some() {
                return Err(format!(
                    "{}: webhook providers take url and secret_file",
                    field("kind")
                ));
            }
            let url: hyper::Uri = file
                .url
                .as_deref()
                .ok_or_else(|| format!("{}: required", field("url")))?
                .parse()
                .map_err(|_| format!("{}: not a URL", field("url")))?;
            if !matches!(url.scheme_str(), Some("http") | Some("https")) || url.host().is_none() {
                return Err(format!("{}: an http(s) URL with a host", field("url")));
            }
            let secret = match &file.secret_file {
                Some(path) => Some(read_secret(field("secret_file"), path, base_dir)?),
                None => None,
            };
            Ok(ProviderSettings::Webhook(WebhookSettings {
                url,
                secret,
                timeout,
            }))
        }
        _ => Err(format!("{}: smtp or webhook", field("kind"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_resolves() {
        let settings = ChallengeSettings::from_toml(
            r#"
link_base_url = "https://app.example.com/magic"
[providers.mail]
kind = "smtp"
host = "127.0.0.1"
port = 2525
starttls = "off"
from = "Tessera <no-reply@example.com>"
[providers.hook]
kind = "webhook"
url = "http://127.0.0.1:9/sms"
[methods.otp_email]
primary = "mail"
backup = "hook"
[methods.magic_link]
primary = "mail"
[limits.challenge_verify]
per_user = 3
per_ip = 4
window_seconds = 60
"#,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(settings.providers.len(), 2);
        assert_eq!(
            settings.routes[&ChallengeMethod::OtpEmail]
                .backup
                .as_deref(),
            Some("hook")
        );
        assert_eq!(settings.limits.challenge_verify.per_user, 3);
        assert_eq!(settings.limits.challenge_start.per_user, 10);
    }

    #[test]
    fn mistakes_name_their_field() {
        let error = |text: &str| ChallengeSettings::from_toml(text, Path::new(".")).unwrap_err();
        assert!(error("[methods.otp_email]\nprimary = \"nope\"").contains("methods.otp_email"));
        assert!(error("[providers.Bad]\nkind = \"smtp\"").contains("providers.Bad"));
        assert!(error("[providers.m]\nkind = \"smtp\"").contains("providers.m.host"));
        assert!(
            error("[providers.h]\nkind = \"webhook\"\nurl = \"ftp://x/\"")
                .contains("providers.h.url")
        );
        assert!(
            error("[limits.password_reset]\nper_user = 0\nper_ip = 1\nwindow_seconds = 5")
                .contains("limits.password_reset.per_user")
        );
    }
}

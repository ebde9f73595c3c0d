//! Command-line flags and environment variables (DESIGN §11), validated into a
//! [`SidecarConfig`] before anything is bound. This is the only module that reads the
//! environment.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::secrets::{AllowList, SecretsConfig};
pub use crate::service_token::ServiceIdentity;

/// Exit code for a configuration error (`EX_USAGE` of sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// What the sidecar does once its bundle is older than `max_staleness`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StalePolicy {
    /// Rejects every token with `BUNDLE_STALE` and reports NOT_SERVING.
    FailClosed,
    /// Keeps validating with the last bundle it holds.
    Serve,
}

/// The sidecar's flags, each also readable from its environment variable.
#[derive(Debug, Parser)]
#[command(name = "tessera-sidecar", version, about = "Tessera validator sidecar")]
struct Cli {
    /// Issuer gRPC address (`http://` or `https://`).
    #[arg(
        long,
        env = "TESSERA_ISSUER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    issuer_addr: String,
    /// Unix socket the validator serves on.
    #[arg(
        long,
        env = "TESSERA_SIDECAR_SOCKET",
        default_value = "./tessera-sidecar.sock"
    )]
    socket: PathBuf,
    /// Permissions of the socket file, octal.
    #[arg(long, env = "TESSERA_SIDECAR_SOCKET_MODE", default_value = "0660")]
    socket_mode: String,
    /// Optional TCP address for the validator (off by default).
    #[arg(long, env = "TESSERA_SIDECAR_GRPC_ADDR")]
    grpc_addr: Option<String>,
    /// Optional HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "TESSERA_SIDECAR_HTTP_ADDR")]
    http_addr: Option<String>,
    /// File holding the credential presented to the issuer: scope `bundle:read` for the
    /// trust-bundle stream, plus `introspect` for ValidateApiKey and ValidateOpaqueToken
    /// (first sights and rate-limit leases), plus `issue` with --service-identity.
    #[arg(long, env = "TESSERA_SIDECAR_TOKEN_FILE")]
    issuer_token_file: Option<PathBuf>,
    /// The credential itself (prefer the file: environment variables leak into /proc).
    #[arg(
        long = "issuer-token",
        env = "TESSERA_SIDECAR_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    issuer_token: Option<String>,
    /// File the last bundle is persisted to (mode 0600) and loaded from at start.
    #[arg(long, env = "TESSERA_SIDECAR_BUNDLE_CACHE")]
    bundle_cache: Option<PathBuf>,
    /// Accepted audience; repeat to accept several. Narrows the bundle's audiences.
    #[arg(
        long = "audience",
        env = "TESSERA_SIDECAR_AUDIENCES",
        value_delimiter = ','
    )]
    audiences: Vec<String>,
    /// Clock leeway for exp and nbf, seconds.
    #[arg(long, env = "TESSERA_SIDECAR_LEEWAY_SECONDS", default_value_t = 30)]
    leeway_seconds: u64,
    /// Age of the bundle after which the stale policy applies, seconds.
    #[arg(
        long,
        env = "TESSERA_SIDECAR_MAX_STALENESS_SECONDS",
        default_value_t = 300
    )]
    max_staleness_seconds: u64,
    /// What to do once the bundle is stale.
    #[arg(
        long,
        env = "TESSERA_SIDECAR_STALE_POLICY",
        value_enum,
        default_value = "fail-closed"
    )]
    stale_policy: StalePolicy,
    /// Most verified tokens kept in the cache (0 disables the cache).
    #[arg(
        long,
        env = "TESSERA_SIDECAR_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    cache_capacity: u64,
    /// PEM CA bundle that signs the issuer's certificate (enables TLS checks).
    #[arg(long, env = "TESSERA_SIDECAR_ISSUER_CA_FILE")]
    issuer_ca_file: Option<PathBuf>,
    /// PEM client certificate for mTLS to the issuer.
    #[arg(long, env = "TESSERA_SIDECAR_CLIENT_CERT_FILE")]
    client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "TESSERA_SIDECAR_CLIENT_KEY_FILE")]
    client_key_file: Option<PathBuf>,
    /// Name reported to the issuer (default: hostname/pid).
    #[arg(long, env = "TESSERA_SIDECAR_SUBSCRIBER_ID")]
    subscriber_id: Option<String>,
    /// How long an issuer answer about an API key, service token or webhook token is
    /// cached, seconds (never past the credential's expiry; 1 to 300).
    #[arg(
        long,
        visible_alias = "api-key-cache-ttl",
        env = "TESSERA_SIDECAR_API_KEY_CACHE_TTL_SECONDS",
        default_value_t = 30
    )]
    api_key_cache_ttl_seconds: u64,
    /// Service identity whose tokens FetchServiceToken hands out (with --service-tenant);
    /// the issuer credential then needs `issue`.
    #[arg(long, env = "TESSERA_SIDECAR_SERVICE_IDENTITY")]
    service_identity: Option<String>,
    /// Tenant of --service-identity.
    #[arg(long, env = "TESSERA_SIDECAR_SERVICE_TENANT")]
    service_tenant: Option<String>,
    /// A managed secret GetSecret may read for the application: a name, or a prefix
    /// ending in `*` (`payments/*`); repeat for several. The issuer credential needs
    /// `secrets:read:<name>` (or a covering prefix) too. None: every name is refused.
    #[arg(
        long = "secret",
        env = "TESSERA_SIDECAR_SECRETS",
        value_delimiter = ','
    )]
    secrets: Vec<String>,
    /// How long GetSecret serves a cached secret value the issuer has not confirmed
    /// (while it is unreachable), seconds (1 to 86,400); then it fails closed.
    #[arg(
        long,
        env = "TESSERA_SIDECAR_SECRET_MAX_STALENESS_SECONDS",
        default_value_t = 300
    )]
    secret_max_staleness_seconds: u64,
    /// Log as JSON lines [default: false]. The issuer's setting, same flag and variable;
    /// `TESSERA_LOG_FORMAT=json` is still read as a deprecated alias.
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: Option<bool>,
}

/// The deprecated variable `TESSERA_LOG_JSON` replaces.
pub const DEPRECATED_LOG_FORMAT_VAR: &str = "TESSERA_LOG_FORMAT";

/// A validated sidecar configuration.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    pub issuer: IssuerConfig,
    pub serve: ServeConfig,
    pub validation: ValidationConfig,
    /// Where the bundle is persisted; `None` keeps it in memory only.
    pub bundle_cache: Option<PathBuf>,
    pub telemetry: TelemetryConfig,
    pub credentials: CredentialsConfig,
}

/// ValidateApiKey, ValidateOpaqueToken and FetchServiceToken.
#[derive(Clone, Debug)]
pub struct CredentialsConfig {
    /// Longest an issuer answer about a credential is cached.
    pub cache_ttl: Duration,
    /// The identity FetchServiceToken holds tokens of.
    pub service_identity: Option<ServiceIdentity>,
    /// GetSecret.
    pub secrets: SecretsConfig,
}

/// Logging and tracing, named as for the issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector (`OTEL_EXPORTER_OTLP_ENDPOINT`); spans are exported when set.
    pub otlp_endpoint: Option<String>,
    /// JSON log lines (`--log-json` / `TESSERA_LOG_JSON`).
    pub log_json: bool,
    /// Set when the deprecated `TESSERA_LOG_FORMAT` decided `log_json`, so the sidecar
    /// can warn once logging is up.
    pub used_deprecated_log_format: bool,
}

/// How to reach the issuer's trust-bundle stream.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// `http://host:port` or `https://host:port`.
    pub addr: String,
    pub credential: CredentialSource,
    pub tls: Option<TlsConfig>,
    pub subscriber_id: String,
}

/// Where the issuer credential comes from. The file is re-read on every reconnect so a
/// rotated credential is picked up without a restart.
#[derive(Clone)]
pub enum CredentialSource {
    None,
    File(PathBuf),
    Inline(String),
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::None => f.write_str("None"),
            CredentialSource::File(path) => f.debug_tuple("File").field(path).finish(),
            CredentialSource::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl CredentialSource {
    /// Returns the current credential, trimmed; `Ok(None)` when none is configured.
    pub fn load(&self) -> std::io::Result<Option<String>> {
        match self {
            CredentialSource::None => Ok(None),
            CredentialSource::Inline(value) => Ok(Some(value.trim().to_owned())),
            CredentialSource::File(path) => {
                Ok(Some(std::fs::read_to_string(path)?.trim().to_owned()))
            }
        }
    }
}

/// PEM material for TLS to the issuer.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub ca_pem: Vec<u8>,
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its key (the key never reaches `Debug`).
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Where the sidecar serves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub socket: PathBuf,
    /// Permission bits applied to the socket file.
    pub socket_mode: u32,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
}

/// How tokens are validated.
#[derive(Clone, Debug)]
pub struct ValidationConfig {
    /// When non-empty, only these of the bundle's audiences are accepted.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub max_staleness: Duration,
    pub stale_policy: StalePolicy,
    pub cache_capacity: u64,
}

/// A configuration error; the message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

impl ConfigError {
    /// Returns the process exit code for this error (0 for --help and --version).
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(error) if !error.use_stderr() => 0,
            _ => EXIT_CONFIG,
        }
    }
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        detail: detail.into(),
    }
}

impl SidecarConfig {
    /// Parses and validates the process arguments and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::parse_from(std::env::args_os())
    }

    /// Parses and validates `args` (the first item is the program name); environment
    /// variables fill flags that are absent.
    pub fn parse_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let telemetry = telemetry(cli.log_json, |name| std::env::var(name).ok());
        cli.validate(telemetry)
    }
}

/// Resolves the telemetry settings; `var` reads an environment variable. The issuer's
/// `TESSERA_LOG_JSON` (already in `log_json`, flag or variable) wins over the deprecated
/// `TESSERA_LOG_FORMAT`, which keeps its old meaning: `json` turns JSON logs on.
fn telemetry(log_json: Option<bool>, var: impl Fn(&str) -> Option<String>) -> TelemetryConfig {
    let deprecated = var(DEPRECATED_LOG_FORMAT_VAR).filter(|value| !value.is_empty());
    let (log_json, used_deprecated_log_format) = match (log_json, deprecated) {
        (Some(log_json), _) => (log_json, false),
        (None, Some(format)) => (format == "json", true),
        (None, None) => (false, false),
    };
    TelemetryConfig {
        otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|value| !value.is_empty()),
        log_json,
        used_deprecated_log_format,
    }
}

// === impl Cli ===

impl Cli {
    fn validate(self, telemetry: TelemetryConfig) -> Result<SidecarConfig, ConfigError> {
        let issuer = IssuerConfig {
            tls: self.tls_config()?,
            addr: validate_issuer_addr(&self.issuer_addr)?,
            credential: self.credential()?,
            subscriber_id: match self.subscriber_id {
                Some(id) if id.trim().is_empty() => {
                    return Err(invalid("subscriber_id", "must not be empty"));
                }
                Some(id) => id,
                None => default_subscriber_id(),
            },
        };
        if issuer.tls.is_some() != issuer.addr.starts_with("https://") {
            return Err(invalid(
                "issuer_ca_file",
                "an https issuer address needs --issuer-ca-file (no system roots are built in), and a CA file needs an https address",
            ));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("socket", "must not be empty"));
        }
        let serve = ServeConfig {
            socket: self.socket,
            socket_mode: parse_mode(&self.socket_mode)?,
            grpc_addr: parse_addr("grpc_addr", self.grpc_addr.as_deref())?,
            http_addr: parse_addr("http_addr", self.http_addr.as_deref())?,
        };
        let mut audiences: Vec<String> = self
            .audiences
            .iter()
            .map(|aud| aud.trim().to_owned())
            .filter(|aud| !aud.is_empty())
            .collect();
        audiences.dedup();
        if self.max_staleness_seconds == 0 {
            return Err(invalid("max_staleness_seconds", "must be at least 1"));
        }
        if self.leeway_seconds > 3600 {
            return Err(invalid("leeway_seconds", "must be at most 3600"));
        }
        let validation = ValidationConfig {
            audiences,
            leeway: Duration::from_secs(self.leeway_seconds),
            max_staleness: Duration::from_secs(self.max_staleness_seconds),
            stale_policy: self.stale_policy,
            cache_capacity: self.cache_capacity,
        };
        if let Some(path) = &self.bundle_cache
            && (path.as_os_str().is_empty() || path.is_dir())
        {
            return Err(invalid("bundle_cache", "must name a file"));
        }
        let credentials = CredentialsConfig {
            cache_ttl: match self.api_key_cache_ttl_seconds {
                1..=300 => Duration::from_secs(self.api_key_cache_ttl_seconds),
                _ => return Err(invalid("api_key_cache_ttl_seconds", "must be 1 to 300")),
            },
            service_identity: service_identity(
                self.service_identity.as_deref(),
                self.service_tenant.as_deref(),
            )?,
            secrets: SecretsConfig {
                allow: AllowList::parse(&self.secrets)
                    .map_err(|detail| invalid("secret", detail))?,
                max_staleness: match self.secret_max_staleness_seconds {
                    1..=86_400 => Duration::from_secs(self.secret_max_staleness_seconds),
                    _ => {
                        return Err(invalid(
                            "secret_max_staleness_seconds",
                            "must be 1 to 86400",
                        ));
                    }
                },
            },
        };
        Ok(SidecarConfig {
            issuer,
            serve,
            validation,
            bundle_cache: self.bundle_cache,
            telemetry,
            credentials,
        })
    }

    fn credential(&self) -> Result<CredentialSource, ConfigError> {
        let source = match (&self.issuer_token_file, &self.issuer_token) {
            (Some(path), _) => CredentialSource::File(path.clone()),
            (None, Some(value)) => CredentialSource::Inline(value.clone()),
            // The issuer serves the bundle to no anonymous reader: without a credential
            // the sidecar could only retry forever, so it stops here instead.
            (None, None) => {
                return Err(invalid(
                    "issuer_token_file",
                    "no credential configured: give --issuer-token-file (or \
                     TESSERA_SIDECAR_TOKEN_FILE) naming a file with a credential of scopes \
                     `bundle:read` and `introspect` (and `issue` with --service-identity)",
                ));
            }
        };
        let field = if self.issuer_token_file.is_some() {
            "issuer_token_file"
        } else {
            "issuer_token"
        };
        match source.load() {
            Ok(Some(value)) if value.is_empty() => Err(invalid(field, "is empty")),
            Ok(Some(value)) if value.chars().any(|c| c.is_control() || c == ' ') => {
                Err(invalid(field, "contains whitespace or control characters"))
            }
            Ok(_) => Ok(source),
            Err(error) => {
                let what = match &self.issuer_token_file {
                    Some(path) => format!("cannot read {} (--issuer-token-file)", path.display()),
                    None => "cannot be read".to_owned(),
                };
                Err(invalid(field, format!("{what}: {error}")))
            }
        }
    }

    fn tls_config(&self) -> Result<Option<TlsConfig>, ConfigError> {
        let read = |field: &'static str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| invalid(field, format!("cannot read {}: {error}", path.display())))
        };
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read("client_cert_file", cert)?,
                key_pem: read("client_key_file", key)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "client_key_file",
                    "is required with --client-cert-file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "client_cert_file",
                    "is required with --client-key-file",
                ));
            }
        };
        match &self.issuer_ca_file {
            Some(path) => Ok(Some(TlsConfig {
                ca_pem: read("issuer_ca_file", path)?,
                client_identity,
            })),
            None if client_identity.is_some() => {
                Err(invalid("issuer_ca_file", "is required for mTLS"))
            }
            None => Ok(None),
        }
    }
}

/// Checks `--service-identity` and `--service-tenant`: both or neither; the name as the
/// issuer's identity names (`[a-z0-9][a-z0-9._-]{0,62}`).
fn service_identity(
    service: Option<&str>,
    tenant: Option<&str>,
) -> Result<Option<ServiceIdentity>, ConfigError> {
    let (service, tenant) = match (service.map(str::trim), tenant.map(str::trim)) {
        (None | Some(""), None | Some("")) => return Ok(None),
        (Some(service), Some(tenant)) if !service.is_empty() && !tenant.is_empty() => {
            (service, tenant)
        }
        (None | Some(""), _) => {
            return Err(invalid(
                "service_identity",
                "is required with --service-tenant",
            ));
        }
        _ => {
            return Err(invalid(
                "service_tenant",
                "is required with --service-identity",
            ));
        }
    };
    let mut chars = service.chars();
    let well_formed = service.len() <= 63
        && chars
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !well_formed {
        return Err(invalid(
            "service_identity",
            format!("`{service}` is not a name like billing (a-z, 0-9, `.`, `_`, `-`; at most 63)"),
        ));
    }
    if tenant.len() > 128 || tenant.chars().any(char::is_control) {
        return Err(invalid("service_tenant", "at most 128 printable bytes"));
    }
    Ok(Some(ServiceIdentity {
        tenant_id: tenant.to_owned(),
        service: service.to_owned(),
    }))
}

fn validate_issuer_addr(addr: &str) -> Result<String, ConfigError> {
    let uri: http_uri::Uri = addr
        .parse()
        .map_err(|error| invalid("issuer_addr", format!("not a URI: {error}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(addr.trim_end_matches('/').to_owned()),
        _ => Err(invalid(
            "issuer_addr",
            "must be http://host:port or https://host:port",
        )),
    }
}

/// The `http` crate as re-exported by tonic (no extra dependency).
mod http_uri {
    pub use tonic::codegen::http::Uri;
}

fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(invalid(
            "socket_mode",
            format!("`{text}` is not an octal mode like 0660"),
        )),
    }
}

fn parse_addr(field: &'static str, text: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            invalid(
                field,
                format!("`{text}` is not an address like 127.0.0.1:9090"),
            )
        }),
    }
}

fn default_subscriber_id() -> String {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{hostname}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` after an inline credential (a file given in `args` wins over it).
    fn parse(args: &[&str]) -> Result<SidecarConfig, ConfigError> {
        parse_bare(&[&["--issuer-token", "tbc_test"], args].concat())
    }

    fn parse_bare(args: &[&str]) -> Result<SidecarConfig, ConfigError> {
        SidecarConfig::parse_from(std::iter::once("tessera-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn no_credential_is_a_config_error_naming_the_flag() {
        let error = parse_bare(&[]).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_CONFIG);
        let message = error.to_string();
        assert!(message.contains("issuer_token_file"), "{message}");
        assert!(message.contains("--issuer-token-file"), "{message}");
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.issuer.addr, "http://127.0.0.1:50051");
        assert_eq!(config.serve.socket, PathBuf::from("./tessera-sidecar.sock"));
        assert_eq!(config.serve.socket_mode, 0o660);
        assert_eq!(config.serve.grpc_addr, None);
        assert_eq!(config.validation.leeway, Duration::from_secs(30));
        assert_eq!(config.validation.max_staleness, Duration::from_secs(300));
        assert_eq!(config.validation.stale_policy, StalePolicy::FailClosed);
        assert_eq!(config.validation.cache_capacity, 100_000);
        assert!(config.issuer.subscriber_id.contains('/'));
        assert_eq!(config.credentials.cache_ttl, Duration::from_secs(30));
        assert_eq!(config.credentials.service_identity, None);
    }

    #[test]
    fn service_identity_needs_both_flags() {
        let config = parse(&[
            "--service-identity",
            "billing",
            "--service-tenant",
            "acme",
            "--api-key-cache-ttl",
            "5",
        ])
        .unwrap();
        assert_eq!(
            config.credentials.service_identity,
            Some(ServiceIdentity {
                tenant_id: "acme".into(),
                service: "billing".into(),
            })
        );
        assert_eq!(config.credentials.cache_ttl, Duration::from_secs(5));
    }

    #[test]
    fn invalid_values_name_their_field_and_exit_64() {
        let cases: &[(&[&str], &str)] = &[
            (&["--socket-mode", "999"], "socket_mode"),
            (&["--issuer-addr", "ftp://x"], "issuer_addr"),
            (&["--grpc-addr", "nowhere"], "grpc_addr"),
            (&["--http-addr", "1.2.3.4"], "http_addr"),
            (&["--max-staleness-seconds", "0"], "max_staleness_seconds"),
            (&["--client-cert-file", "/nonexistent"], "client_key_file"),
            (
                &["--issuer-token-file", "/nonexistent/token"],
                "issuer_token_file",
            ),
            (&["--issuer-addr", "https://issuer:443"], "issuer_ca_file"),
            (&["--leeway-seconds", "abc"], "leeway-seconds"),
            (&["--stale-policy", "maybe"], "stale-policy"),
            (
                &["--api-key-cache-ttl-seconds", "0"],
                "api_key_cache_ttl_seconds",
            ),
            (&["--api-key-cache-ttl", "301"], "api_key_cache_ttl_seconds"),
            (&["--service-identity", "billing"], "service_tenant"),
            (&["--service-tenant", "t1"], "service_identity"),
            (
                &["--service-identity", "Billing", "--service-tenant", "t1"],
                "service_identity",
            ),
        ];
        for (args, field) in cases {
            let error = parse(args).unwrap_err();
            assert_eq!(error.exit_code(), EXIT_CONFIG, "{args:?}");
            assert!(error.to_string().contains(field), "{args:?}: {error}");
        }
    }

    #[test]
    fn audiences_repeat_and_credential_debug_is_redacted() {
        let config = parse_bare(&[
            "--audience",
            "a",
            "--audience",
            "b",
            "--issuer-token",
            "s3cret",
        ])
        .unwrap();
        assert_eq!(
            config.validation.audiences,
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(
            config.issuer.credential.load().unwrap().as_deref(),
            Some("s3cret")
        );
    }

    #[test]
    fn telemetry_uses_the_issuers_names_and_keeps_the_old_one_as_an_alias() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let none = telemetry(None, env(&[]));
        assert_eq!(none, TelemetryConfig::default());
        // The deprecated name still works, and is reported as used.
        let old = telemetry(None, env(&[("TESSERA_LOG_FORMAT", "json")]));
        assert!(old.log_json && old.used_deprecated_log_format);
        let old_text = telemetry(None, env(&[("TESSERA_LOG_FORMAT", "text")]));
        assert!(!old_text.log_json);
        // TESSERA_LOG_JSON (through clap, as `log_json`) wins over it.
        let both = telemetry(Some(false), env(&[("TESSERA_LOG_FORMAT", "json")]));
        assert!(!both.log_json && !both.used_deprecated_log_format);
        let otlp = telemetry(
            None,
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]),
        );
        assert_eq!(otlp.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(
            telemetry(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])).otlp_endpoint,
            None
        );
    }

    #[test]
    fn log_json_is_the_issuers_flag_and_variable() {
        let config = parse(&["--log-json", "true"]).unwrap();
        assert!(config.telemetry.log_json);
        let command = <Cli as clap::CommandFactory>::command();
        let log_json = command
            .get_arguments()
            .find(|arg| arg.get_id() == "log_json")
            .expect("log_json flag");
        assert_eq!(
            log_json.get_env().and_then(|env| env.to_str()),
            Some("TESSERA_LOG_JSON")
        );
    }

    #[test]
    fn help_is_not_an_error_exit() {
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}

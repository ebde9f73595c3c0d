//! Configuration: flags, their environment variables and an optional TOML file, resolved
//! and validated into one `IssuerConfig` before any port is bound. Environment variables
//! are read here and nowhere else. A bad value is a `ConfigError` naming the field; the
//! binary exits with code 64 on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use tessera_common::keys::{Algorithm, KeySetName, KeySetPolicy};

use crate::store::postgres::PostgresOptions;
use crate::tokens::TokenPolicy;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.to_string(),
    }
}

/// `tessera-issuer serve` flags. Every flag can also be set in the config file (same name
/// with underscores) and through its environment variable; flags win over the file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TESSERA_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "TESSERA_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// HTTP listen address for JWKS, discovery, health and metrics [default: 127.0.0.1:8080].
    #[arg(long, env = "TESSERA_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Directory for the embedded database, the development KEK and the admin token
    /// [default: ./tessera-data].
    #[arg(long, env = "TESSERA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it state lives in <data-dir>/tessera.db (SQLite).
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL connection pool size [default: 16].
    #[arg(long, env = "TESSERA_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// CA certificate (PEM) for PostgreSQL TLS.
    #[arg(long, env = "TESSERA_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// File holding the base64 KEK; TESSERA_KEK may hold it directly. Without either, a
    /// development KEK is created at <data-dir>/kek.
    #[arg(long, env = "TESSERA_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// `iss` of every token [default: tessera].
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// Audiences tokens may be issued for, comma-separated; the first is the default
    /// [default: tessera-api].
    #[arg(long, env = "TESSERA_AUDIENCES", value_delimiter = ',')]
    pub audiences: Option<Vec<String>>,
    /// Public base URL of the HTTP endpoint, used in discovery [default: http://<http-addr>].
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Algorithm of new `access` keys: RS256, ES256 or EdDSA [default: RS256].
    #[arg(long, env = "TESSERA_ACCESS_ALGORITHM")]
    pub access_algorithm: Option<String>,
    /// Algorithm of new `action` keys [default: RS256].
    #[arg(long, env = "TESSERA_ACTION_ALGORITHM")]
    pub action_algorithm: Option<String>,
    /// Days a key signs before its scheduled successor takes over [default: 90].
    #[arg(long, env = "TESSERA_ROTATE_EVERY_DAYS")]
    pub rotate_every_days: Option<u64>,
    /// Hours a replaced key keeps verifying [default: 168].
    #[arg(long, env = "TESSERA_OVERLAP_HOURS")]
    pub overlap_hours: Option<u64>,
    /// Seconds a successor is published before it signs [default: 3600].
    #[arg(long, env = "TESSERA_PREPUBLISH_SECONDS")]
    pub prepublish_seconds: Option<u64>,
    /// Default access-token lifetime, seconds [default: 900].
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL_SECONDS")]
    pub access_token_ttl_seconds: Option<u64>,
    /// Longest access-token lifetime a caller may ask for, seconds [default: 900].
    #[arg(long, env = "TESSERA_MAX_ACCESS_TOKEN_TTL_SECONDS")]
    pub max_access_token_ttl_seconds: Option<u64>,
    /// Server certificate (PEM) for gRPC TLS.
    #[arg(long, env = "TESSERA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Server private key (PEM) for gRPC TLS.
    #[arg(long, env = "TESSERA_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to (enables mTLS).
    #[arg(long, env = "TESSERA_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Seconds between heartbeats on idle trust-bundle streams [default: 5].
    #[arg(long, env = "TESSERA_HEARTBEAT_SECONDS")]
    pub heartbeat_seconds: Option<u64>,
    /// Seconds between rotation-scheduler runs [default: 60].
    #[arg(long, env = "TESSERA_ROTATION_CHECK_SECONDS")]
    pub rotation_check_seconds: Option<u64>,
    /// Lifetime of each refresh token, seconds [default: 2592000 = 30 days].
    #[arg(long, env = "TESSERA_REFRESH_TTL_SECONDS")]
    pub refresh_ttl_seconds: Option<u64>,
    /// Seconds a just-rotated refresh token still returns the same successor (concurrent
    /// tabs); 0 disables [default: 30].
    #[arg(long, env = "TESSERA_REFRESH_REUSE_GRACE_SECONDS")]
    pub refresh_reuse_grace_seconds: Option<u64>,
    /// Create <data-dir>/admin.token on first start when it is missing [default: true].
    #[arg(long, env = "TESSERA_BOOTSTRAP_ADMIN")]
    pub bootstrap_admin: Option<bool>,
    /// Log as JSON lines.
    #[arg(long, env = "TESSERA_LOG_JSON")]
    pub log_json: Option<bool>,
}

/// The same settings, read from the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_pool_size: Option<usize>,
    database_ca_file: Option<PathBuf>,
    kek_file: Option<PathBuf>,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    public_url: Option<String>,
    access_algorithm: Option<String>,
    action_algorithm: Option<String>,
    rotate_every_days: Option<u64>,
    overlap_hours: Option<u64>,
    prepublish_seconds: Option<u64>,
    access_token_ttl_seconds: Option<u64>,
    max_access_token_ttl_seconds: Option<u64>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    heartbeat_seconds: Option<u64>,
    rotation_check_seconds: Option<u64>,
    refresh_ttl_seconds: Option<u64>,
    refresh_reuse_grace_seconds: Option<u64>,
    bootstrap_admin: Option<bool>,
    log_json: Option<bool>,
    #[serde(default)]
    mtls_clients: Vec<MtlsClientConfig>,
}

/// A client identified by its TLS certificate instead of a bearer credential (config file
/// only: `[[mtls_clients]]`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MtlsClientConfig {
    /// SHA-256 of the client certificate (DER), hex; `openssl x509 -in c.pem -outform der | sha256sum`.
    pub fingerprint_sha256: String,
    /// Name used as the caller's id in the audit log (`mtls:<name>`).
    pub name: String,
    /// Scopes, as for API clients.
    pub scopes: Vec<String>,
    /// Tenants it may act on; empty means every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// Where state lives.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres(PostgresOptions),
}

/// Where the KEK comes from.
#[derive(Clone)]
pub enum KekSource {
    /// Base64 text from `TESSERA_KEK`.
    Inline(zeroize::Zeroizing<String>),
    File(PathBuf),
    /// Development: created on first start, mode 0600.
    DevelopmentFile(PathBuf),
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KekSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            KekSource::File(path) => write!(f, "File({})", path.display()),
            KekSource::DevelopmentFile(path) => write!(f, "DevelopmentFile({})", path.display()),
        }
    }
}

/// gRPC TLS files.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// Certificate fingerprints accepted as caller identities (needs `client_ca_file`).
    pub mtls_clients: Vec<MtlsClientConfig>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub kek: KekSource,
    pub key_policies: BTreeMap<KeySetName, KeySetPolicy>,
    pub tokens: TokenPolicy,
    pub tls: Option<TlsConfig>,
    pub heartbeat: Duration,
    pub rotation_check: Duration,
    /// Lifetime of each refresh token.
    pub refresh_ttl: Duration,
    /// Window in which a just-rotated refresh token returns the same successor.
    pub refresh_reuse_grace: Duration,
    pub bootstrap_admin: bool,
    pub log_json: bool,
    pub otlp_endpoint: Option<String>,
}

impl IssuerConfig {
    /// Resolves flags (and env) over the config file over defaults, and validates.
    pub fn resolve(args: &ServeArgs) -> Result<IssuerConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let inline_kek = std::env::var("TESSERA_KEK")
            .ok()
            .filter(|value| !value.is_empty());
        let otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|value| !value.is_empty());
        resolve(args.clone(), file, inline_kek, otlp_endpoint)
    }

    /// Returns the defaults with the given data directory (for tests and examples).
    pub fn development(data_dir: &Path) -> IssuerConfig {
        let args = ServeArgs {
            data_dir: Some(data_dir.to_path_buf()),
            ..ServeArgs::default()
        };
        // The defaults are valid by construction; a failure here is a bug in this file.
        resolve(args, FileConfig::default(), None, None).expect("default configuration is valid")
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid("config", format!("{}: {error}", path.display())))?;
    toml::from_str(&text).map_err(|error| invalid("config", format!("{}: {error}", path.display())))
}

fn resolve(
    args: ServeArgs,
    file: FileConfig,
    inline_kek: Option<String>,
    otlp_endpoint: Option<String>,
) -> Result<IssuerConfig, ConfigError> {
    let grpc_addr = parse_addr(
        "grpc_addr",
        args.grpc_addr.or(file.grpc_addr),
        "127.0.0.1:50051",
    )?;
    let http_addr = parse_addr(
        "http_addr",
        args.http_addr.or(file.http_addr),
        "127.0.0.1:8080",
    )?;
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./tessera-data"));
    let public_url = args
        .public_url
        .or(file.public_url)
        .unwrap_or_else(|| format!("http://{http_addr}"))
        .trim_end_matches('/')
        .to_owned();
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        return Err(invalid("public_url", "must start with http:// or https://"));
    }

    let pool_size = args
        .database_pool_size
        .or(file.database_pool_size)
        .unwrap_or(16);
    if pool_size == 0 || pool_size > 1024 {
        return Err(invalid("database_pool_size", "must be between 1 and 1024"));
    }
    let store = match args.database_url.or(file.database_url) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            StoreConfig::Postgres(PostgresOptions {
                url,
                pool_size,
                ca_file: args.database_ca_file.or(file.database_ca_file),
                schema: None,
            })
        }
        Some(_) => return Err(invalid("database_url", "must be a postgres:// URL")),
        None => StoreConfig::Sqlite {
            path: data_dir.join("tessera.db"),
        },
    };
    let kek = match (inline_kek, args.kek_file.or(file.kek_file)) {
        (Some(text), _) => KekSource::Inline(zeroize::Zeroizing::new(text)),
        (None, Some(path)) => KekSource::File(path),
        (None, None) => KekSource::DevelopmentFile(data_dir.join("kek")),
    };

    let rotate_every = Duration::from_secs(
        args.rotate_every_days
            .or(file.rotate_every_days)
            .unwrap_or(90)
            * 24
            * 3600,
    );
    let overlap =
        Duration::from_secs(args.overlap_hours.or(file.overlap_hours).unwrap_or(168) * 3600);
    let prepublish = Duration::from_secs(
        args.prepublish_seconds
            .or(file.prepublish_seconds)
            .unwrap_or(3600),
    );
    let default_ttl = args
        .access_token_ttl_seconds
        .or(file.access_token_ttl_seconds)
        .unwrap_or(900);
    let max_ttl = args
        .max_access_token_ttl_seconds
        .or(file.max_access_token_ttl_seconds)
        .unwrap_or(default_ttl.max(900));
    if default_ttl == 0 || default_ttl > max_ttl {
        return Err(invalid(
            "access_token_ttl_seconds",
            format!(
                "must be between 1 and max_access_token_ttl_seconds ({max_ttl}), got {default_ttl}"
            ),
        ));
    }
    let mut key_policies = BTreeMap::new();
    for (key_set, algorithm_value, field) in [
        (
            KeySetName::Access,
            args.access_algorithm.or(file.access_algorithm),
            "access_algorithm",
        ),
        (
            KeySetName::Action,
            args.action_algorithm.or(file.action_algorithm),
            "action_algorithm",
        ),
    ] {
        let algorithm: Algorithm = algorithm_value
            .as_deref()
            .unwrap_or("RS256")
            .parse()
            .map_err(|error| invalid(field, error))?;
        let mut policy = KeySetPolicy::default_for(key_set);
        policy.algorithm = algorithm;
        policy.rotate_every = rotate_every;
        policy.overlap = overlap;
        policy.prepublish = prepublish;
        if key_set == KeySetName::Access {
            policy.max_token_ttl = Duration::from_secs(max_ttl);
        }
        policy
            .validate(key_set)
            .map_err(|error| invalid("overlap_hours", error))?;
        key_policies.insert(key_set, policy);
    }

    let issuer = args
        .issuer
        .or(file.issuer)
        .unwrap_or_else(|| "tessera".into());
    if issuer.is_empty() || issuer.len() > 256 {
        return Err(invalid("issuer", "must be 1 to 256 bytes"));
    }
    let audiences = args
        .audiences
        .or(file.audiences)
        .unwrap_or_else(|| vec!["tessera-api".into()]);
    if audiences.is_empty()
        || audiences
            .iter()
            .any(|audience| audience.is_empty() || audience.len() > 256)
    {
        return Err(invalid(
            "audiences",
            "must list at least one audience of 1 to 256 bytes",
        ));
    }
    let tokens = TokenPolicy {
        issuer,
        audiences,
        default_ttl: Duration::from_secs(default_ttl),
        max_ttl: Duration::from_secs(max_ttl),
        min_ttl: Duration::from_secs(30.min(default_ttl)),
        ..TokenPolicy::default()
    };

    let tls = match (
        args.tls_cert_file.or(file.tls_cert_file),
        args.tls_key_file.or(file.tls_key_file),
        args.tls_client_ca_file.or(file.tls_client_ca_file),
    ) {
        (Some(cert_file), Some(key_file), client_ca_file) => Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            mtls_clients: file.mtls_clients.clone(),
        }),
        (None, None, None) => None,
        (None, _, _) => return Err(invalid("tls_cert_file", "required when TLS is configured")),
        (Some(_), None, _) => {
            return Err(invalid(
                "tls_key_file",
                "required when tls_cert_file is set",
            ));
        }
    };
    if let Some(tls) = &tls {
        check_mtls_clients(tls)?;
    } else if !file.mtls_clients.is_empty() {
        return Err(invalid(
            "mtls_clients",
            "needs tls_cert_file, tls_key_file and tls_client_ca_file",
        ));
    }
    let heartbeat_seconds = args
        .heartbeat_seconds
        .or(file.heartbeat_seconds)
        .unwrap_or(5);
    if heartbeat_seconds == 0 || heartbeat_seconds > 3600 {
        return Err(invalid("heartbeat_seconds", "must be between 1 and 3600"));
    }
    let refresh_ttl_seconds = args
        .refresh_ttl_seconds
        .or(file.refresh_ttl_seconds)
        .unwrap_or(30 * 24 * 3600);
    if refresh_ttl_seconds < 60 {
        return Err(invalid("refresh_ttl_seconds", "must be at least 60"));
    }
    let refresh_reuse_grace_seconds = args
        .refresh_reuse_grace_seconds
        .or(file.refresh_reuse_grace_seconds)
        .unwrap_or(30);
    if refresh_reuse_grace_seconds > 600 {
        return Err(invalid(
            "refresh_reuse_grace_seconds",
            "must be at most 600",
        ));
    }
    let rotation_check_seconds = args
        .rotation_check_seconds
        .or(file.rotation_check_seconds)
        .unwrap_or(60);
    if rotation_check_seconds == 0
        || Duration::from_secs(rotation_check_seconds) >= prepublish.max(Duration::from_secs(2))
    {
        return Err(invalid(
            "rotation_check_seconds",
            format!(
                "must be positive and shorter than prepublish_seconds ({})",
                prepublish.as_secs()
            ),
        ));
    }
    Ok(IssuerConfig {
        grpc_addr,
        http_addr,
        public_url,
        data_dir,
        store,
        kek,
        key_policies,
        tokens,
        tls,
        heartbeat: Duration::from_secs(heartbeat_seconds),
        refresh_ttl: Duration::from_secs(refresh_ttl_seconds),
        refresh_reuse_grace: Duration::from_secs(refresh_reuse_grace_seconds),
        rotation_check: Duration::from_secs(rotation_check_seconds),
        bootstrap_admin: args
            .bootstrap_admin
            .or(file.bootstrap_admin)
            .unwrap_or(true),
        log_json: args.log_json.or(file.log_json).unwrap_or(false),
        otlp_endpoint,
    })
}

fn check_mtls_clients(tls: &TlsConfig) -> Result<(), ConfigError> {
    if !tls.mtls_clients.is_empty() && tls.client_ca_file.is_none() {
        return Err(invalid(
            "mtls_clients",
            "needs tls_client_ca_file to verify client certificates",
        ));
    }
    for client in &tls.mtls_clients {
        let hex_ok = client.fingerprint_sha256.len() == 64
            && client
                .fingerprint_sha256
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if !hex_ok {
            return Err(invalid(
                "mtls_clients.fingerprint_sha256",
                "must be 64 hex characters (SHA-256 of the DER certificate)",
            ));
        }
        tessera_common::ids::check_identifier("mtls_clients.name", &client.name)
            .map_err(|error| invalid("mtls_clients.name", error))?;
        if client.scopes.is_empty()
            || client
                .scopes
                .iter()
                .any(|scope| crate::auth::Scope::parse(scope).is_none())
        {
            return Err(invalid(
                "mtls_clients.scopes",
                "one or more of admin, issue, introspect, bundle:read",
            ));
        }
    }
    Ok(())
}

fn parse_addr(
    field: &str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("`{text}` is not a socket address like 127.0.0.1:50051"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_args(args: ServeArgs) -> Result<IssuerConfig, ConfigError> {
        resolve(args, FileConfig::default(), None, None)
    }

    #[test]
    fn defaults_are_the_development_setup() {
        let config = resolve_args(ServeArgs::default()).unwrap();
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert!(
            matches!(config.store, StoreConfig::Sqlite { ref path } if path.ends_with("tessera.db"))
        );
        assert!(matches!(config.kek, KekSource::DevelopmentFile(_)));
        assert_eq!(config.tokens.default_ttl, Duration::from_secs(900));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                ServeArgs {
                    grpc_addr: Some("nope".into()),
                    ..Default::default()
                },
                "grpc_addr",
            ),
            (
                ServeArgs {
                    database_url: Some("mysql://x".into()),
                    ..Default::default()
                },
                "database_url",
            ),
            (
                ServeArgs {
                    access_algorithm: Some("HS256".into()),
                    ..Default::default()
                },
                "access_algorithm",
            ),
            (
                ServeArgs {
                    overlap_hours: Some(0),
                    ..Default::default()
                },
                "overlap_hours",
            ),
            (
                ServeArgs {
                    tls_key_file: Some("k".into()),
                    ..Default::default()
                },
                "tls_cert_file",
            ),
            (
                ServeArgs {
                    heartbeat_seconds: Some(0),
                    ..Default::default()
                },
                "heartbeat_seconds",
            ),
        ];
        for (args, field) in cases {
            let error = resolve_args(args).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn overlap_shorter_than_token_lifetime_names_both_numbers() {
        let error = resolve_args(ServeArgs {
            overlap_hours: Some(1),
            max_access_token_ttl_seconds: Some(7200),
            access_token_ttl_seconds: Some(900),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("3600 s") && error.contains("7200 s"),
            "{error}"
        );
    }

    #[test]
    fn file_values_apply_under_flags() {
        let file: FileConfig =
            toml::from_str("grpc_addr = \"127.0.0.1:6000\"\nissuer = \"from-file\"").unwrap();
        let args = ServeArgs {
            issuer: Some("from-flag".into()),
            ..Default::default()
        };
        let config = resolve(args, file, None, None).unwrap();
        assert_eq!(config.grpc_addr.port(), 6000);
        assert_eq!(config.tokens.issuer, "from-flag");
        assert!(toml::from_str::<FileConfig>("unknown_key = 1").is_err());
    }
}

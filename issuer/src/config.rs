//! Configuration: flags, their environment variables and an optional TOML file, resolved
//! and validated into one `IssuerConfig` before any port is bound. Each setting is
//! declared once (`config/settings.rs`); key-set policies resolve in
//! `config/key_sets.rs`. Environment variables are read here and nowhere else. A bad value
//! is a `ConfigError` naming the field; the binary exits with code 64 on it.

mod bootstrap_clients;
pub mod delivery;
mod key_sets;
mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_common::keys::{KeySetName, KeySetPolicy};

pub use self::bootstrap_clients::BootstrapClient;
pub use self::key_sets::KeySetSettings;
pub use self::settings::ServeArgs;
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
    /// How often the API-key usage batch is written (and once more at shutdown).
    pub api_key_usage_flush: Duration,
    pub bootstrap_admin: bool,
    /// Clients created on start when their credential file does not hold a valid one.
    pub bootstrap_clients: Vec<BootstrapClient>,
    pub log_json: bool,
    pub otlp_endpoint: Option<String>,
    /// Challenge delivery providers, routes and one-time rate limits (`--challenge-config`).
    pub challenges: delivery::ChallengeSettings,
    /// The secrets engine's own admin connections (issue 12).
    pub secrets_rotators: crate::secrets::rotators::RotatorCredentials,
}

impl IssuerConfig {
    /// Resolves flags (and env) over the config file over defaults, and validates.
    pub fn resolve(args: &ServeArgs) -> Result<IssuerConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let environment = Environment {
            inline_kek: non_empty_env("TESSERA_KEK"),
            otlp_endpoint: non_empty_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        };
        resolve(args.clone().over(file), environment)
    }

    /// Returns the defaults with the given data directory (for tests and examples).
    pub fn development(data_dir: &Path) -> IssuerConfig {
        let args = ServeArgs {
            data_dir: Some(data_dir.to_path_buf()),
            ..ServeArgs::default()
        };
        // The defaults are valid by construction; a failure here is a bug in this file.
        resolve(args, Environment::default()).expect("default configuration is valid")
    }
}

/// The environment variables that are not also flags.
#[derive(Default)]
struct Environment {
    inline_kek: Option<String>,
    otlp_endpoint: Option<String>,
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid("config", format!("{}: {error}", path.display())))?;
    toml::from_str(&text).map_err(|error| invalid("config", format!("{}: {error}", path.display())))
}

/// Turns merged settings (flags over file) into the validated configuration.
fn resolve(settings: ServeArgs, environment: Environment) -> Result<IssuerConfig, ConfigError> {
    let grpc_addr = parse_addr("grpc_addr", settings.grpc_addr.clone(), "127.0.0.1:50051")?;
    let http_addr = parse_addr("http_addr", settings.http_addr.clone(), "127.0.0.1:8080")?;
    let data_dir = settings
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./tessera-data"));
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{http_addr}"))
        .trim_end_matches('/')
        .to_owned();
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        return Err(invalid("public_url", "must start with http:// or https://"));
    }
    // Discovery must name an address clients can reach, and a wildcard is not one.
    if settings.public_url.is_none() && http_addr.ip().is_unspecified() {
        return Err(invalid(
            "public_url",
            format!(
                "required when http_addr ({http_addr}) listens on every interface: discovery \
                 must advertise the URL clients reach the issuer at, e.g. http://issuer:{}",
                http_addr.port()
            ),
        ));
    }
    let store = store(&settings, &data_dir)?;
    let kek = match (environment.inline_kek, settings.kek_file.clone()) {
        (Some(text), _) => KekSource::Inline(zeroize::Zeroizing::new(text)),
        (None, Some(path)) => KekSource::File(path),
        (None, None) => KekSource::DevelopmentFile(data_dir.join("kek")),
    };
    let tokens = tokens(&settings)?;
    let key_policies = key_sets::policies(&settings, tokens.max_ttl)?;
    let tls = tls(&settings)?;
    let timers = timers(&settings, &key_policies)?;
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
        heartbeat: timers.heartbeat,
        refresh_ttl: timers.refresh_ttl,
        refresh_reuse_grace: timers.refresh_reuse_grace,
        rotation_check: timers.rotation_check,
        api_key_usage_flush: api_key_usage_flush(&settings)?,
        bootstrap_admin: settings.bootstrap_admin.unwrap_or(true),
        bootstrap_clients: bootstrap_clients::parse_all(
            settings.bootstrap_clients.as_deref().unwrap_or_default(),
        )?,
        log_json: settings.log_json.unwrap_or(false),
        otlp_endpoint: environment.otlp_endpoint,
        challenges: delivery::resolve(&settings)?,
        secrets_rotators: crate::secrets::rotators::RotatorCredentials {
            postgres_admin_url: settings.secrets_postgres_admin_url.clone(),
            redis_admin_url: settings.secrets_redis_admin_url.clone(),
        },
    })
}

/// The test hook `TESSERA_FAIL_POINT` (for example `secret-rotation:after-set`): the
/// secrets engine aborts the process when a rotation reaches that point, so the
/// crash-resume tests can kill the issuer between any two steps of a rotation. Read here
/// only; unset in production, where it changes nothing.
pub fn fail_point() -> Option<String> {
    non_empty_env("TESSERA_FAIL_POINT")
}

/// The API-key usage batch interval: what a crash may lose, and how stale
/// `last_used_at` may be.
fn api_key_usage_flush(settings: &ServeArgs) -> Result<Duration, ConfigError> {
    let seconds = settings.api_key_usage_flush_seconds.unwrap_or(5);
    if seconds == 0 || seconds > 300 {
        return Err(invalid(
            "api_key_usage_flush_seconds",
            "must be between 1 and 300",
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn store(settings: &ServeArgs, data_dir: &Path) -> Result<StoreConfig, ConfigError> {
    let pool_size = settings.database_pool_size.unwrap_or(16);
    if pool_size == 0 || pool_size > 1024 {
        return Err(invalid("database_pool_size", "must be between 1 and 1024"));
    }
    match settings.database_url.clone() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreConfig::Postgres(PostgresOptions {
                url,
                pool_size,
                ca_file: settings.database_ca_file.clone(),
                schema: None,
            }))
        }
        Some(_) => Err(invalid("database_url", "must be a postgres:// URL")),
        None => Ok(StoreConfig::Sqlite {
            path: data_dir.join("tessera.db"),
        }),
    }
}

fn tokens(settings: &ServeArgs) -> Result<TokenPolicy, ConfigError> {
    let default_ttl = settings.access_token_ttl_seconds.unwrap_or(900);
    let max_ttl = settings
        .max_access_token_ttl_seconds
        .unwrap_or(default_ttl.max(900));
    if default_ttl == 0 || default_ttl > max_ttl {
        return Err(invalid(
            "access_token_ttl_seconds",
            format!(
                "must be between 1 and max_access_token_ttl_seconds ({max_ttl}), got {default_ttl}"
            ),
        ));
    }
    // Token lifetimes are added to instants in milliseconds: refuse what cannot be.
    if max_ttl > i64::MAX as u64 / 1000 {
        return Err(invalid("max_access_token_ttl_seconds", "too large"));
    }
    let issuer = settings.issuer.clone().unwrap_or_else(|| "tessera".into());
    if issuer.is_empty() || issuer.len() > 256 {
        return Err(invalid("issuer", "must be 1 to 256 bytes"));
    }
    let audiences = settings
        .audiences
        .clone()
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
    Ok(TokenPolicy {
        issuer,
        audiences,
        default_ttl: Duration::from_secs(default_ttl),
        max_ttl: Duration::from_secs(max_ttl),
        min_ttl: Duration::from_secs(30.min(default_ttl)),
        ..TokenPolicy::default()
    })
}

fn tls(settings: &ServeArgs) -> Result<Option<TlsConfig>, ConfigError> {
    let tls = match (
        settings.tls_cert_file.clone(),
        settings.tls_key_file.clone(),
        settings.tls_client_ca_file.clone(),
    ) {
        (Some(cert_file), Some(key_file), client_ca_file) => Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            mtls_clients: settings.mtls_clients.clone(),
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
    } else if !settings.mtls_clients.is_empty() {
        return Err(invalid(
            "mtls_clients",
            "needs tls_cert_file, tls_key_file and tls_client_ca_file",
        ));
    }
    Ok(tls)
}

/// The periods the issuer's background work runs on.
struct Timers {
    heartbeat: Duration,
    refresh_ttl: Duration,
    refresh_reuse_grace: Duration,
    rotation_check: Duration,
}

fn timers(
    settings: &ServeArgs,
    key_policies: &BTreeMap<KeySetName, KeySetPolicy>,
) -> Result<Timers, ConfigError> {
    let heartbeat_seconds = settings.heartbeat_seconds.unwrap_or(5);
    if heartbeat_seconds == 0 || heartbeat_seconds > 3600 {
        return Err(invalid("heartbeat_seconds", "must be between 1 and 3600"));
    }
    let refresh_ttl_seconds = settings.refresh_ttl_seconds.unwrap_or(30 * 24 * 3600);
    if refresh_ttl_seconds < 60 {
        return Err(invalid("refresh_ttl_seconds", "must be at least 60"));
    }
    if refresh_ttl_seconds > i64::MAX as u64 / 1000 {
        return Err(invalid("refresh_ttl_seconds", "too large"));
    }
    let refresh_reuse_grace_seconds = settings.refresh_reuse_grace_seconds.unwrap_or(30);
    if refresh_reuse_grace_seconds > 600 {
        return Err(invalid(
            "refresh_reuse_grace_seconds",
            "must be at most 600",
        ));
    }
    // Every set's successor must be published by a scheduler run before it signs.
    let prepublish = key_policies
        .values()
        .map(|policy| policy.prepublish)
        .min()
        .unwrap_or(Duration::ZERO);
    let rotation_check_seconds = settings.rotation_check_seconds.unwrap_or(60);
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
    Ok(Timers {
        heartbeat: Duration::from_secs(heartbeat_seconds),
        refresh_ttl: Duration::from_secs(refresh_ttl_seconds),
        refresh_reuse_grace: Duration::from_secs(refresh_reuse_grace_seconds),
        rotation_check: Duration::from_secs(rotation_check_seconds),
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
    use clap::{Args, Command};

    use super::*;

    fn resolve_args(args: ServeArgs) -> Result<IssuerConfig, ConfigError> {
        resolve(args, Environment::default())
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
        assert_eq!(config.key_policies.len(), KeySetName::ALL.len());
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
                    prepublish_seconds: Some(100 * 24 * 3600),
                    ..Default::default()
                },
                "prepublish_seconds",
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
            (
                ServeArgs {
                    key_set_policy: vec!["webhook.overlap_days=0".into()],
                    ..Default::default()
                },
                "key_sets.webhook.overlap_days",
            ),
            (
                ServeArgs {
                    max_access_token_ttl_seconds: Some(u64::MAX),
                    ..Default::default()
                },
                "max_access_token_ttl_seconds",
            ),
            (
                ServeArgs {
                    http_addr: Some("0.0.0.0:8080".into()),
                    ..Default::default()
                },
                "public_url",
            ),
            (
                ServeArgs {
                    bootstrap_clients: Some(vec!["name=sidecar,file=f".into()]),
                    ..Default::default()
                },
                "bootstrap_clients",
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
        let file: ServeArgs = toml::from_str(
            "grpc_addr = \"127.0.0.1:6000\"\nissuer = \"from-file\"\n\
             [key_sets.webhook]\noverlap_days = 4\n",
        )
        .unwrap();
        let args = ServeArgs {
            issuer: Some("from-flag".into()),
            ..Default::default()
        };
        let config = resolve_args(args.over(file)).unwrap();
        assert_eq!(config.grpc_addr.port(), 6000);
        assert_eq!(config.tokens.issuer, "from-flag");
        assert_eq!(
            config.key_policies[&KeySetName::Webhook].overlap,
            Duration::from_secs(4 * 24 * 3600)
        );
        assert!(toml::from_str::<ServeArgs>("unknown_key = 1").is_err());
        // Flag-only settings are not file keys.
        assert!(toml::from_str::<ServeArgs>("config = \"other.toml\"").is_err());
        assert!(toml::from_str::<ServeArgs>("key_set_policy = []").is_err());
    }

    #[test]
    fn a_wildcard_listener_advertises_the_public_url() {
        let config = resolve_args(ServeArgs {
            http_addr: Some("0.0.0.0:8080".into()),
            public_url: Some("http://issuer:8080/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.public_url, "http://issuer:8080");
        let loopback = resolve_args(ServeArgs::default()).unwrap();
        assert_eq!(loopback.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn bootstrap_clients_come_from_the_file_as_a_list() {
        let file: ServeArgs = toml::from_str(
            "bootstrap_clients = [\"name=sidecar,scope=bundle:read,file=/creds/sidecar.token\"]\n",
        )
        .unwrap();
        let config = resolve_args(ServeArgs::default().over(file)).unwrap();
        assert_eq!(config.bootstrap_clients.len(), 1);
        assert_eq!(config.bootstrap_clients[0].name, "sidecar");
        assert_eq!(
            config.bootstrap_clients[0].file,
            Path::new("/creds/sidecar.token")
        );
        assert!(
            resolve_args(ServeArgs::default())
                .unwrap()
                .bootstrap_clients
                .is_empty()
        );
    }

    /// The point of `settings.rs`: one declaration gives each setting a flag, an
    /// environment variable and a file key, all of the same name.
    #[test]
    fn every_setting_is_a_flag_an_env_var_and_a_file_key_of_one_name() {
        let command = ServeArgs::augment_args(Command::new("serve"));
        let mut n_settings = 0;
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let flag = arg.get_long().unwrap_or_default();
            assert_eq!(flag, id.replace('_', "-"), "flag of {id}");
            let env = arg
                .get_env()
                .and_then(|env| env.to_str())
                .unwrap_or_default();
            assert_eq!(env, format!("TESSERA_{}", id.to_uppercase()), "env of {id}");
            if id == "config" || id == "key_set_policy" {
                continue;
            }
            // A value of the wrong type is refused as such, never as an unknown key.
            let parsed = toml::from_str::<ServeArgs>(&format!("{id} = {{}}"));
            let message = parsed.expect_err(id).to_string();
            assert!(!message.contains("unknown field"), "{id}: {message}");
            n_settings += 1;
        }
        assert_eq!(n_settings, 31, "a setting was added or lost");
    }

    #[test]
    fn environment_names_the_issuer_always_used_still_apply() {
        // Through clap, as the binary parses them.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let command = <Cli as clap::CommandFactory>::command();
        let envs: Vec<_> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env()?.to_str().map(str::to_owned))
            .collect();
        for name in [
            "TESSERA_GRPC_ADDR",
            "TESSERA_DATABASE_URL",
            "TESSERA_KEK_FILE",
            "TESSERA_ROTATE_EVERY_DAYS",
            "TESSERA_OVERLAP_HOURS",
            "TESSERA_PREPUBLISH_SECONDS",
            "TESSERA_ACCESS_ALGORITHM",
            "TESSERA_LOG_JSON",
            "TESSERA_KEY_SET_POLICY",
        ] {
            assert!(envs.iter().any(|env| env == name), "{name} missing");
        }
    }
}

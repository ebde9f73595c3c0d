//! Every `serve` setting, declared once. One field of [`ServeArgs`] is at the same time
//! the flag (`--grpc-addr`), its environment variable (`TESSERA_GRPC_ADDR`, both through
//! clap) and the config-file key (`grpc_addr`, through serde on the same struct), and the
//! one merge, [`ServeArgs::over`] (flags and environment over the file), is generated
//! from the same list. Defaults and checks live where each value is resolved
//! (`config.rs`), next to the domain type it becomes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tessera_common::keys::KeySetName;

use super::MtlsClientConfig;
use super::key_sets::KeySetSettings;

/// Declares `ServeArgs` from one list of `name: Type = "ENV_VAR" [extra clap args];`
/// lines and generates its merge, so adding a setting is one line.
macro_rules! serve_settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = $env:literal $([$($extra:tt)*])?;
    )*) => {
        /// `tessera-issuer serve` settings. Each is a flag, an environment variable and a
        /// key of the same name (with underscores) in the TOML file given with
        /// `--config`; a flag or variable wins over the file.
        #[derive(clap::Args, serde::Deserialize, Default, Clone)]
        #[serde(deny_unknown_fields)]
        pub struct ServeArgs {
            /// TOML configuration file.
            #[arg(long, env = "TESSERA_CONFIG")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, $($extra)*)?)]
                pub $name: Option<$ty>,
            )*
            /// Policy of one key set as SET.FIELD=VALUE (repeat, or separate with commas),
            /// e.g. `webhook.overlap_days=3`; the fields of a `[key_sets.SET]` table:
            /// algorithm, rotate_every_days, overlap_days, prepublish_seconds.
            #[arg(
                long,
                env = "TESSERA_KEY_SET_POLICY",
                value_delimiter = ',',
                value_name = "SET.FIELD=VALUE"
            )]
            #[serde(skip)]
            pub key_set_policy: Vec<String>,
            /// `[key_sets.<set>]` tables (config file; on the command line see
            /// `--key-set-policy`).
            #[arg(skip)]
            #[serde(default)]
            pub key_sets: BTreeMap<KeySetName, KeySetSettings>,
            /// `[[mtls_clients]]` (config file only).
            #[arg(skip)]
            #[serde(default)]
            pub mtls_clients: Vec<MtlsClientConfig>,
        }

        /// Shows every setting but the secret ones (`SECRET_SETTINGS`), which show only
        /// whether they are set.
        impl std::fmt::Debug for ServeArgs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("ServeArgs");
                out.field("config", &self.config);
                $(
                    if SECRET_SETTINGS.contains(&stringify!($name)) {
                        out.field(stringify!($name), &self.$name.as_ref().map(|_| "<redacted>"));
                    } else {
                        out.field(stringify!($name), &self.$name);
                    }
                )*
                out.field("key_set_policy", &self.key_set_policy)
                    .field("key_sets", &self.key_sets)
                    .field("mtls_clients", &self.mtls_clients)
                    .finish()
            }
        }

        impl ServeArgs {
            /// Returns these settings (flags and environment) with each one left unset
            /// taken from `file`. Key-set tables merge field by field in
            /// `key_sets::policies`, where the flag form is parsed.
            pub(super) fn over(self, file: ServeArgs) -> ServeArgs {
                ServeArgs {
                    config: self.config,
                    $( $name: self.$name.or(file.$name), )*
                    key_set_policy: self.key_set_policy,
                    key_sets: file.key_sets,
                    mtls_clients: file.mtls_clients,
                }
            }
        }
    };
}

/// Settings whose value may hold a secret (a PostgreSQL URL may carry a password).
const SECRET_SETTINGS: &[&str] = &[
    "database_url",
    "secrets_postgres_admin_url",
    "secrets_redis_admin_url",
];

serve_settings! {
    /// gRPC listen address [default: 127.0.0.1:50051].
    grpc_addr: String = "TESSERA_GRPC_ADDR";
    /// HTTP listen address for JWKS, discovery, health and metrics [default: 127.0.0.1:8080].
    http_addr: String = "TESSERA_HTTP_ADDR";
    /// Directory for the embedded database, the development KEK and the admin token
    /// [default: ./tessera-data].
    data_dir: PathBuf = "TESSERA_DATA_DIR";
    /// PostgreSQL URL; without it state lives in <data-dir>/tessera.db (SQLite).
    database_url: String = "TESSERA_DATABASE_URL" [hide_env_values = true];
    /// PostgreSQL URL of the role the secrets engine rotates `postgres` secrets with (it
    /// must be allowed to ALTER ROLE the alternated roles); never taken from a request.
    secrets_postgres_admin_url: String = "TESSERA_SECRETS_POSTGRES_ADMIN_URL" [hide_env_values = true];
    /// Redis URL (`redis://[user:password@]host:port`) of the user the secrets engine
    /// rotates `redis` secrets with (it must be allowed ACL SETUSER).
    secrets_redis_admin_url: String = "TESSERA_SECRETS_REDIS_ADMIN_URL" [hide_env_values = true];
    /// PostgreSQL connection pool size [default: 16].
    database_pool_size: usize = "TESSERA_DATABASE_POOL_SIZE";
    /// CA certificate (PEM) for PostgreSQL TLS.
    database_ca_file: PathBuf = "TESSERA_DATABASE_CA_FILE";
    /// File holding the base64 KEK; TESSERA_KEK may hold it directly. Without either, a
    /// development KEK is created at <data-dir>/kek.
    kek_file: PathBuf = "TESSERA_KEK_FILE";
    /// `iss` of every token [default: tessera].
    issuer: String = "TESSERA_ISSUER";
    /// Audiences tokens may be issued for, comma-separated; the first is the default
    /// [default: tessera-api].
    audiences: Vec<String> = "TESSERA_AUDIENCES" [value_delimiter = ','];
    /// Public base URL of the HTTP endpoint, used in discovery [default: http://<http-addr>].
    public_url: String = "TESSERA_PUBLIC_URL";
    /// Algorithm of new `access` keys: RS256, ES256 or EdDSA [default: RS256]; the same as
    /// `key_sets.access.algorithm`, which wins.
    access_algorithm: String = "TESSERA_ACCESS_ALGORITHM";
    /// Algorithm of new `action` keys [default: RS256]; `key_sets.action.algorithm` wins.
    action_algorithm: String = "TESSERA_ACTION_ALGORITHM";
    /// Days an `access` or `action` key signs before its scheduled successor takes over
    /// [default: 90]; `key_sets.<set>.rotate_every_days` wins.
    rotate_every_days: u64 = "TESSERA_ROTATE_EVERY_DAYS";
    /// Hours a replaced `access` or `action` key keeps verifying [default: 168];
    /// `key_sets.<set>.overlap_days` wins.
    overlap_hours: u64 = "TESSERA_OVERLAP_HOURS";
    /// Seconds an `access` or `action` successor is published before it signs
    /// [default: 3600]; `key_sets.<set>.prepublish_seconds` wins.
    prepublish_seconds: u64 = "TESSERA_PREPUBLISH_SECONDS";
    /// Default access-token lifetime, seconds [default: 900].
    access_token_ttl_seconds: u64 = "TESSERA_ACCESS_TOKEN_TTL_SECONDS";
    /// Longest access-token lifetime a caller may ask for, seconds [default: 900].
    max_access_token_ttl_seconds: u64 = "TESSERA_MAX_ACCESS_TOKEN_TTL_SECONDS";
    /// Server certificate (PEM) for gRPC TLS.
    tls_cert_file: PathBuf = "TESSERA_TLS_CERT_FILE";
    /// Server private key (PEM) for gRPC TLS.
    tls_key_file: PathBuf = "TESSERA_TLS_KEY_FILE";
    /// CA (PEM) that client certificates must chain to (enables mTLS).
    tls_client_ca_file: PathBuf = "TESSERA_TLS_CLIENT_CA_FILE";
    /// Seconds between heartbeats on idle trust-bundle streams [default: 5].
    heartbeat_seconds: u64 = "TESSERA_HEARTBEAT_SECONDS";
    /// Seconds between rotation-scheduler runs [default: 60].
    rotation_check_seconds: u64 = "TESSERA_ROTATION_CHECK_SECONDS";
    /// Seconds between writes of the API-key usage batch (also written at shutdown)
    /// [default: 5].
    api_key_usage_flush_seconds: u64 = "TESSERA_API_KEY_USAGE_FLUSH_SECONDS";
    /// Lifetime of each refresh token, seconds [default: 2592000 = 30 days].
    refresh_ttl_seconds: u64 = "TESSERA_REFRESH_TTL_SECONDS";
    /// Seconds a just-rotated refresh token still returns the same successor (concurrent
    /// tabs); 0 disables [default: 30].
    refresh_reuse_grace_seconds: u64 = "TESSERA_REFRESH_REUSE_GRACE_SECONDS";
    /// Create <data-dir>/admin.token on first start when it is missing [default: true].
    bootstrap_admin: bool = "TESSERA_BOOTSTRAP_ADMIN";
    /// API clients to create on start, each `name=NAME,scope=SCOPE[,scope=…][,tenant=…],
    /// file=PATH` (repeat the flag, or separate entries with `;`): unless PATH already holds
    /// a valid credential of that name, a new client is created and its credential written
    /// to PATH (mode 0600), e.g. a sidecar's `bundle:read` credential on a shared volume.
    bootstrap_clients: Vec<String> = "TESSERA_BOOTSTRAP_CLIENTS" [value_delimiter = ';', value_name = "name=N,scope=S,file=F"];
    /// Challenge settings file (TOML): delivery providers, each challenge method's
    /// primary and backup, the magic-link base URL, one-time rate limits; see
    /// `config/delivery.rs` [default: no providers, default limits].
    challenge_config: PathBuf = "TESSERA_CHALLENGE_CONFIG";
    /// Log as JSON lines [default: false].
    log_json: bool = "TESSERA_LOG_JSON";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_database_url() {
        let settings = ServeArgs {
            database_url: Some("postgres://tessera:hunter2@db/tessera".into()),
            issuer: Some("tessera".into()),
            ..ServeArgs::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("database_url: Some(\"<redacted>\")"),
            "{debug}"
        );
        assert!(debug.contains("issuer: Some(\"tessera\")"), "{debug}");
    }
}

//! Command-line flags and environment variables, validated into an [`InjectorConfig`]
//! before anything is bound. This is the only module that reads the environment. Parsing
//! reads no file: the TLS files are loaded by [`crate::tls`] at start-up.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::annotations::{self, SidecarMode, StalePolicy};

/// Exit code for a configuration error (`EX_USAGE` of sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// The largest admission request body accepted by default. The API server stores objects
/// of at most 1.5 MiB (etcd's request limit), and a CREATE review carries one object, so
/// 2 MiB holds every pod the cluster could store while bounding what a caller can make
/// the injector buffer.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How the kubelet decides the sidecar is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadinessProbe {
    /// A `grpc:` probe of `grpc.health.v1` for `tessera.v1.ValidatorService`; the sidecar
    /// also serves the validator on the TCP health port (the kubelet probes the pod IP).
    Grpc,
    /// An `httpGet` of `/readyz` on the sidecar's HTTP port (the same readiness); the
    /// validator stays on the Unix socket only.
    Http,
}

/// The injector's flags, each also readable from its environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "tessera-injector",
    version,
    about = "Tessera sidecar injector (Kubernetes mutating admission webhook)"
)]
struct Cli {
    /// HTTPS address the webhook serves on.
    #[arg(long, env = "TESSERA_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    listen: String,
    /// PEM certificate chain of the webhook (its names must cover the Service's DNS name).
    #[arg(long, env = "TESSERA_INJECTOR_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "TESSERA_INJECTOR_TLS_KEY_FILE")]
    tls_key_file: PathBuf,
    /// How often the certificate files are re-read (a renewed certificate is served
    /// without a restart), seconds.
    #[arg(
        long,
        env = "TESSERA_INJECTOR_TLS_RELOAD_SECONDS",
        default_value_t = 30
    )]
    tls_reload_seconds: u64,
    /// Sidecar image injected unless a pod names another (`tessera.dev/image`).
    #[arg(long, env = "TESSERA_INJECTOR_SIDECAR_IMAGE")]
    sidecar_image: String,
    /// Issuer address the sidecar connects to (`http://` or `https://`).
    #[arg(long, env = "TESSERA_INJECTOR_ISSUER_ADDR")]
    issuer_addr: String,
    /// Secret (in the pod's namespace) holding the sidecar's `token` (a `bundle:read`
    /// credential) and, for an https issuer, `ca.pem`.
    #[arg(
        long,
        env = "TESSERA_INJECTOR_CREDENTIAL_SECRET",
        default_value = "tessera-sidecar-credential"
    )]
    credential_secret: String,
    /// Socket path the application is told about (`tessera.dev/socket-path`).
    #[arg(
        long,
        env = "TESSERA_INJECTOR_SOCKET_PATH",
        default_value = "/run/tessera/sidecar.sock"
    )]
    socket_path: String,
    /// Default stale policy of injected sidecars (`tessera.dev/stale-policy`).
    #[arg(
        long,
        env = "TESSERA_INJECTOR_STALE_POLICY",
        value_enum,
        default_value = "fail-closed"
    )]
    stale_policy: StalePolicy,
    /// How injected sidecars run (`tessera.dev/sidecar-mode`): `native` needs
    /// Kubernetes 1.29 or later.
    #[arg(
        long,
        env = "TESSERA_INJECTOR_SIDECAR_MODE",
        value_enum,
        default_value = "container"
    )]
    sidecar_mode: SidecarMode,
    /// Readiness probe of injected sidecars.
    #[arg(
        long,
        env = "TESSERA_INJECTOR_READINESS_PROBE",
        value_enum,
        default_value = "grpc"
    )]
    readiness_probe: ReadinessProbe,
    /// Sidecar port for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "TESSERA_INJECTOR_SIDECAR_HTTP_PORT",
        default_value_t = 9090
    )]
    sidecar_http_port: u16,
    /// Sidecar TCP gRPC port probed by the kubelet (with `--readiness-probe grpc`).
    #[arg(
        long,
        env = "TESSERA_INJECTOR_SIDECAR_GRPC_PORT",
        default_value_t = 9091
    )]
    sidecar_grpc_port: u16,
    /// CPU request of the sidecar.
    #[arg(long, env = "TESSERA_INJECTOR_CPU_REQUEST", default_value = "50m")]
    cpu_request: String,
    /// Memory request of the sidecar.
    #[arg(long, env = "TESSERA_INJECTOR_MEMORY_REQUEST", default_value = "24Mi")]
    memory_request: String,
    /// Memory limit of the sidecar.
    #[arg(long, env = "TESSERA_INJECTOR_MEMORY_LIMIT", default_value = "64Mi")]
    memory_limit: String,
    /// CPU limit of the sidecar (none by default: a throttled validator adds latency to
    /// every request of the application).
    #[arg(long, env = "TESSERA_INJECTOR_CPU_LIMIT")]
    cpu_limit: Option<String>,
    /// OTLP collector the injected sidecars export spans to.
    #[arg(long, env = "TESSERA_INJECTOR_SIDECAR_OTLP_ENDPOINT")]
    sidecar_otlp_endpoint: Option<String>,
    /// Largest admission request body accepted, bytes (larger: 413).
    #[arg(long, env = "TESSERA_INJECTOR_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Log as JSON lines [default: false] (the issuer's and the sidecar's setting).
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: Option<bool>,
}

/// A validated injector configuration.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    pub serve: ServeConfig,
    pub sidecar: SidecarDefaults,
    /// OTLP/gRPC collector of the injector's own spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    pub log_json: bool,
}

/// Where and how the webhook serves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub tls_reload_interval: Duration,
    pub max_body_bytes: usize,
}

/// What an injected sidecar looks like when the pod's annotations override nothing. The
/// mutation ([`crate::mutate`]) reads only this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarDefaults {
    pub image: String,
    pub issuer_addr: String,
    pub credential_secret: String,
    pub socket_path: String,
    pub stale_policy: StalePolicy,
    pub sidecar_mode: SidecarMode,
    pub readiness_probe: ReadinessProbe,
    pub http_port: u16,
    pub grpc_port: u16,
    pub resources: Resources,
    pub otlp_endpoint: Option<String>,
}

/// Resource requests and limits of the sidecar, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub cpu_limit: Option<String>,
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

// === impl InjectorConfig ===

impl InjectorConfig {
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
        let otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|value| !value.is_empty());
        cli.validate(otlp_endpoint)
    }
}

// === impl Cli ===

impl Cli {
    fn validate(self, otlp_endpoint: Option<String>) -> Result<InjectorConfig, ConfigError> {
        let listen = self
            .listen
            .parse()
            .map_err(|_| invalid("listen", format!("not an address: {:?}", self.listen)))?;
        if self.tls_reload_seconds == 0 || self.tls_reload_seconds > 86_400 {
            return Err(invalid("tls_reload_seconds", "must be 1 to 86400"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid("max_body_bytes", "must be 1024 to 67108864"));
        }
        annotations::check_image(&self.sidecar_image)
            .map_err(|detail| invalid("sidecar_image", detail))?;
        if !(self.issuer_addr.starts_with("http://") || self.issuer_addr.starts_with("https://"))
            || self
                .issuer_addr
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "issuer_addr",
                "must be an http:// or https:// address",
            ));
        }
        annotations::check_secret_name(&self.credential_secret)
            .map_err(|detail| invalid("credential_secret", detail))?;
        annotations::check_socket_path(&self.socket_path)
            .map_err(|detail| invalid("socket_path", detail))?;
        if self.sidecar_http_port == 0 || self.sidecar_grpc_port == 0 {
            return Err(invalid("sidecar_http_port", "ports must not be 0"));
        }
        if self.sidecar_http_port == self.sidecar_grpc_port {
            return Err(invalid(
                "sidecar_grpc_port",
                "must differ from --sidecar-http-port",
            ));
        }
        let quantities = [
            ("cpu_request", Some(&self.cpu_request)),
            ("memory_request", Some(&self.memory_request)),
            ("memory_limit", Some(&self.memory_limit)),
            ("cpu_limit", self.cpu_limit.as_ref()),
        ];
        for (field, value) in quantities {
            if let Some(value) = value
                && !is_quantity(value)
            {
                return Err(invalid(field, format!("not a quantity: {value:?}")));
            }
        }
        if let Some(endpoint) = &self.sidecar_otlp_endpoint
            && (endpoint.is_empty() || endpoint.chars().any(|c| c.is_whitespace()))
        {
            return Err(invalid("sidecar_otlp_endpoint", "must be an address"));
        }
        Ok(InjectorConfig {
            serve: ServeConfig {
                listen,
                tls_cert_file: self.tls_cert_file,
                tls_key_file: self.tls_key_file,
                tls_reload_interval: Duration::from_secs(self.tls_reload_seconds),
                max_body_bytes: self.max_body_bytes,
            },
            sidecar: SidecarDefaults {
                image: self.sidecar_image,
                issuer_addr: self.issuer_addr,
                credential_secret: self.credential_secret,
                socket_path: self.socket_path,
                stale_policy: self.stale_policy,
                sidecar_mode: self.sidecar_mode,
                readiness_probe: self.readiness_probe,
                http_port: self.sidecar_http_port,
                grpc_port: self.sidecar_grpc_port,
                resources: Resources {
                    cpu_request: self.cpu_request,
                    memory_request: self.memory_request,
                    memory_limit: self.memory_limit,
                    cpu_limit: self.cpu_limit,
                },
                otlp_endpoint: self.sidecar_otlp_endpoint,
            },
            otlp_endpoint,
            log_json: self.log_json.unwrap_or(false),
        })
    }
}

/// Returns whether `value` has the shape of a Kubernetes quantity (`50m`, `0.5`, `64Mi`,
/// `1e3`): a decimal number and an optional suffix the API server knows.
fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
    ];
    let number_len = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_len);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.len() <= 20;
    number_ok && (SUFFIXES.contains(&suffix) || suffix == "Ei")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<InjectorConfig, ConfigError> {
        let mut args = vec![
            "tessera-injector",
            "--tls-cert-file",
            "/tls/tls.crt",
            "--tls-key-file",
            "/tls/tls.key",
            "--issuer-addr",
            "https://tessera-issuer.tessera.svc:50051",
        ];
        if !extra.contains(&"--sidecar-image") {
            args.extend(["--sidecar-image", "registry.example.com/tessera:0.1.0"]);
        }
        args.extend_from_slice(extra);
        InjectorConfig::parse_from(args)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.serve.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(config.serve.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.sidecar.socket_path, "/run/tessera/sidecar.sock");
        assert_eq!(
            config.sidecar.credential_secret,
            "tessera-sidecar-credential"
        );
        assert_eq!(config.sidecar.stale_policy, StalePolicy::FailClosed);
        assert_eq!(config.sidecar.readiness_probe, ReadinessProbe::Grpc);
        assert_eq!(config.sidecar.sidecar_mode, SidecarMode::Container);
        assert_eq!(config.sidecar.resources.cpu_limit, None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: [(&[&str], &str); 8] = [
            (&["--listen", "8443"], "listen"),
            (&["--socket-path", "relative.sock"], "socket_path"),
            (&["--credential-secret", "Not_A_Name"], "credential_secret"),
            (&["--memory-limit", "lots"], "memory_limit"),
            (&["--cpu-limit", "1.2.3"], "cpu_limit"),
            (&["--sidecar-grpc-port", "9090"], "sidecar_grpc_port"),
            (&["--max-body-bytes", "10"], "max_body_bytes"),
            (&["--sidecar-image", "a b"], "sidecar_image"),
        ];
        for (args, field) in cases {
            match parse(args) {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field, "{args:?}"),
                other => panic!("{args:?}: expected an error naming {field}, got {other:?}"),
            }
        }
        let error = parse(&["--stale-policy", "maybe"]).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_CONFIG);
    }

    #[test]
    fn quantities() {
        for good in ["50m", "1", "0.5", "64Mi", "1Gi", "100k", "2Ei"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "Mi", ".", "1..2", "64MB", "-1", "1 Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}

//! `tessera-issuer`: `serve` runs the issuer; the other subcommands administer a running
//! one over gRPC. Parses arguments, initialises telemetry, binds, and hands over to the
//! library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tessera_common::SystemClock;
use tessera_issuer::cli::{
    self, AuditCommand, ClientsCommand, ConnectArgs, KeysCommand, RevokeTarget, SessionCommand,
    TokenCommand,
};
use tessera_issuer::config::{IssuerConfig, ServeArgs};
use tessera_issuer::scan::ScanArgs;
use tessera_issuer::server::Issuer;

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Tessera issuer: signs access tokens, rotates signing keys on schedule with overlap
/// windows, and streams the trust bundle (keys + revocations) to validator sidecars.
///
/// Quick start: `tessera-issuer serve` keeps its state in ./tessera-data (SQLite), creates
/// a development KEK and an admin credential there, and listens on 127.0.0.1:50051 (gRPC)
/// and 127.0.0.1:8080 (HTTP). In another shell, `tessera-issuer token issue --subject
/// alice --tenant acme` prints a token signed by it.
#[derive(Parser, Debug)]
#[command(name = "tessera-issuer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the issuer.
    Serve(Box<ServeArgs>),
    /// Inspect, rotate and revoke signing keys.
    Keys {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Issue and introspect access tokens.
    Token {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Signed action links (`tba_…`): create, consume exactly once, inspect (also
    /// `tbr_`/`tbe_` tokens).
    ActionLinks {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::action_links::ActionLinksCommand,
    },
    /// Create, list, show, rotate, revoke and validate tenant API keys (`tbk_…`).
    Apikeys {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::apikeys::ApiKeysCommand,
    },
    /// Service identities and their short-lived tokens (`tbs_…`); validate `tbs_`/`tbw_`.
    ServiceTokens {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::service_tokens::ServiceTokensCommand,
    },
    /// Sign and verify webhooks (Standard Webhooks format), show a tenant's secrets, and
    /// issue webhook tokens (`tbw_…`).
    Webhooks {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::webhooks::WebhooksCommand,
    },
    /// One-time login challenges: start an OTP or magic link, verify a code, invalidate
    /// a tenant's live challenges and one-time tokens.
    Challenges {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::challenges::ChallengesCommand,
    },
    /// Challenge delivery providers: list, disable (provider compromise), enable.
    Providers {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::providers::ProvidersCommand,
    },
    /// Log in (sessions with rotating refresh tokens), refresh, log out.
    Session {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Revoke tokens by jti, session, user, tenant, refresh family or all; sidecars
    /// reject them within milliseconds.
    Revoke {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        target: RevokeTarget,
        /// Tenant the jti/session/user/family belongs to (confines the entry).
        #[arg(long, default_value = "")]
        tenant: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Emergency revocation: one tenant, or everything (every key set rotated too).
    Emergency {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Revoke every token and session of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Revoke everything and rotate every key set.
        #[arg(long)]
        global: bool,
        /// Incident id: repeating the command with the same id changes nothing.
        #[arg(long)]
        incident: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Create, list and disable API clients (callers of the issuer).
    Clients {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// The secrets inventory: register, list (age, due date, overdue), show, rotate,
    /// roll back, history, put.
    Secrets {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: cli::secrets::SecretsCommand,
    },
    /// Rotate secrets now and revoke their previous values at once (a suspected
    /// compromise); reports per secret.
    EmergencyRotate {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The secrets to rotate.
        names: Vec<String>,
        /// Every secret Tessera can rotate (external ones are listed as skipped).
        #[arg(long)]
        all: bool,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Find leaked Tessera credentials (every prefix, by checksum) in files, directories,
    /// git history (--git) or staged changes (--staged). Exit 0: none found; 1: found;
    /// 2: the scan could not complete; 64: bad flags.
    Scan(Box<ScanArgs>),
}

/// Prefix of every error this program prints, the sidecar's style (`tessera-sidecar: error:`).
const ERROR_PREFIX: &str = "tessera-issuer: error:";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{ERROR_PREFIX} cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Serve(args) => return serve(*args).await,
            Command::Scan(args) => return tessera_issuer::scan::run(*args).await,
            Command::Keys { connect, command } => cli::keys(&connect, command).await,
            Command::Token { connect, command } => cli::token(&connect, command).await,
            Command::Clients { connect, command } => cli::clients(&connect, command).await,
            Command::Session { connect, command } => cli::session(&connect, command).await,
            Command::Revoke {
                connect,
                target,
                tenant,
                reason,
            } => cli::revoke(&connect, target, tenant, reason).await,
            Command::Emergency {
                connect,
                tenant,
                global,
                incident,
                reason,
            } => cli::emergency(&connect, tenant, global, incident, reason).await,
            Command::Audit { connect, command } => cli::audit(&connect, command).await,
            Command::Secrets { connect, command } => cli::secrets::secrets(&connect, command).await,
            Command::EmergencyRotate {
                connect,
                names,
                all,
                reason,
            } => cli::secrets::emergency_rotate(&connect, names, all, reason).await,
            Command::Webhooks { connect, command } => {
                cli::webhooks::webhooks(&connect, command).await
            }
            Command::Apikeys { connect, command } => cli::apikeys::apikeys(&connect, command).await,
            Command::ActionLinks { connect, command } => {
                cli::action_links::action_links(&connect, command).await
            }
            Command::Challenges { connect, command } => {
                cli::challenges::challenges(&connect, command).await
            }
            Command::Providers { connect, command } => {
                cli::providers::providers(&connect, command).await
            }
            Command::ServiceTokens { connect, command } => {
                cli::service_tokens::service_tokens(&connect, command).await
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                match error.downcast_ref::<tonic::Status>() {
                    Some(status) => {
                        eprintln!("{ERROR_PREFIX} {} ({:?})", status.message(), status.code())
                    }
                    None => eprintln!("{ERROR_PREFIX} {error:#}"),
                }
                ExitCode::FAILURE
            }
        }
    })
}

/// Reports a command-line error: `--help` and `--version` print to stdout and exit 0;
/// an unknown flag, a missing or unparsable value exits 64 (EX_USAGE, as a bad
/// configuration does) with clap's message, which names the flag.
fn usage_error(error: &clap::Error) -> ExitCode {
    if !error.use_stderr() {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let rendered = error.render().to_string();
    let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    eprint!("{ERROR_PREFIX} {message}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match IssuerConfig::resolve(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{ERROR_PREFIX} {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _telemetry = tessera_common::telemetry::init(
        "tessera-issuer",
        config.otlp_endpoint.as_deref(),
        config.log_json,
    );
    let issuer = match Issuer::start(config.clone(), Arc::new(SystemClock)).await {
        Ok(issuer) => issuer,
        Err(error) => {
            tracing::error!("start-up failed: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let grpc = match tokio::net::TcpListener::bind(config.grpc_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %config.grpc_addr, "cannot bind gRPC: {error}");
            return ExitCode::FAILURE;
        }
    };
    let http = match tokio::net::TcpListener::bind(config.http_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %config.http_addr, "cannot bind HTTP: {error}");
            return ExitCode::FAILURE;
        }
    };
    match issuer.serve(grpc, http, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

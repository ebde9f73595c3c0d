//! The admin CLI: subcommands that talk gRPC to a running issuer, with human-readable or
//! `--json` output.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tessera_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub mod action_links;
pub mod apikeys;
pub mod challenges;
pub mod providers;
pub mod secrets;
pub mod service_tokens;
pub mod webhook_tokens;
pub mod webhooks;

/// How to reach and authenticate to the issuer.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Issuer gRPC address.
    #[arg(
        long,
        env = "TESSERA_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// File holding the credential. Default: the TESSERA_TOKEN variable, else
    /// <data-dir>/admin.token.
    #[arg(long, env = "TESSERA_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Data directory whose admin.token is used when no credential is given.
    #[arg(
        long,
        env = "TESSERA_DATA_DIR",
        default_value = "./tessera-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// CA certificate (PEM) to verify an https:// issuer.
    #[arg(long, env = "TESSERA_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `tessera-issuer keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List signing keys with their states.
    List {
        /// Only this key set (access, action, webhook).
        #[arg(long)]
        key_set: Option<String>,
        /// Include retired and revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Rotate a key set: a new key signs, the old one verifies through the overlap window.
    Rotate {
        /// Key set to rotate (access, action, webhook).
        #[arg(long, default_value = "access")]
        key_set: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Revoke every key of the set the issuer held (signer, retiring, pending) at once
        /// and delete their private keys: their tokens stop validating everywhere.
        #[arg(long)]
        emergency: bool,
        /// Publish the new key this many seconds before it signs.
        #[arg(long, default_value_t = 0)]
        prepublish_seconds: u32,
    },
    /// Revoke one key: unpublished at once, its tokens rejected by every sidecar.
    Revoke {
        /// Key id.
        kid: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `tessera-issuer token …`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue an access token.
    Issue {
        /// Subject (user id).
        #[arg(long)]
        subject: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Role (owner, manager, staff, viewer, api_partner, …).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A permission (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Audience (default: the issuer's first audience).
        #[arg(long, default_value = "")]
        audience: String,
        /// Lifetime in seconds (default: the issuer's, 900).
        #[arg(long, default_value_t = 0)]
        ttl_seconds: u32,
        /// Session id (default: a fresh one).
        #[arg(long, default_value = "")]
        session_id: String,
        /// Mark the token MFA-verified.
        #[arg(long)]
        mfa: bool,
        /// A feature flag (repeatable).
        #[arg(long = "feature")]
        features: Vec<String>,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Introspect a token (`-` reads it from standard input, `@FILE` from a file).
    Introspect {
        /// The token.
        token: String,
    },
}

/// `tessera-issuer clients …`
#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// Create an API client; prints its credential once.
    Create {
        /// Name, e.g. billing-api.
        #[arg(long)]
        name: String,
        /// A scope: admin, issue, introspect, bundle:read (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A tenant the client may act on (repeatable; none = every tenant).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Write the credential to this file (mode 0600; usable as --token-file) instead
        /// of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List API clients.
    List,
    /// Disable an API client.
    Disable {
        /// Client id.
        client_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `tessera-issuer audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Show recent audit events, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Verify the audit log's hash chain.
    Verify,
}

/// A connection to the issuer with the caller's credential (also used by `scan --revoke`).
pub(crate) struct Client {
    pub(crate) channel: Channel,
    credential: String,
    json: bool,
}

impl Client {
    pub(crate) async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
        let credential = credential(args)?;
        let mut endpoint =
            Endpoint::from_shared(args.addr.clone()).context("--addr is not a valid URL")?;
        if args.addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca_file) = &args.ca_file {
                let ca = std::fs::read(ca_file)
                    .with_context(|| format!("reading {}", ca_file.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the issuer at {}", args.addr))?;
        Ok(Client {
            channel,
            credential,
            json: args.json,
        })
    }

    pub(crate) fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.credential)
            .parse()
            .context("credential contains characters not allowed in a header")?;
        request.metadata_mut().insert("authorization", value);
        tessera_common::trace_context::inject_current(request.metadata_mut());
        Ok(request)
    }

    fn print(&self, value: Value, text: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
        } else {
            println!("{}", text(&value));
        }
    }
}

/// A secret a command prints, and where `--out` sends it instead.
struct SecretOutput<'a> {
    /// The fields of the JSON answer that are secret.
    fields: &'a [&'a str],
    /// The file for the secret, when `--out` is given.
    out: Option<&'a Path>,
    /// What the file holds, in the form the CLI reads back (`--token-file`, `@FILE`).
    contents: fn(&Value) -> String,
}

impl Client {
    /// Prints `value` with `text`; with `--out`, first writes the secret to a 0600 file
    /// and prints only the file's path and the non-secret fields, so no credential lands
    /// in a terminal's scrollback, a shell redirect with the default umask or a CI log.
    fn print_with_secret(
        &self,
        mut value: Value,
        secret: SecretOutput<'_>,
        text: impl FnOnce(&Value) -> String,
    ) -> anyhow::Result<()> {
        let Some(out) = secret.out else {
            self.print(value, text);
            return Ok(());
        };
        let contents = zeroize::Zeroizing::new((secret.contents)(&value));
        crate::files::write_private(out, contents.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
        if let Some(object) = value.as_object_mut() {
            for field in secret.fields {
                object.remove(*field);
            }
            object.insert("out".into(), json!(out.display().to_string()));
        }
        self.print(value, |value| {
            let mut lines = vec![format!(
                "wrote {} to {} (mode 0600)",
                secret.fields.join(" and "),
                out.display()
            )];
            for (name, field) in value.as_object().into_iter().flatten() {
                if name != "out" {
                    lines.push(format!(
                        "{name}: {}",
                        field
                            .as_str()
                            .map_or_else(|| field.to_string(), str::to_owned)
                    ));
                }
            }
            lines.join("\n")
        });
        Ok(())
    }
}

/// The bare value of `field`, newline-terminated: a credential file for `--token-file`, a
/// token file for `@FILE`.
fn bare(value: &Value, field: &str) -> String {
    format!("{}\n", value[field].as_str().unwrap_or(""))
}

fn credential(args: &ConnectArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.token_file {
        return Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading credential from {}", path.display()))?
            .trim()
            .to_owned());
    }
    if let Ok(token) = std::env::var("TESSERA_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let default = args.data_dir.join("admin.token");
    match std::fs::read_to_string(&default) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(_) => bail!(
            "no credential: pass --token-file, set TESSERA_TOKEN, or run where {} exists",
            default.display()
        ),
    }
}

fn time(timestamp: &Option<prost_types::Timestamp>) -> Value {
    match timestamp {
        Some(timestamp) => json!(timestamp.seconds),
        None => Value::Null,
    }
}

/// The text form of `audit list`: a header row, then one row per event with its time in
/// RFC 3339 UTC (`--json` keeps Unix seconds).
fn audit_table(value: &Value) -> String {
    let row = |seq: &str, at: &str, action: &str, outcome: &str, target: &str, reason: &str| {
        format!("{seq:>6} {at:<24} {action:<22} {outcome:<8} {target} {reason}")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![row("SEQ", "TIME", "ACTION", "OUTCOME", "TARGET", "REASON")];
    for event in value["events"].as_array().into_iter().flatten() {
        let at = event["at"].as_i64().map_or_else(
            || "-".to_owned(),
            |seconds| {
                crate::abuse::digest::rfc3339(tessera_common::UnixMillis(
                    seconds.saturating_mul(1000),
                ))
            },
        );
        lines.push(row(
            &event["seq"].to_string(),
            &at,
            event["action"].as_str().unwrap_or(""),
            event["outcome"].as_str().unwrap_or(""),
            event["target"].as_str().unwrap_or(""),
            event["reason"].as_str().unwrap_or(""),
        ));
    }
    lines.join("\n")
}

fn key_json(key: &pb::Key) -> Value {
    json!({
        "kid": key.kid,
        "key_set": key.key_set,
        "algorithm": key.algorithm,
        "state": key.state().as_str_name().trim_start_matches("KEY_STATE_").to_lowercase(),
        "created_at": time(&key.created_at),
        "activates_at": time(&key.activates_at),
        "deactivates_at": time(&key.deactivates_at),
        "verify_until": time(&key.verify_until),
        "revoked_at": time(&key.revoked_at),
    })
}

/// Runs `keys …`.
pub async fn keys(args: &ConnectArgs, command: KeysCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::key_service_client::KeyServiceClient::new(client.channel.clone());
    match command {
        KeysCommand::List { key_set, all } => {
            let response = service
                .list_keys(client.request(pb::ListKeysRequest {
                    key_set: key_set.unwrap_or_default(),
                    include_unpublished: all,
                })?)
                .await?
                .into_inner();
            let keys: Vec<Value> = response.keys.iter().map(key_json).collect();
            client.print(json!({ "keys": keys }), |value| {
                let mut out = format!("{:<44} {:<7} {:<6} {:<9}", "KID", "SET", "ALG", "STATE");
                for key in value["keys"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<44} {:<7} {:<6} {:<9}",
                        key["kid"].as_str().unwrap_or(""),
                        key["key_set"].as_str().unwrap_or(""),
                        key["algorithm"].as_str().unwrap_or(""),
                        key["state"].as_str().unwrap_or("")
                    ));
                }
                out
            });
        }
        KeysCommand::Rotate {
            key_set,
            reason,
            emergency,
            prepublish_seconds,
        } => {
            let response = service
                .rotate_keys(client.request(pb::RotateKeysRequest {
                    key_set,
                    emergency,
                    reason,
                    prepublish_seconds,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "new_kid": response.new_kid,
                "previous_kid": response.previous_kid,
                "activates_at": time(&response.activates_at),
                "previous_verify_until": time(&response.previous_verify_until),
                "revision": response.revision,
                "revoked_kids": response.revoked_kids,
            });
            client.print(value, |value| {
                let mut text = format!(
                    "rotated: {} -> {} (revision {})",
                    value["previous_kid"].as_str().unwrap_or("-"),
                    value["new_kid"].as_str().unwrap_or("-"),
                    value["revision"]
                );
                text.push_str(&revoked_lines(&value["revoked_kids"]));
                text
            });
        }
        KeysCommand::Revoke { kid, reason } => {
            let response = service
                .revoke_key(client.request(pb::RevokeKeyRequest { kid, reason })?)
                .await?
                .into_inner();
            let value = json!({ "kid": response.kid, "replacement_kid": response.replacement_kid, "revision": response.revision });
            client.print(value, |value| {
                format!(
                    "revoked {} (revision {})",
                    value["kid"].as_str().unwrap_or(""),
                    value["revision"]
                )
            });
        }
    }
    Ok(())
}

/// Runs `token …`.
pub async fn token(args: &ConnectArgs, command: TokenCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::token_service_client::TokenServiceClient::new(client.channel.clone());
    match command {
        TokenCommand::Issue {
            subject,
            tenant,
            role,
            permissions,
            audience,
            ttl_seconds,
            session_id,
            mfa,
            features,
            out,
        } => {
            let response = service
                .issue_access_token(client.request(pb::IssueAccessTokenRequest {
                    subject,
                    tenant_id: tenant,
                    role,
                    permissions,
                    session_id,
                    audience,
                    ttl_seconds,
                    mfa_verified: mfa,
                    features,
                    ..Default::default()
                })?)
                .await?
                .into_inner();
            let value = json!({
                "token": response.token,
                "jti": response.jti,
                "kid": response.kid,
                "expires_at": time(&response.expires_at),
                "refresh_after": time(&response.refresh_after),
            });
            let secret = SecretOutput {
                fields: &["token"],
                out: out.as_deref(),
                contents: |value| bare(value, "token"),
            };
            client.print_with_secret(value, secret, |value| {
                value["token"].as_str().unwrap_or("").to_owned()
            })?;
        }
        TokenCommand::Introspect { token } => {
            let token = read_argument(token, "access_token")?;
            let response = service
                .introspect_token(client.request(pb::IntrospectTokenRequest { token })?)
                .await?
                .into_inner();
            let claims: Value = serde_json::from_str(&response.claims_json).unwrap_or(Value::Null);
            let value =
                json!({ "active": response.active, "reason": response.reason, "claims": claims });
            client.print(value, |value| {
                serde_json::to_string_pretty(value).unwrap_or_default()
            });
        }
    }
    Ok(())
}

/// Runs `clients …`.
pub async fn clients(args: &ConnectArgs, command: ClientsCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::admin_service_client::AdminServiceClient::new(client.channel.clone());
    match command {
        ClientsCommand::Create {
            name,
            scopes,
            tenants,
            out,
        } => {
            let response = service
                .create_client(client.request(pb::CreateClientRequest {
                    name,
                    scopes,
                    tenants,
                })?)
                .await?
                .into_inner();
            let value =
                json!({ "client_id": response.client_id, "credential": response.credential });
            let secret = SecretOutput {
                fields: &["credential"],
                out: out.as_deref(),
                contents: |value| bare(value, "credential"),
            };
            client.print_with_secret(value, secret, |value| {
                value["credential"].as_str().unwrap_or("").to_owned()
            })?;
        }
        ClientsCommand::List => {
            let response = service
                .list_clients(client.request(pb::ListClientsRequest {})?)
                .await?
                .into_inner();
            let clients: Vec<Value> = response
                .clients
                .iter()
                .map(|c| json!({"client_id": c.client_id, "name": c.name, "scopes": c.scopes, "tenants": c.tenants, "disabled": c.disabled_at.is_some()}))
                .collect();
            client.print(json!({ "clients": clients }), |value| {
                serde_json::to_string_pretty(value).unwrap_or_default()
            });
        }
        ClientsCommand::Disable { client_id, reason } => {
            service
                .disable_client(client.request(pb::DisableClientRequest { client_id, reason })?)
                .await?;
            client.print(json!({ "disabled": true }), |_| "disabled".into());
        }
    }
    Ok(())
}

/// Runs `audit …`.
pub async fn audit(args: &ConnectArgs, command: AuditCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::admin_service_client::AdminServiceClient::new(client.channel.clone());
    match command {
        AuditCommand::List { limit } => {
            let response = service
                .list_audit_events(client.request(pb::ListAuditEventsRequest {
                    limit,
                    before_seq: 0,
                })?)
                .await?
                .into_inner();
            let events: Vec<Value> = response
                .events
                .iter()
                .map(|e| json!({"seq": e.seq, "at": time(&e.at), "actor": e.actor, "action": e.action, "target": e.target, "request_id": e.request_id, "reason": e.reason, "outcome": e.outcome}))
                .collect();
            client.print(json!({ "events": events }), audit_table);
        }
        AuditCommand::Verify => {
            let response = service
                .verify_audit_log(client.request(pb::VerifyAuditLogRequest {})?)
                .await?
                .into_inner();
            let value = json!({ "intact": response.intact, "n_events": response.n_events, "first_broken_seq": response.first_broken_seq });
            client.print(value, |value| {
                if value["intact"].as_bool() == Some(true) {
                    format!("audit log intact ({} events)", value["n_events"])
                } else {
                    format!("audit log BROKEN at seq {}", value["first_broken_seq"])
                }
            });
            if !response.intact {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

/// `tessera-issuer session …`
#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Log a user in: prints an access token and a refresh token.
    Create {
        /// Subject (user id).
        #[arg(long)]
        subject: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Role.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A permission (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Absolute session lifetime in seconds (0: none).
        #[arg(long, default_value_t = 0)]
        max_session_seconds: u32,
        /// Write the tokens to this session file (JSON, mode 0600) instead of printing
        /// them; `session refresh @FILE --out FILE` exchanges them in place.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Exchange a refresh token for a new pair (`-` reads it from standard input, `@FILE`
    /// from a file written by --out).
    Refresh {
        /// The refresh token (`tbf_…`), `-` or `@FILE`.
        refresh_token: String,
        /// Write the new tokens to this session file (JSON, mode 0600) instead of printing
        /// them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Log out one session: its tokens are rejected everywhere within milliseconds.
    Logout {
        /// Session id, `@FILE` (a session file written by `--out`) or `-` (standard input).
        session_id: String,
        /// Tenant of the session (required for tenant-confined credentials).
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Log a user out everywhere.
    LogoutEverywhere {
        /// User id (subject).
        user_id: String,
        /// Tenant (recommended: user ids are per tenant).
        #[arg(long, default_value = "")]
        tenant: String,
    },
}

/// What `tessera-issuer revoke` targets: exactly one.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct RevokeTarget {
    /// One access token, by jti.
    #[arg(long)]
    pub jti: Option<String>,
    /// Every token of a session.
    #[arg(long)]
    pub session: Option<String>,
    /// Every token of a user.
    #[arg(long)]
    pub user: Option<String>,
    /// Every token of a tenant.
    #[arg(long = "tenant-wide")]
    pub tenant_wide: Option<String>,
    /// Every token of a refresh family.
    #[arg(long)]
    pub family: Option<String>,
    /// Every token issued so far.
    #[arg(long)]
    pub all: bool,
}

/// Runs `session …`.
pub async fn session(args: &ConnectArgs, command: SessionCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::token_service_client::TokenServiceClient::new(client.channel.clone());
    let (tokens, out) = match command {
        SessionCommand::Create {
            subject,
            tenant,
            role,
            permissions,
            max_session_seconds,
            out,
        } => {
            let tokens = service
                .create_session(client.request(pb::CreateSessionRequest {
                    subject,
                    tenant_id: tenant,
                    role,
                    permissions,
                    max_session_seconds,
                    ..Default::default()
                })?)
                .await?
                .into_inner();
            (tokens, out)
        }
        SessionCommand::Refresh { refresh_token, out } => {
            let refresh_token = read_argument(refresh_token, "refresh_token")?;
            let tokens = service
                .refresh_session(client.request(pb::RefreshSessionRequest { refresh_token })?)
                .await?
                .into_inner();
            (tokens, out)
        }
        SessionCommand::Logout { session_id, tenant } => {
            let session_id = read_argument(session_id, "session_id")?;
            return revoke_with(
                &client,
                pb::revoke_tokens_request::Target::SessionId(session_id),
                tenant,
                "logout".into(),
            )
            .await;
        }
        SessionCommand::LogoutEverywhere { user_id, tenant } => {
            return revoke_with(
                &client,
                pb::revoke_tokens_request::Target::UserId(user_id),
                tenant,
                "logout everywhere".into(),
            )
            .await;
        }
    };
    let value = json!({
        "session_id": tokens.session_id,
        "family_id": tokens.family_id,
        "access_token": tokens.access_token,
        "access_jti": tokens.access_jti,
        "access_expires_at": time(&tokens.access_expires_at),
        "refresh_token": tokens.refresh_token,
        "refresh_expires_at": time(&tokens.refresh_expires_at),
    });
    let secret = SecretOutput {
        fields: &["access_token", "refresh_token"],
        out: out.as_deref(),
        // The whole answer, so `session refresh @FILE` finds the refresh token in it.
        contents: |value| {
            format!(
                "{}\n",
                serde_json::to_string_pretty(value).unwrap_or_default()
            )
        },
    };
    client.print_with_secret(value, secret, |value| {
        format!(
            "session_id:    {}\naccess_token:  {}\nrefresh_token: {}",
            value["session_id"].as_str().unwrap_or(""),
            value["access_token"].as_str().unwrap_or(""),
            value["refresh_token"].as_str().unwrap_or("")
        )
    })
}

/// Runs `revoke …`.
pub async fn revoke(
    args: &ConnectArgs,
    target: RevokeTarget,
    tenant: String,
    reason: String,
) -> anyhow::Result<()> {
    use pb::revoke_tokens_request::Target;
    let client = Client::connect(args).await?;
    let target = if let Some(jti) = target.jti {
        Target::Jti(jti)
    } else if let Some(session) = target.session {
        Target::SessionId(session)
    } else if let Some(user) = target.user {
        Target::UserId(user)
    } else if let Some(tenant) = target.tenant_wide {
        Target::TenantId(tenant)
    } else if let Some(family) = target.family {
        Target::FamilyId(family)
    } else {
        Target::All(target.all)
    };
    revoke_with(&client, target, tenant, reason).await
}

async fn revoke_with(
    client: &Client,
    target: pb::revoke_tokens_request::Target,
    scope_tenant_id: String,
    reason: String,
) -> anyhow::Result<()> {
    let mut service = pb::token_service_client::TokenServiceClient::new(client.channel.clone());
    let response = service
        .revoke_tokens(client.request(pb::RevokeTokensRequest {
            target: Some(target),
            scope_tenant_id,
            reason,
        })?)
        .await?
        .into_inner();
    let value = json!({
        "revision": response.revision,
        "drop_after": time(&response.drop_after),
        "n_sessions_revoked": response.n_sessions_revoked,
    });
    client.print(value, |value| {
        format!(
            "revoked (revision {}, {} sessions ended)",
            value["revision"], value["n_sessions_revoked"]
        )
    });
    Ok(())
}

/// Runs `emergency …`: one tenant, or everything.
pub async fn emergency(
    args: &ConnectArgs,
    tenant: Option<String>,
    global: bool,
    incident: String,
    reason: String,
) -> anyhow::Result<()> {
    use pb::emergency_revoke_request::Scope;
    let scope = match (tenant, global) {
        (Some(tenant), false) => Scope::TenantId(tenant),
        (None, true) => Scope::Global(true),
        _ => bail!("give exactly one of --tenant or --global"),
    };
    let client = Client::connect(args).await?;
    let mut service = pb::token_service_client::TokenServiceClient::new(client.channel.clone());
    let response = service
        .emergency_revoke(client.request(pb::EmergencyRevokeRequest {
            scope: Some(scope),
            incident_id: incident,
            reason,
        })?)
        .await?
        .into_inner();
    let value = json!({
        "revision": response.revision,
        "n_sessions_revoked": response.n_sessions_revoked,
        "new_kids": response.new_kids,
        "replayed": response.replayed,
        "revoked_kids": response.revoked_kids,
    });
    client.print(value, |value| {
        if value["replayed"].as_bool() == Some(true) {
            "incident already handled; nothing changed".to_owned()
        } else {
            let mut text = format!(
                "emergency revocation committed (revision {}, {} sessions ended, new keys {})",
                value["revision"], value["n_sessions_revoked"], value["new_kids"]
            );
            text.push_str(&revoked_lines(&value["revoked_kids"]));
            text
        }
    });
    Ok(())
}

/// One `revoked key <kid>` line per revoked key, so an operator sees every key whose tokens
/// just stopped validating (not only the previous signer).
fn revoked_lines(revoked_kids: &Value) -> String {
    revoked_kids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|kid| format!("\nrevoked key {kid}"))
        .collect()
}

/// Resolves a secret argument: `-` reads standard input, `@FILE` reads a file (a session
/// file written by `--out` yields its `session_field`), anything else is the value itself.
/// Files and stdin keep secrets out of the process list and the shell history.
fn read_argument(value: String, session_field: &str) -> anyhow::Result<String> {
    let text = if value == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text
    } else if let Some(path) = value.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    } else {
        return Ok(value);
    };
    let session_file = serde_json::from_str::<Value>(&text).ok();
    let from_session = session_file
        .as_ref()
        .and_then(|session| session[session_field].as_str());
    Ok(from_session.unwrap_or(&text).trim().to_owned())
}

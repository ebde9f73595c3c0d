//! `tessera-issuer service-tokens …`: service identities (create, list, disable) and
//! their `tbs_` tokens (issue, confirm, revoke), and the validation of any short-lived
//! opaque token (`tbs_` or `tbw_`). A token is printed once, by `issue` (or written to a
//! 0600 file with `--out`); nothing else ever shows it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs, SecretOutput, bare, time};

/// `tessera-issuer service-tokens …`
#[derive(Subcommand, Debug)]
pub enum ServiceTokensCommand {
    /// Create a service identity in a tenant.
    CreateIdentity {
        #[arg(long)]
        tenant: String,
        /// The identity's name: [a-z0-9][a-z0-9._-]{0,62}.
        #[arg(long)]
        name: String,
        /// A permission its tokens carry (repeat the flag).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        role: String,
        /// Lifetime of its tokens in seconds, 60 to 86400 [default: 86400].
        #[arg(long)]
        token_ttl_seconds: Option<u32>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List service identities.
    List {
        /// Only this tenant's identities.
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Disable an identity: no more tokens, and its live tokens are revoked at once.
    Disable {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Issue a token for an identity; prints it once.
    Issue {
        #[arg(long)]
        tenant: String,
        /// The identity's name.
        #[arg(long)]
        service: String,
        /// The id of the token this one replaces (revoked on `confirm`).
        #[arg(long, default_value = "")]
        replaces: String,
        /// Who holds the token (pod, host); recorded and audited.
        #[arg(long, default_value = "")]
        holder: String,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Confirm a token was installed: revokes the token it replaces.
    Confirm {
        /// The installed token's id.
        token_id: String,
    },
    /// Revoke a service token at once.
    Revoke {
        token_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Check a `tbs_` or `tbw_` token; exits non-zero unless it is valid.
    Validate(ValidateArgs),
}

/// What `validate` checks.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The token: `@FILE`, `-` (standard input) or the token itself (visible to `ps`).
    pub token: String,
    /// A permission the token must carry (repeat the flag).
    #[arg(long = "permission")]
    pub permissions: Vec<String>,
    /// A role the token must carry.
    #[arg(long, default_value = "")]
    pub role: String,
    /// The service identity or webhook endpoint the token must be for.
    #[arg(long, default_value = "")]
    pub subject: String,
}

/// A token's metadata as JSON (never the token).
pub fn token_json(info: &pb::OpaqueTokenInfo) -> Value {
    json!({
        "token_id": info.token_id,
        "kind": info.kind,
        "tenant_id": info.tenant_id,
        "subject": info.subject,
        "permissions": info.permissions,
        "role": info.role,
        "state": info.state,
        "issued_at": time(&info.issued_at),
        "expires_at": time(&info.expires_at),
        "renew_at": time(&info.renew_at),
        "replaces": info.replaces,
        "holder": info.holder,
    })
}

/// One line about a token.
pub fn token_line(info: &Value) -> String {
    let at = |field: &str| {
        info[field].as_i64().map_or_else(
            || "-".to_owned(),
            |seconds| {
                crate::abuse::digest::rfc3339(tessera_common::UnixMillis(
                    seconds.saturating_mul(1000),
                ))
            },
        )
    };
    format!(
        "{} {}  {:<10} {:<8} {}  expires {}  renew at {}",
        info["kind"].as_str().unwrap_or(""),
        info["token_id"].as_str().unwrap_or(""),
        info["tenant_id"].as_str().unwrap_or(""),
        info["state"].as_str().unwrap_or(""),
        info["subject"].as_str().unwrap_or(""),
        at("expires_at"),
        at("renew_at"),
    )
}

fn identity_json(identity: &pb::ServiceIdentity) -> Value {
    json!({
        "tenant_id": identity.tenant_id,
        "name": identity.name,
        "permissions": identity.permissions,
        "role": identity.role,
        "token_ttl_seconds": identity.token_ttl_seconds,
        "created_at": time(&identity.created_at),
        "disabled_at": time(&identity.disabled_at),
    })
}

fn identity_line(identity: &Value) -> String {
    format!(
        "{:<10} {}  ttl {} s  {}  [{}]",
        identity["tenant_id"].as_str().unwrap_or(""),
        identity["name"].as_str().unwrap_or(""),
        identity["token_ttl_seconds"],
        if identity["disabled_at"].is_null() {
            "enabled"
        } else {
            "disabled"
        },
        identity["permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Reads a token argument: `@FILE`, `-` for standard input, or the token.
fn token_argument(argument: &str) -> anyhow::Result<String> {
    if argument == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text.trim().to_owned());
    }
    if let Some(path) = argument.strip_prefix('@') {
        return Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned());
    }
    Ok(argument.to_owned())
}

/// Prints a freshly issued token once (or writes it to `out`).
pub(crate) fn print_issued(
    client: &Client,
    token: String,
    info: Option<&pb::OpaqueTokenInfo>,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut value = info.map(token_json).unwrap_or_default();
    value["token"] = json!(token);
    let secret = SecretOutput {
        fields: &["token"],
        out,
        contents: |value| bare(value, "token"),
    };
    client.print_with_secret(value, secret, |value| {
        format!(
            "{}\n{}\nstore the token now: it is shown once",
            value["token"].as_str().unwrap_or(""),
            token_line(value)
        )
    })
}

/// Validates a `tbs_` or `tbw_` token through `ServiceTokenService`; fails unless valid.
pub(crate) async fn validate(client: &Client, args: ValidateArgs) -> anyhow::Result<()> {
    let mut service =
        pb::service_token_service_client::ServiceTokenServiceClient::new(client.channel.clone());
    let response = service
        .validate_service_token(client.request(pb::ValidateOpaqueTokenRequest {
            token: token_argument(&args.token)?,
            required_permissions: args.permissions,
            required_role: args.role,
            required_subject: args.subject,
        })?)
        .await?
        .into_inner();
    let refusal = response
        .refusal()
        .as_str_name()
        .trim_start_matches("OPAQUE_TOKEN_REFUSAL_")
        .to_ascii_lowercase();
    let value = json!({
        "valid": response.valid,
        "refusal": if response.valid { Value::Null } else { json!(refusal) },
        "info": response.info.as_ref().map(token_json),
    });
    client.print(value, |value| {
        if value["valid"].as_bool() == Some(true) {
            format!("valid: {}", token_line(&value["info"]))
        } else {
            format!("invalid: {refusal}")
        }
    });
    if !response.valid {
        bail!("the token is not valid");
    }
    Ok(())
}

/// Runs `service-tokens …`.
pub async fn service_tokens(
    args: &ConnectArgs,
    command: ServiceTokensCommand,
) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service =
        pb::service_token_service_client::ServiceTokenServiceClient::new(client.channel.clone());
    match command {
        ServiceTokensCommand::CreateIdentity {
            tenant,
            name,
            permissions,
            role,
            token_ttl_seconds,
            reason,
        } => {
            let response = service
                .create_service_identity(client.request(pb::CreateServiceIdentityRequest {
                    tenant_id: tenant,
                    name,
                    permissions,
                    role,
                    token_ttl_seconds: token_ttl_seconds.unwrap_or(0),
                    reason,
                })?)
                .await?
                .into_inner();
            client.print(identity_json(&response), identity_line);
        }
        ServiceTokensCommand::List { tenant } => {
            let response = service
                .list_service_identities(
                    client.request(pb::ListServiceIdentitiesRequest { tenant_id: tenant })?,
                )
                .await?
                .into_inner();
            let identities: Vec<Value> = response.identities.iter().map(identity_json).collect();
            client.print(json!({ "identities": identities }), |value| {
                value["identities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(identity_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ServiceTokensCommand::Disable {
            tenant,
            name,
            reason,
        } => {
            let response = service
                .disable_service_identity(client.request(pb::DisableServiceIdentityRequest {
                    tenant_id: tenant,
                    name,
                    reason,
                })?)
                .await?
                .into_inner();
            client.print(identity_json(&response), identity_line);
        }
        ServiceTokensCommand::Issue {
            tenant,
            service: name,
            replaces,
            holder,
            out,
        } => {
            let response = service
                .issue_service_token(client.request(pb::IssueServiceTokenRequest {
                    tenant_id: tenant,
                    service: name,
                    replaces,
                    holder,
                })?)
                .await?
                .into_inner();
            print_issued(
                &client,
                response.token,
                response.info.as_ref(),
                out.as_deref(),
            )?;
        }
        ServiceTokensCommand::Confirm { token_id } => {
            let response = service
                .confirm_service_token(client.request(pb::ConfirmServiceTokenRequest { token_id })?)
                .await?
                .into_inner();
            client.print(
                json!({ "revoked_token_id": response.revoked_token_id }),
                |value| match value["revoked_token_id"].as_str() {
                    Some(id) if !id.is_empty() => format!("revoked predecessor {id}"),
                    _ => "nothing left to revoke".to_owned(),
                },
            );
        }
        ServiceTokensCommand::Revoke { token_id, reason } => {
            let response = service
                .revoke_service_token(
                    client.request(pb::RevokeServiceTokenRequest { token_id, reason })?,
                )
                .await?
                .into_inner();
            client.print(token_json(&response), token_line);
        }
        ServiceTokensCommand::Validate(args) => validate(&client, args).await?,
    }
    Ok(())
}

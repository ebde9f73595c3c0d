//! `tessera-issuer action-links …`: mint a signed action link, consume one (exactly once),
//! and inspect one without consuming it. A token is printed once, by `create` (or
//! written to a 0600 file with `--out`); a token argument may be `@FILE` or `-` (standard
//! input) so it never shows in `ps`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs, SecretOutput, bare, time};

/// `tessera-issuer action-links …`
#[derive(Subcommand, Debug)]
pub enum ActionLinksCommand {
    /// Mint a signed action link (`tba_…`); prints the token and its URL once.
    Create {
        #[arg(long)]
        tenant: String,
        /// What the link does, e.g. confirm_payment, approve_estimate, cancel_booking.
        #[arg(long)]
        action: String,
        /// The resource acted on.
        #[arg(long)]
        resource: String,
        /// The user the link is for.
        #[arg(long)]
        user: String,
        /// A parameter `name=value` signed into the token (repeat the flag).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Lifetime in seconds [default: the tenant's or the action's].
        #[arg(long)]
        expires_in_seconds: Option<u32>,
        /// Two-step consumption: the first consume returns a confirmation token.
        #[arg(long)]
        requires_confirmation: bool,
        /// An address or CIDR range the link may be consumed from (repeat the flag).
        #[arg(long = "allow-ip")]
        ip_allowlist: Vec<String>,
        /// Bind the link to this user agent.
        #[arg(long, default_value = "")]
        user_agent: String,
        /// Write the token and URL to this file (mode 0600) instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Consume a link exactly once; exits non-zero unless this call consumed it (or, for
    /// a two-step link's first call, returned a confirmation token).
    Consume {
        /// The token: `@FILE`, `-` (standard input) or the token itself.
        token: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
        #[arg(long, default_value = "")]
        client_ip: String,
        #[arg(long, default_value = "")]
        user_agent: String,
        /// The confirmation token of a two-step link (`@FILE`, `-` or the token).
        #[arg(long)]
        confirmation: Option<String>,
    },
    /// Verify a `tba_`, `tbr_` or `tbe_` token and show its claims and state, consuming
    /// nothing; exits non-zero unless it verifies.
    Inspect {
        /// The token: `@FILE`, `-` (standard input) or the token itself.
        token: String,
    },
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

fn refusal_name(refusal: pb::ActionRefusal) -> String {
    refusal
        .as_str_name()
        .trim_start_matches("ACTION_REFUSAL_")
        .to_ascii_lowercase()
}

fn claims_json(claims: Option<&pb::ActionTokenClaims>) -> Value {
    let Some(claims) = claims else {
        return Value::Null;
    };
    json!({
        "jti": claims.jti,
        "token_type": claims.token_type,
        "action": claims.action,
        "resource_id": claims.resource_id,
        "tenant_id": claims.tenant_id,
        "user_id": claims.user_id,
        "params": claims.params,
        "confirmation_required": claims.confirmation_required,
        "ip_allowlist": claims.ip_allowlist,
        "user_agent_bound": claims.user_agent_bound,
        "issued_at": time(&claims.issued_at),
        "expires_at": time(&claims.expires_at),
    })
}

fn params(pairs: Vec<String>) -> anyhow::Result<std::collections::HashMap<String, String>> {
    pairs
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
            None => bail!("--param takes name=value, got `{pair}`"),
        })
        .collect()
}

/// Runs `action-links …`.
pub async fn action_links(args: &ConnectArgs, command: ActionLinksCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service =
        pb::action_link_service_client::ActionLinkServiceClient::new(client.channel.clone());
    match command {
        ActionLinksCommand::Create {
            tenant,
            action,
            resource,
            user,
            params: pairs,
            expires_in_seconds,
            requires_confirmation,
            ip_allowlist,
            user_agent,
            out,
        } => {
            let response = service
                .create_action_link(client.request(pb::CreateActionLinkRequest {
                    action,
                    resource_id: resource,
                    user_id: user,
                    tenant_id: tenant,
                    params: params(pairs)?,
                    expires_in_seconds: expires_in_seconds.unwrap_or(0),
                    requires_confirmation,
                    ip_allowlist,
                    user_agent,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "token": response.token,
                "url": response.url,
                "jti": response.jti,
                "expires_at": time(&response.expires_at),
            });
            let secret = SecretOutput {
                fields: &["token", "url"],
                out: out.as_deref(),
                contents: |value| bare(value, "token"),
            };
            client.print_with_secret(value, secret, |value| {
                format!(
                    "{}\n{}\njti {}  expires {}\nstore the token now: it is shown once",
                    value["token"].as_str().unwrap_or(""),
                    value["url"]
                        .as_str()
                        .unwrap_or("(no base URL for this tenant)"),
                    value["jti"].as_str().unwrap_or(""),
                    value["expires_at"],
                )
            })?;
        }
        ActionLinksCommand::Consume {
            token,
            action,
            resource,
            client_ip,
            user_agent,
            confirmation,
        } => {
            let response = service
                .consume_action_token(
                    client.request(pb::ConsumeActionTokenRequest {
                        token: token_argument(&token)?,
                        action,
                        resource_id: resource,
                        client_ip,
                        user_agent,
                        confirmation_token: confirmation
                            .as_deref()
                            .map(token_argument)
                            .transpose()?
                            .unwrap_or_default(),
                    })?,
                )
                .await?
                .into_inner();
            let refusal = refusal_name(response.refusal());
            let value = json!({
                "consumed": response.consumed,
                "confirmation_required": response.confirmation_required,
                "confirmation_token": response.confirmation_token,
                "confirmation_expires_at": time(&response.confirmation_expires_at),
                "refusal": if response.consumed || response.confirmation_required {
                    Value::Null
                } else {
                    json!(refusal)
                },
                "claims": claims_json(response.claims.as_ref()),
            });
            client.print(value, |value| {
                if value["consumed"].as_bool() == Some(true) {
                    "consumed".to_owned()
                } else if value["confirmation_required"].as_bool() == Some(true) {
                    format!(
                        "confirmation required: consume again with --confirmation {}",
                        value["confirmation_token"].as_str().unwrap_or("")
                    )
                } else {
                    format!("refused: {refusal}")
                }
            });
            if !response.consumed && !response.confirmation_required {
                bail!("the token was not consumed");
            }
        }
        ActionLinksCommand::Inspect { token } => {
            let response = service
                .inspect_action_token(client.request(pb::InspectActionTokenRequest {
                    token: token_argument(&token)?,
                })?)
                .await?
                .into_inner();
            let refusal = refusal_name(response.refusal());
            let value = json!({
                "valid": response.valid,
                "state": response.state,
                "refusal": if response.valid { Value::Null } else { json!(refusal) },
                "claims": claims_json(response.claims.as_ref()),
            });
            client.print(value, |value| {
                if value["valid"].as_bool() == Some(true) {
                    format!(
                        "valid ({}): {} {} for {} in {}",
                        value["state"].as_str().unwrap_or(""),
                        value["claims"]["action"].as_str().unwrap_or(""),
                        value["claims"]["resource_id"].as_str().unwrap_or(""),
                        value["claims"]["user_id"].as_str().unwrap_or(""),
                        value["claims"]["tenant_id"].as_str().unwrap_or(""),
                    )
                } else {
                    format!("invalid: {refusal}")
                }
            });
            if !response.valid {
                bail!("the token does not verify");
            }
        }
    }
    Ok(())
}

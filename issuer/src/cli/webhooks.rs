//! `tessera-issuer webhooks …`: sign a payload for a tenant, verify a received message,
//! and show a tenant's webhook secrets (`whsec_…`) for its receivers; `webhooks token …`
//! (`webhook_tokens.rs`) handles `tbw_` webhook tokens.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs, SecretOutput, time};

/// `tessera-issuer webhooks …`
#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Sign a payload; prints the webhook-id, webhook-timestamp and webhook-signature
    /// headers to send with it.
    Sign {
        /// Tenant whose secrets sign.
        #[arg(long)]
        tenant: String,
        /// The payload: `@FILE` (exact bytes), `-` (standard input) or the text itself.
        #[arg(long)]
        payload: String,
        /// Message id (`msg_…`); default: a fresh one.
        #[arg(long, default_value = "")]
        id: String,
    },
    /// Verify a received message; exits non-zero unless it verifies.
    Verify {
        /// Tenant whose secrets must have signed.
        #[arg(long)]
        tenant: String,
        /// The payload: `@FILE` (exact bytes), `-` (standard input) or the text itself.
        #[arg(long)]
        payload: String,
        /// A JSON file with the three headers (the output of `webhooks sign --json`);
        /// --id, --timestamp and --signature override its fields.
        #[arg(long)]
        headers: Option<PathBuf>,
        /// The webhook-id header.
        #[arg(long)]
        id: Option<String>,
        /// The webhook-timestamp header.
        #[arg(long)]
        timestamp: Option<String>,
        /// The webhook-signature header.
        #[arg(long)]
        signature: Option<String>,
    },
    /// Issue, revoke and validate webhook tokens (`tbw_…`).
    Token {
        #[command(subcommand)]
        command: super::webhook_tokens::WebhookTokenCommand,
    },
    /// Show a tenant's live webhook secrets (audited); give them to its receivers.
    Keys {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Write the secrets (JSON, mode 0600) to this file instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Reads a payload argument as exact bytes: `@FILE`, `-` for standard input, or the text.
fn payload(argument: &str) -> anyhow::Result<Vec<u8>> {
    if argument == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        return Ok(bytes);
    }
    if let Some(path) = argument.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading {path}"));
    }
    Ok(argument.as_bytes().to_vec())
}

/// Returns the header `name` from the flag, else from the headers file.
fn header(flag: Option<String>, file: &Value, name: &str) -> anyhow::Result<String> {
    match flag.or_else(|| file[name].as_str().map(str::to_owned)) {
        Some(value) => Ok(value),
        None => bail!("no {name}: pass --headers FILE or the header's own flag"),
    }
}

/// Runs `webhooks …`.
pub async fn webhooks(args: &ConnectArgs, command: WebhooksCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::webhook_service_client::WebhookServiceClient::new(client.channel.clone());
    match command {
        WebhooksCommand::Sign {
            tenant,
            payload: argument,
            id,
        } => {
            let response = service
                .sign_webhook(client.request(pb::SignWebhookRequest {
                    tenant_id: tenant,
                    payload: payload(&argument)?,
                    webhook_id: id,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "webhook-id": response.webhook_id,
                "webhook-timestamp": response.webhook_timestamp,
                "webhook-signature": response.webhook_signature,
                "kids": response.kids,
            });
            client.print(value, |value| {
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
                    .iter()
                    .map(|name| format!("{name}: {}", value[*name].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        WebhooksCommand::Verify {
            tenant,
            payload: argument,
            headers,
            id,
            timestamp,
            signature,
        } => {
            let file = match &headers {
                Some(path) => serde_json::from_slice(
                    &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{} is not JSON", path.display()))?,
                None => Value::Null,
            };
            let response = service
                .verify_webhook(client.request(pb::VerifyWebhookRequest {
                    tenant_id: tenant,
                    payload: payload(&argument)?,
                    webhook_id: header(id, &file, "webhook-id")?,
                    webhook_timestamp: header(timestamp, &file, "webhook-timestamp")?,
                    webhook_signature: header(signature, &file, "webhook-signature")?,
                })?)
                .await?
                .into_inner();
            let verdict = pb::WebhookVerdict::try_from(response.verdict)
                .unwrap_or(pb::WebhookVerdict::Unspecified)
                .as_str_name()
                .trim_start_matches("WEBHOOK_VERDICT_")
                .to_ascii_lowercase();
            let value = json!({ "valid": response.valid, "verdict": verdict, "kid": response.kid });
            client.print(value, |value| {
                match value["kid"].as_str().filter(|kid| !kid.is_empty()) {
                    Some(kid) => format!("valid (key {kid})"),
                    None => format!("invalid: {}", value["verdict"].as_str().unwrap_or("")),
                }
            });
            if !response.valid {
                bail!("the webhook does not verify: {verdict}");
            }
        }
        WebhooksCommand::Token { command } => {
            super::webhook_tokens::run(&client, command).await?;
        }
        WebhooksCommand::Keys { tenant, out } => {
            let response = service
                .get_webhook_secrets(client.request(pb::GetWebhookSecretsRequest {
                    tenant_id: tenant.clone(),
                })?)
                .await?
                .into_inner();
            let secrets: Vec<Value> = response
                .secrets
                .iter()
                .map(|secret| {
                    json!({
                        "kid": secret.kid,
                        "state": secret.state,
                        "secret": secret.secret,
                        "activates_at": time(&secret.activates_at),
                        "verify_until": time(&secret.verify_until),
                    })
                })
                .collect();
            let value = json!({ "tenant": tenant, "secrets": secrets });
            let secret = SecretOutput {
                fields: &["secrets"],
                out: out.as_deref(),
                contents: |value| {
                    serde_json::to_string_pretty(&value["secrets"]).unwrap_or_default() + "\n"
                },
            };
            client.print_with_secret(value, secret, |value| {
                value["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|secret| {
                        format!(
                            "{}  {:<8}  {}",
                            secret["kid"].as_str().unwrap_or(""),
                            secret["state"].as_str().unwrap_or(""),
                            secret["secret"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
    }
    Ok(())
}

//! `tessera-issuer webhooks token …`: issue, revoke and validate `tbw_` webhook tokens,
//! bearer tokens for receivers that authenticate callbacks by token. A token is printed
//! once, by `issue` (or written to a 0600 file with `--out`).

use std::path::PathBuf;

use clap::Subcommand;
use tessera_proto::v1 as pb;

use super::Client;
use super::service_tokens::{ValidateArgs, print_issued, token_json, token_line, validate};

/// `tessera-issuer webhooks token …`
#[derive(Subcommand, Debug)]
pub enum WebhookTokenCommand {
    /// Issue a token for a tenant's webhook endpoint; prints it once.
    Issue {
        #[arg(long)]
        tenant: String,
        /// The endpoint the token is for (receivers check it with `--subject`).
        #[arg(long)]
        endpoint: String,
        /// A permission the token carries (repeat the flag).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Lifetime in seconds, 60 to 86400 [default: 3600].
        #[arg(long)]
        ttl_seconds: Option<u32>,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a webhook token at once.
    Revoke {
        token_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Check a token; exits non-zero unless it is valid.
    Validate(ValidateArgs),
}

/// Runs `webhooks token …`.
pub(crate) async fn run(client: &Client, command: WebhookTokenCommand) -> anyhow::Result<()> {
    let mut service = pb::webhook_service_client::WebhookServiceClient::new(client.channel.clone());
    match command {
        WebhookTokenCommand::Issue {
            tenant,
            endpoint,
            permissions,
            ttl_seconds,
            out,
        } => {
            let response = service
                .issue_webhook_token(client.request(pb::IssueWebhookTokenRequest {
                    tenant_id: tenant,
                    endpoint,
                    permissions,
                    ttl_seconds: ttl_seconds.unwrap_or(0),
                })?)
                .await?
                .into_inner();
            print_issued(
                client,
                response.token,
                response.info.as_ref(),
                out.as_deref(),
            )
        }
        WebhookTokenCommand::Revoke { token_id, reason } => {
            let response = service
                .revoke_webhook_token(
                    client.request(pb::RevokeWebhookTokenRequest { token_id, reason })?,
                )
                .await?
                .into_inner();
            client.print(token_json(&response), token_line);
            Ok(())
        }
        WebhookTokenCommand::Validate(args) => validate(client, args).await,
    }
}

//! `tessera-issuer providers list|disable|enable`: the challenge delivery providers and
//! their runtime switch (seed 002, provider compromise: `providers disable sms`). A
//! switch is persisted and honoured by every replica at its next send; audited with the
//! reason.

use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs};

/// `tessera-issuer providers …`
#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// List the configured providers, their kind, roles and state.
    List,
    /// Stop sending through a provider (its backup takes over).
    Disable {
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Send through a provider again.
    Enable {
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn provider_json(provider: &pb::ProviderInfo) -> Value {
    json!({
        "name": provider.name,
        "kind": provider.kind,
        "enabled": provider.enabled,
        "roles": provider.roles,
        "changed_at": provider.changed_at.as_ref().map(|at| at.seconds),
    })
}

fn provider_line(value: &Value) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        value["name"].as_str().unwrap_or_default(),
        value["kind"].as_str().unwrap_or_default(),
        if value["enabled"].as_bool().unwrap_or(false) {
            "enabled"
        } else {
            "disabled"
        },
        value["roles"]
            .as_array()
            .map(|roles| roles
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default()
    )
}

/// Runs `providers …`.
pub async fn providers(args: &ConnectArgs, command: ProvidersCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service =
        pb::challenge_service_client::ChallengeServiceClient::new(client.channel.clone());
    let (name, enabled, reason) = match command {
        ProvidersCommand::List => {
            let response = service
                .list_providers(client.request(pb::ListProvidersRequest {})?)
                .await?
                .into_inner();
            let value = Value::Array(response.providers.iter().map(provider_json).collect());
            client.print(value, |value| {
                value
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(provider_line)
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
            return Ok(());
        }
        ProvidersCommand::Disable { name, reason } => (name, false, reason),
        ProvidersCommand::Enable { name, reason } => (name, true, reason),
    };
    let response = service
        .set_provider_enabled(client.request(pb::SetProviderEnabledRequest {
            name,
            enabled,
            reason,
        })?)
        .await?
        .into_inner();
    client.print(provider_json(&response), provider_line);
    Ok(())
}

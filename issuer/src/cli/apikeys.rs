//! `tessera-issuer apikeys …`: create, list, show, rotate, revoke and validate tenant API
//! keys (`tbk_…`), and set their rate limits. A key is printed once, by `create` and
//! `rotate` (or written to a 0600 file with `--out`); nothing else ever shows it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs, SecretOutput, bare, time};

/// `tessera-issuer apikeys …`
#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create a key for a tenant; prints it once.
    Create {
        /// Tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// A label for people.
        #[arg(long)]
        name: String,
        /// A permission the key grants (repeat the flag).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// The key's role.
        #[arg(long, default_value = "")]
        role: String,
        /// Days until the key expires [default: 90].
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List keys (metadata only).
    List {
        /// Only this tenant's keys.
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Show one key's metadata.
    Get {
        /// The key id (the part after `tbk_`, before the second `_`).
        key_id: String,
    },
    /// Replace a key: prints the successor once; the old key works for the grace period.
    Rotate {
        key_id: String,
        /// Seconds the old key keeps working [default: 86400].
        #[arg(long)]
        grace_seconds: Option<u64>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Write the new key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replace a key's rate limits. A window left out keeps its current limit.
    Limits {
        key_id: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke a key at once.
    Revoke {
        key_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Check a key; exits non-zero unless it is valid.
    Validate {
        /// The key: `@FILE`, `-` (standard input) or the key itself (visible to `ps`).
        key: String,
        /// A permission the key must hold (repeat the flag).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// A role the key must have.
        #[arg(long, default_value = "")]
        role: String,
    },
}

/// Admissions per fixed UTC window (at most 1,000,000 each).
#[derive(clap::Args, Debug, Default, Clone, Copy)]
pub struct LimitArgs {
    /// Admissions per minute [default on create: 100].
    #[arg(long)]
    per_minute: Option<u32>,
    /// Admissions per hour [default on create: 1000].
    #[arg(long)]
    per_hour: Option<u32>,
    /// Admissions per day [default on create: 10000].
    #[arg(long)]
    per_day: Option<u32>,
}

impl LimitArgs {
    fn is_empty(self) -> bool {
        self.per_minute.is_none() && self.per_hour.is_none() && self.per_day.is_none()
    }

    /// The limits to send: each given window, else `current`'s (0, the default, when
    /// there is none).
    fn over(self, current: Option<pb::RateLimits>) -> pb::RateLimits {
        let current = current.unwrap_or_default();
        pb::RateLimits {
            per_minute: self.per_minute.unwrap_or(current.per_minute),
            per_hour: self.per_hour.unwrap_or(current.per_hour),
            per_day: self.per_day.unwrap_or(current.per_day),
        }
    }
}

fn api_key_json(key: &pb::ApiKey) -> Value {
    json!({
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "permissions": key.permissions,
        "role": key.role,
        "state": key.state,
        "expiring": key.expiring,
        "created_at": time(&key.created_at),
        "expires_at": time(&key.expires_at),
        "grace_until": time(&key.grace_until),
        "successor_id": key.successor_id,
        "predecessor_id": key.predecessor_id,
        "last_used_at": time(&key.last_used_at),
        "usage_count": key.usage_count,
        "rate_limits": key.rate_limits.map(|limits| json!({
            "per_minute": limits.per_minute,
            "per_hour": limits.per_hour,
            "per_day": limits.per_day,
        })),
    })
}

fn api_key_line(key: &Value) -> String {
    let state = match (key["state"].as_str(), key["expiring"].as_bool()) {
        (Some("active"), Some(true)) => "expiring".to_owned(),
        (state, _) => state.unwrap_or("").to_owned(),
    };
    let expires = key["expires_at"].as_i64().map_or_else(
        || "-".to_owned(),
        |seconds| {
            crate::abuse::digest::rfc3339(tessera_common::UnixMillis(seconds.saturating_mul(1000)))
        },
    );
    let limits = &key["rate_limits"];
    format!(
        "{}  {:<10} {:<8} expires {}  uses {}  limits {}/min {}/h {}/day  {}",
        key["key_id"].as_str().unwrap_or(""),
        key["tenant_id"].as_str().unwrap_or(""),
        state,
        expires,
        key["usage_count"],
        limits["per_minute"],
        limits["per_hour"],
        limits["per_day"],
        key["name"].as_str().unwrap_or(""),
    )
}

/// Reads a key argument: `@FILE`, `-` for standard input, or the key.
fn key_argument(argument: &str) -> anyhow::Result<String> {
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

/// Runs `apikeys …`.
pub async fn apikeys(args: &ConnectArgs, command: ApiKeysCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::api_key_service_client::ApiKeyServiceClient::new(client.channel.clone());
    match command {
        ApiKeysCommand::Create {
            tenant,
            name,
            permissions,
            role,
            expires_in_days,
            reason,
            out,
            limits,
        } => {
            let expires_at = expires_in_days.map(|days| prost_types::Timestamp {
                seconds: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |now| now.as_secs() as i64)
                    + i64::from(days) * 24 * 3600,
                nanos: 0,
            });
            let response = service
                .create_api_key(client.request(pb::CreateApiKeyRequest {
                    rate_limits: Some(limits.over(None)),
                    tenant_id: tenant,
                    name,
                    permissions,
                    role,
                    expires_at,
                    reason,
                })?)
                .await?
                .into_inner();
            let mut value = response
                .api_key
                .as_ref()
                .map(api_key_json)
                .unwrap_or_default();
            value["key"] = json!(response.key);
            let secret = SecretOutput {
                fields: &["key"],
                out: out.as_deref(),
                contents: |value| bare(value, "key"),
            };
            client.print_with_secret(value, secret, |value| {
                format!(
                    "{}\n{}\nstore the key now: it is shown once",
                    value["key"].as_str().unwrap_or(""),
                    api_key_line(value)
                )
            })?;
        }
        ApiKeysCommand::List { tenant } => {
            let response = service
                .list_api_keys(client.request(pb::ListApiKeysRequest { tenant_id: tenant })?)
                .await?
                .into_inner();
            let keys: Vec<Value> = response.api_keys.iter().map(api_key_json).collect();
            client.print(json!({ "api_keys": keys }), |value| {
                value["api_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(api_key_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ApiKeysCommand::Get { key_id } => {
            let response = service
                .get_api_key(client.request(pb::GetApiKeyRequest { key_id })?)
                .await?
                .into_inner();
            client.print(api_key_json(&response), api_key_line);
        }
        ApiKeysCommand::Rotate {
            key_id,
            grace_seconds,
            reason,
            out,
        } => {
            let response = service
                .rotate_api_key(client.request(pb::RotateApiKeyRequest {
                    key_id,
                    grace_seconds: grace_seconds.unwrap_or(0),
                    reason,
                })?)
                .await?
                .into_inner();
            let mut value = response
                .api_key
                .as_ref()
                .map(api_key_json)
                .unwrap_or_default();
            value["key"] = json!(response.key);
            value["predecessor"] = response
                .predecessor
                .as_ref()
                .map(api_key_json)
                .unwrap_or_default();
            let secret = SecretOutput {
                fields: &["key"],
                out: out.as_deref(),
                contents: |value| bare(value, "key"),
            };
            client.print_with_secret(value, secret, |value| {
                format!(
                    "{}\n{}\nold key {} works until its grace ends",
                    value["key"].as_str().unwrap_or(""),
                    api_key_line(value),
                    value["predecessor"]["key_id"].as_str().unwrap_or("")
                )
            })?;
        }
        ApiKeysCommand::Limits {
            key_id,
            limits,
            reason,
        } => {
            if limits.is_empty() {
                bail!("give at least one of --per-minute, --per-hour, --per-day");
            }
            let current = service
                .get_api_key(client.request(pb::GetApiKeyRequest {
                    key_id: key_id.clone(),
                })?)
                .await?
                .into_inner()
                .rate_limits;
            let response = service
                .set_api_key_rate_limits(client.request(pb::SetApiKeyRateLimitsRequest {
                    key_id,
                    rate_limits: Some(limits.over(current)),
                    reason,
                })?)
                .await?
                .into_inner();
            client.print(api_key_json(&response), api_key_line);
        }
        ApiKeysCommand::Revoke { key_id, reason } => {
            let response = service
                .revoke_api_key(client.request(pb::RevokeApiKeyRequest { key_id, reason })?)
                .await?
                .into_inner();
            client.print(api_key_json(&response), api_key_line);
        }
        ApiKeysCommand::Validate {
            key,
            permissions,
            role,
        } => {
            let response = service
                .validate_api_key(client.request(pb::ValidateApiKeyRequest {
                    lease_admissions: 0,
                    key: key_argument(&key)?,
                    required_permissions: permissions,
                    required_role: role,
                })?)
                .await?
                .into_inner();
            let refusal = response
                .refusal()
                .as_str_name()
                .trim_start_matches("API_KEY_REFUSAL_")
                .to_ascii_lowercase();
            let value = json!({
                "valid": response.valid,
                "refusal": if response.valid { Value::Null } else { json!(refusal) },
                "key_id": response.key_id,
                "tenant_id": response.tenant_id,
                "permissions": response.permissions,
                "role": response.role,
                "expires_at": time(&response.expires_at),
                "grace_until": time(&response.grace_until),
            });
            client.print(value, |value| {
                if value["valid"].as_bool() == Some(true) {
                    format!(
                        "valid: key {} of tenant {}",
                        value["key_id"].as_str().unwrap_or(""),
                        value["tenant_id"].as_str().unwrap_or("")
                    )
                } else {
                    format!("invalid: {refusal}")
                }
            });
            if !response.valid {
                bail!("the API key is not valid");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_left_out_keep_the_current_ones_or_the_defaults() {
        let args = LimitArgs {
            per_minute: Some(500),
            per_hour: None,
            per_day: Some(20_000),
        };
        let current = pb::RateLimits {
            per_minute: 100,
            per_hour: 2_000,
            per_day: 10_000,
        };
        assert_eq!(
            args.over(Some(current)),
            pb::RateLimits {
                per_minute: 500,
                per_hour: 2_000,
                per_day: 20_000,
            }
        );
        assert_eq!(args.over(None).per_hour, 0, "0: the server's default");
        assert!(LimitArgs::default().is_empty());
    }

    #[test]
    fn a_key_line_shows_its_limits() {
        let key = pb::ApiKey {
            key_id: "Abc".into(),
            rate_limits: Some(pb::RateLimits {
                per_minute: 100,
                per_hour: 1_000,
                per_day: 10_000,
            }),
            ..Default::default()
        };
        let line = api_key_line(&api_key_json(&key));
        assert!(line.contains("limits 100/min 1000/h 10000/day"), "{line}");
    }
}

//! `tessera-issuer secrets …` (the inventory: register, list, show, rotate, rollback,
//! history, put) and `tessera-issuer emergency-rotate SECRET…|--all` (seed 004's
//! `emergency_rotate.sh`: rotate now, revoke `previous` at once, report per secret).
//! No command prints a value: `put` reads one from a file or standard input.

use std::collections::HashMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs, time};

/// `tessera-issuer secrets …` (parsed once per process: the size of `Register` is no
/// concern).
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SecretsCommand {
    /// Add a secret to the inventory; rotating kinds get their first value at once.
    Register {
        name: String,
        /// random, postgres, redis or external.
        #[arg(long)]
        kind: String,
        /// 1 (90 days), 2 (180 days) or 3 (365 days) [default: 2].
        #[arg(long, default_value_t = 2)]
        tier: u32,
        /// Days between rotations [default: the tier's].
        #[arg(long, default_value_t = 0)]
        cadence_days: u32,
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
        /// KEY=VALUE (repeat the flag).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// random: length (16-4096) [default: 48].
        #[arg(long, default_value_t = 0)]
        length: u32,
        /// random: alphanumeric, hex, base64url or ascii.
        #[arg(long, default_value = "")]
        alphabet: String,
        /// postgres: `postgres://host:port/db`; redis: `redis://host:port` (no credentials).
        #[arg(long, default_value = "")]
        url: String,
        /// postgres: the two alternated roles.
        #[arg(long, default_value = "")]
        role_a: String,
        #[arg(long, default_value = "")]
        role_b: String,
        /// redis: the ACL user.
        #[arg(long, default_value = "")]
        username: String,
        /// external: where the operator rotates it.
        #[arg(long, default_value = "")]
        instructions: String,
        /// external: the first value, `@FILE` or `-` (standard input).
        #[arg(long)]
        value: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the inventory: age, due date, overdue flag.
    List {
        /// Only secrets past 80 % of their cadence.
        #[arg(long)]
        due: bool,
    },
    /// One secret's metadata and versions (never values).
    Show { name: String },
    /// Rotate now (or finish an interrupted rotation).
    Rotate {
        name: String,
        /// Revoke the previous value at once instead of keeping the overlap.
        #[arg(long)]
        emergency: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make the previous version current again.
    Rollback {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The rotation history, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Record a new value (external secrets): `@FILE` or `-` (standard input).
    Put {
        name: String,
        value: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn kind_name(kind: i32) -> &'static str {
    match pb::RotatorKind::try_from(kind) {
        Ok(pb::RotatorKind::Random) => "random",
        Ok(pb::RotatorKind::Postgres) => "postgres",
        Ok(pb::RotatorKind::Redis) => "redis",
        Ok(pb::RotatorKind::External) => "external",
        _ => "unknown",
    }
}

fn stage_name(stage: i32) -> &'static str {
    match pb::SecretStage::try_from(stage) {
        Ok(pb::SecretStage::Current) => "current",
        Ok(pb::SecretStage::Pending) => "pending",
        Ok(pb::SecretStage::Previous) => "previous",
        Ok(pb::SecretStage::Retired) => "retired",
        _ => "unknown",
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_secs() as i64)
}

fn secret_json(info: &pb::SecretInfo) -> Value {
    let last = info
        .last_rotated_at
        .as_ref()
        .or(info.created_at.as_ref())
        .map_or(0, |at| at.seconds);
    json!({
        "name": info.name,
        "kind": kind_name(info.kind),
        "tier": info.tier,
        "cadence_days": info.cadence_days,
        "owner": info.owner,
        "description": info.description,
        "tags": info.tags,
        "created_at": time(&info.created_at),
        "last_rotated_at": time(&info.last_rotated_at),
        "next_rotation_at": time(&info.next_rotation_at),
        "age_days": (now_seconds() - last).max(0) / 86_400,
        "warning": info.warning,
        "overdue": info.overdue,
        "rotation_in_progress": info.rotation_in_progress,
        "versions": info.versions.iter().map(|version| json!({
            "version": version.version,
            "stage": stage_name(version.stage),
            "created_at": time(&version.created_at),
            "activated_at": time(&version.activated_at),
            "retired_at": time(&version.retired_at),
        })).collect::<Vec<_>>(),
    })
}

fn date(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "-".to_owned(),
        |seconds| {
            crate::abuse::digest::rfc3339(tessera_common::UnixMillis(seconds.saturating_mul(1000)))
        },
    )
}

fn secret_line(value: &Value) -> String {
    let flag = if value["overdue"].as_bool() == Some(true) {
        "OVERDUE"
    } else if value["warning"].as_bool() == Some(true) {
        "due-soon"
    } else {
        "ok"
    };
    let current = value["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|version| version["stage"] == "current")
        .map_or_else(
            || "-".to_owned(),
            |version| format!("v{}", version["version"]),
        );
    format!(
        "{:<32} {:<9} tier {} {:>4}d  age {:>4}d  due {}  {:<8} {}{}",
        value["name"].as_str().unwrap_or(""),
        value["kind"].as_str().unwrap_or(""),
        value["tier"],
        value["cadence_days"],
        value["age_days"],
        date(value["next_rotation_at"].as_i64()),
        flag,
        current,
        match value["rotation_in_progress"].as_str() {
            Some(step) if !step.is_empty() => format!("  (rotation unfinished at {step})"),
            _ => String::new(),
        }
    )
}

fn secret_text(value: &Value) -> String {
    let mut lines = vec![secret_line(value)];
    for version in value["versions"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  v{:<4} {:<9} created {}  activated {}  retired {}",
            version["version"],
            version["stage"].as_str().unwrap_or(""),
            date(version["created_at"].as_i64()),
            date(version["activated_at"].as_i64()),
            date(version["retired_at"].as_i64()),
        ));
    }
    lines.join("\n")
}

/// Reads a value argument: `@FILE` or `-` (standard input). A literal would show in `ps`
/// and shell history, so it is refused.
fn value_argument(argument: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = if argument == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        bytes
    } else if let Some(path) = argument.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("reading {path}"))?
    } else {
        bail!("give the value as @FILE or - (standard input), never on the command line");
    };
    while bytes
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        bytes.pop();
    }
    Ok(bytes)
}

#[allow(clippy::too_many_arguments)]
fn rotator(
    kind: &str,
    length: u32,
    alphabet: String,
    url: String,
    role_a: String,
    role_b: String,
    username: String,
    instructions: String,
) -> anyhow::Result<(pb::RotatorKind, pb::rotator_config::Config)> {
    use pb::rotator_config::Config;
    Ok(match kind {
        "random" => (
            pb::RotatorKind::Random,
            Config::Random(pb::RandomRotator { length, alphabet }),
        ),
        "postgres" => (
            pb::RotatorKind::Postgres,
            Config::Postgres(pb::PostgresRotator {
                url,
                role_a,
                role_b,
            }),
        ),
        "redis" => (
            pb::RotatorKind::Redis,
            Config::Redis(pb::RedisRotator { url, username }),
        ),
        "external" => (
            pb::RotatorKind::External,
            Config::External(pb::ExternalRotator { instructions }),
        ),
        other => bail!("--kind {other}: random, postgres, redis or external"),
    })
}

/// Runs `secrets …`.
pub async fn secrets(args: &ConnectArgs, command: SecretsCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service = pb::secret_service_client::SecretServiceClient::new(client.channel.clone());
    match command {
        SecretsCommand::Register {
            name,
            kind,
            tier,
            cadence_days,
            owner,
            description,
            tags,
            length,
            alphabet,
            url,
            role_a,
            role_b,
            username,
            instructions,
            value,
            reason,
        } => {
            let (kind, config) = rotator(
                &kind,
                length,
                alphabet,
                url,
                role_a,
                role_b,
                username,
                instructions,
            )?;
            let tags = tags
                .iter()
                .map(|tag| {
                    tag.split_once('=')
                        .map(|(key, value)| (key.to_owned(), value.to_owned()))
                        .with_context(|| format!("--tag {tag}: KEY=VALUE"))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            let initial_value = value.as_deref().map(value_argument).transpose()?;
            let info = service
                .register_secret(client.request(pb::RegisterSecretRequest {
                    name,
                    kind: kind.into(),
                    rotator: Some(pb::RotatorConfig {
                        config: Some(config),
                    }),
                    tier,
                    cadence_days,
                    owner,
                    description,
                    tags,
                    initial_value: initial_value.unwrap_or_default(),
                    reason,
                })?)
                .await?
                .into_inner();
            client.print(secret_json(&info), secret_text);
        }
        SecretsCommand::List { due } => {
            let response = service
                .list_secrets(client.request(pb::ListSecretsRequest { due_only: due })?)
                .await?
                .into_inner();
            let secrets: Vec<Value> = response.secrets.iter().map(secret_json).collect();
            client.print(json!({ "secrets": secrets }), |value| {
                value["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(secret_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SecretsCommand::Show { name } => {
            let info = service
                .get_secret(client.request(pb::GetSecretRequest { name })?)
                .await?
                .into_inner();
            client.print(secret_json(&info), secret_text);
        }
        SecretsCommand::Rotate {
            name,
            emergency,
            reason,
        } => {
            let response = service
                .rotate_secret(client.request(pb::RotateSecretRequest {
                    name,
                    emergency,
                    reason,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "version": response.version,
                "steps": response.steps,
                "resumed": response.resumed,
                "secret": response.secret.as_ref().map(secret_json),
            });
            client.print(value, |value| {
                format!(
                    "rotated to v{} (steps: {}{})\n{}",
                    value["version"],
                    response.steps.join(", "),
                    if response.resumed { "; resumed" } else { "" },
                    secret_text(&value["secret"])
                )
            });
        }
        SecretsCommand::Rollback { name, reason } => {
            let info = service
                .rollback_secret(client.request(pb::RollbackSecretRequest { name, reason })?)
                .await?
                .into_inner();
            client.print(secret_json(&info), secret_text);
        }
        SecretsCommand::History { name, limit } => {
            let response = service
                .secret_history(client.request(pb::SecretHistoryRequest { name, limit })?)
                .await?
                .into_inner();
            let entries: Vec<Value> = response
                .entries
                .iter()
                .map(|entry| {
                    json!({
                        "at": time(&entry.at),
                        "step": entry.step,
                        "version": entry.version,
                        "outcome": entry.outcome,
                        "actor": entry.actor,
                        "request_id": entry.request_id,
                        "detail": entry.detail,
                    })
                })
                .collect();
            client.print(json!({ "entries": entries }), |value| {
                value["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|entry| {
                        format!(
                            "{}  {:<16} v{:<4} {:<6} {:<20} {} {}",
                            date(entry["at"].as_i64()),
                            entry["step"].as_str().unwrap_or(""),
                            entry["version"],
                            entry["outcome"].as_str().unwrap_or(""),
                            entry["actor"].as_str().unwrap_or(""),
                            entry["request_id"].as_str().unwrap_or(""),
                            entry["detail"].as_str().unwrap_or(""),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SecretsCommand::Put {
            name,
            value,
            reason,
        } => {
            let value = zeroize::Zeroizing::new(value_argument(&value)?);
            let info = service
                .put_secret_version(client.request(pb::PutSecretVersionRequest {
                    name,
                    value: value.to_vec(),
                    reason,
                })?)
                .await?
                .into_inner();
            client.print(secret_json(&info), secret_text);
        }
    }
    Ok(())
}

/// Runs `emergency-rotate`: every named secret (or every rotating one with `--all`) is
/// rotated now with its previous value revoked at once. One secret's failure does not
/// stop the others; the command fails if any did.
pub async fn emergency_rotate(
    args: &ConnectArgs,
    names: Vec<String>,
    all: bool,
    reason: String,
) -> anyhow::Result<()> {
    if all != names.is_empty() {
        bail!("name the secrets to rotate, or pass --all (not both)");
    }
    let client = Client::connect(args).await?;
    let mut service = pb::secret_service_client::SecretServiceClient::new(client.channel.clone());
    let mut report = Vec::new();
    let names = if all {
        let response = service
            .list_secrets(client.request(pb::ListSecretsRequest { due_only: false })?)
            .await?
            .into_inner();
        let mut names = Vec::new();
        for info in response.secrets {
            if kind_name(info.kind) == "external" {
                report.push(json!({
                    "name": info.name,
                    "outcome": "skipped",
                    "detail": "external: rotate it at its provider, then `secrets put`",
                }));
            } else {
                names.push(info.name);
            }
        }
        names
    } else {
        names
    };
    let mut failed = 0;
    for name in names {
        let result = service
            .rotate_secret(client.request(pb::RotateSecretRequest {
                name: name.clone(),
                emergency: true,
                reason: format!("emergency rotation: {reason}"),
            })?)
            .await;
        match result {
            Ok(response) => {
                let response = response.into_inner();
                report.push(json!({
                    "name": name,
                    "outcome": "rotated",
                    "version": response.version,
                    "steps": response.steps,
                    "resumed": response.resumed,
                    "previous_revoked": response.steps.iter().any(|step| step == "revoke_previous"),
                }));
            }
            Err(status) => {
                failed += 1;
                report.push(json!({
                    "name": name,
                    "outcome": "failed",
                    "detail": status.message(),
                }));
            }
        }
    }
    client.print(json!({ "secrets": report, "failed": failed }), |value| {
        value["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| match entry["outcome"].as_str() {
                Some("rotated") => format!(
                    "{:<32} rotated to v{}  previous revoked: {}  steps: {}",
                    entry["name"].as_str().unwrap_or(""),
                    entry["version"],
                    entry["previous_revoked"],
                    entry["steps"]
                ),
                outcome => format!(
                    "{:<32} {}: {}",
                    entry["name"].as_str().unwrap_or(""),
                    outcome.unwrap_or(""),
                    entry["detail"].as_str().unwrap_or("")
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    if failed > 0 {
        bail!("{failed} secret(s) failed to rotate");
    }
    Ok(())
}

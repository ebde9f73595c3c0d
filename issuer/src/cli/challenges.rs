//! `tessera-issuer challenges start|verify|invalidate`: OTP and magic-link challenges
//! from the command line. `start` prints the code only when the caller delivers it
//! (`--deliver caller`, the default); with `--deliver provider` the issuer sends it and
//! the CLI prints the provider that took it. `verify` exits non-zero unless verified.

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use tessera_proto::v1 as pb;

use super::{Client, ConnectArgs};

/// A challenge method.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    OtpEmail,
    OtpSms,
    MagicLink,
}

/// Who sends the code.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeliverArg {
    /// The code (or link) is printed; the application sends it.
    Caller,
    /// The issuer sends it through the method's provider.
    Provider,
}

/// `tessera-issuer challenges …`
#[derive(Subcommand, Debug)]
pub enum ChallengesCommand {
    /// Start a challenge for a user.
    Start {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        #[arg(long, value_enum)]
        method: MethodArg,
        /// E-mail address or E.164 phone number (required with `--deliver provider`).
        #[arg(long, default_value = "")]
        destination: String,
        #[arg(long, value_enum, default_value = "caller")]
        deliver: DeliverArg,
        /// The end user's IP address (per-IP rate limit).
        #[arg(long, default_value = "")]
        client_ip: String,
    },
    /// Verify a code (or a magic link's token); exits non-zero unless verified.
    Verify {
        #[arg(long)]
        tenant: String,
        challenge_id: String,
        code: String,
        #[arg(long, default_value = "")]
        client_ip: String,
    },
    /// Invalidate every live challenge and unused one-time token of a tenant (or, with
    /// `--all-tenants`, of every tenant).
    Invalidate {
        #[arg(
            long,
            conflicts_with = "all_tenants",
            required_unless_present = "all_tenants"
        )]
        tenant: Option<String>,
        #[arg(long)]
        all_tenants: bool,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// Runs `challenges …`.
pub async fn challenges(args: &ConnectArgs, command: ChallengesCommand) -> anyhow::Result<()> {
    let client = Client::connect(args).await?;
    let mut service =
        pb::challenge_service_client::ChallengeServiceClient::new(client.channel.clone());
    match command {
        ChallengesCommand::Start {
            tenant,
            user,
            method,
            destination,
            deliver,
            client_ip,
        } => {
            let method = match method {
                MethodArg::OtpEmail => pb::ChallengeMethod::OtpEmail,
                MethodArg::OtpSms => pb::ChallengeMethod::OtpSms,
                MethodArg::MagicLink => pb::ChallengeMethod::MagicLink,
            };
            let delivery = match deliver {
                DeliverArg::Caller => pb::ChallengeDelivery::ReturnToCaller,
                DeliverArg::Provider => pb::ChallengeDelivery::Provider,
            };
            let response = service
                .start_challenge(client.request(pb::StartChallengeRequest {
                    method: method as i32,
                    user_id: user,
                    tenant_id: tenant,
                    destination,
                    delivery: delivery as i32,
                    client_ip,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "challenge_id": response.challenge_id,
                "expires_at": response.expires_at.map(|at| at.seconds),
                "code": response.code,
                "link": response.link,
                "provider": response.provider,
                "max_attempts": response.max_attempts,
            });
            client.print(value, |value| {
                let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
                let mut lines = vec![format!("challenge_id: {}", field("challenge_id"))];
                for name in ["code", "link", "provider"] {
                    if !field(name).is_empty() {
                        lines.push(format!("{name}: {}", field(name)));
                    }
                }
                lines.join("\n")
            });
            Ok(())
        }
        ChallengesCommand::Verify {
            tenant,
            challenge_id,
            code,
            client_ip,
        } => {
            let response = service
                .verify_challenge(client.request(pb::VerifyChallengeRequest {
                    challenge_id,
                    tenant_id: tenant,
                    code,
                    client_ip,
                })?)
                .await?
                .into_inner();
            let reason = pb::ChallengeRefusal::try_from(response.reason)
                .map(|reason| {
                    reason
                        .as_str_name()
                        .trim_start_matches("CHALLENGE_REFUSAL_")
                        .to_owned()
                })
                .unwrap_or_else(|_| response.reason.to_string());
            let verified = response.verified;
            client.print(
                json!({
                    "verified": verified,
                    "reason": if verified { String::new() } else { reason },
                    "user_id": response.user_id,
                    "attempts_left": response.attempts_left,
                }),
                |value| {
                    if verified {
                        format!(
                            "verified: user {}",
                            value["user_id"].as_str().unwrap_or_default()
                        )
                    } else {
                        format!(
                            "not verified: {} ({} attempts left)",
                            value["reason"].as_str().unwrap_or_default(),
                            value["attempts_left"]
                        )
                    }
                },
            );
            if verified {
                Ok(())
            } else {
                anyhow::bail!("challenge not verified")
            }
        }
        ChallengesCommand::Invalidate {
            tenant,
            all_tenants: _,
            reason,
        } => {
            let response = service
                .emergency_invalidate_challenges(client.request(
                    pb::EmergencyInvalidateChallengesRequest {
                        tenant_id: tenant.unwrap_or_default(),
                        reason,
                    },
                )?)
                .await?
                .into_inner();
            client.print(
                json!({
                    "n_challenges": response.n_challenges,
                    "n_one_time_tokens": response.n_one_time_tokens,
                }),
                |value| {
                    format!(
                        "invalidated {} challenges and {} one-time tokens",
                        value["n_challenges"], value["n_one_time_tokens"]
                    )
                },
            );
            Ok(())
        }
    }
}

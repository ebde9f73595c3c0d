//! `scan --revoke`: sends every distinct credential found to the issuer's
//! `AdminService/RevokeLeakedCredentials` (in batches of its limit) and returns, per
//! finding, what became of it: `revoked`, `already_dead`, `unknown` or `unsupported_kind`.

use std::collections::HashMap;

use anyhow::Context;
use tessera_proto::v1 as pb;

use super::Finding;
use crate::cli::{Client, ConnectArgs};

/// Credentials per request: the RPC's limit.
const BATCH: usize = 128;

/// Asks the issuer to revoke the credentials of `findings`; returns one outcome name per
/// finding, in order.
pub async fn revoke_found(
    connect: &ConnectArgs,
    findings: &[Finding],
) -> anyhow::Result<Vec<String>> {
    // The same credential found in several places is sent once.
    let mut position_of: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<String> = Vec::new();
    for finding in findings {
        let credential = finding
            .credential
            .as_ref()
            .context("a finding kept no credential to revoke")?;
        position_of
            .entry(finding.found.fingerprint.as_str())
            .or_insert_with(|| {
                distinct.push(credential.to_string());
                distinct.len() - 1
            });
    }
    let client = Client::connect(connect).await?;
    let mut service = pb::admin_service_client::AdminServiceClient::new(client.channel.clone());
    let mut outcomes = Vec::with_capacity(distinct.len());
    for batch in distinct.chunks(BATCH) {
        let request = client.request(pb::RevokeLeakedCredentialsRequest {
            credentials: batch.to_vec(),
            reason: "found by tessera-issuer scan".to_owned(),
        })?;
        let answer = service
            .revoke_leaked_credentials(request)
            .await?
            .into_inner();
        anyhow::ensure!(
            answer.outcomes.len() == batch.len(),
            "the issuer answered {} outcomes for {} credentials",
            answer.outcomes.len(),
            batch.len()
        );
        outcomes.extend(answer.outcomes.into_iter().map(outcome_name));
    }
    // Wipe the copies sent.
    for credential in &mut distinct {
        zeroize::Zeroize::zeroize(credential);
    }
    Ok(findings
        .iter()
        .map(|finding| outcomes[position_of[finding.found.fingerprint.as_str()]].clone())
        .collect())
}

fn outcome_name(outcome: i32) -> String {
    match pb::LeakedCredentialOutcome::try_from(outcome) {
        Ok(pb::LeakedCredentialOutcome::Revoked) => "revoked",
        Ok(pb::LeakedCredentialOutcome::AlreadyDead) => "already_dead",
        Ok(pb::LeakedCredentialOutcome::Unknown) => "unknown",
        Ok(pb::LeakedCredentialOutcome::UnsupportedKind) => "unsupported_kind",
        _ => "unspecified",
    }
    .to_owned()
}

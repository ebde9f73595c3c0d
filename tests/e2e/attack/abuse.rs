//! Attack cases: abuse. Against the real binary, an anonymous caller floods the issuer
//! (the audit log must not grow by a row per call, and the flood must be rate limited
//! with `retry-after` while a valid admin credential keeps working), and an operator's
//! credential is used to plant control and bidi characters in the audit log (refused
//! with `INVALID_ARGUMENT` naming the field, nothing written).

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_proto::v1 as pb;
use tessera_proto::v1::admin_service_client::AdminServiceClient;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revoke_tokens_request::Target;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tonic::{Code, Request, Status};

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;
use crate::support::wait::patience;

/// The audit log, newest first (the CLI's `audit list --json`, as an operator reads it).
fn audit_events(issuer: &Issuer) -> Vec<Value> {
    issuer.cli_json(&["audit", "list", "--limit", "1000"])["events"]
        .as_array()
        .expect("events")
        .clone()
}

/// The number of refused calls a summary row counts ("N refused calls from …").
fn summarised_count(event: &Value) -> Option<u64> {
    let reason = event["reason"].as_str()?;
    let (count, rest) = reason.split_once(' ')?;
    rest.starts_with("refused call")
        .then(|| count.parse().ok())?
}

/// A well-formed credential (valid checksum) that the issuer never issued.
fn forged_credential() -> String {
    tessera_common::credential::Credential::generate(
        tessera_common::credential::CredentialKind::IssuerCaller,
    )
    .expose()
}

#[test]
fn three_hundred_anonymous_calls_add_a_handful_of_audit_rows_that_carry_the_count() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let n_before = audit_events(&issuer).len();

    let runtime = runtime();
    let codes: Vec<Code> = runtime.block_on(async {
        let mut keys = KeyServiceClient::new(connect(issuer.grpc_addr).await);
        let mut codes = Vec::new();
        for _ in 0..300 {
            let status = keys
                .list_keys(Request::new(pb::ListKeysRequest::default()))
                .await
                .expect_err("anonymous ListKeys answered");
            codes.push(status.code());
        }
        codes
    });
    assert!(
        codes
            .iter()
            .all(|code| matches!(code, Code::Unauthenticated | Code::ResourceExhausted)),
        "{codes:?}"
    );

    // The burst is summarised once the peer has been quiet for a few seconds.
    let deadline = Instant::now() + patience(Duration::from_secs(20));
    let summarised = loop {
        let events = audit_events(&issuer);
        let counted: u64 = events[..events.len() - n_before]
            .iter()
            .filter(|event| event["action"] == "auth.denied" && event["actor"] == "anonymous")
            .filter_map(summarised_count)
            .sum();
        if counted >= 300 || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(summarised, 300, "the summary rows count every refused call");
    let events = audit_events(&issuer);
    let new_rows = &events[..events.len() - n_before];
    assert!(
        new_rows.len() <= 3,
        "300 anonymous calls must add a handful of rows, not one each: {new_rows:#?}"
    );
    let summary = new_rows
        .iter()
        .find(|event| summarised_count(event).is_some())
        .expect("a summary row");
    assert_eq!(summary["target"], "KeyService/ListKeys", "{summary}");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap_or("")
            .contains("from 127.0.0.1 (RPCs KeyService/ListKeys;"),
        "{summary}"
    );
}

#[test]
fn a_flood_of_forged_credentials_is_rate_limited_with_retry_after_while_the_admin_still_works() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let admin_token = issuer.admin_token();
    let runtime = runtime();
    runtime.block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let mut tokens = TokenServiceClient::new(channel.clone());
        let mut keys = KeyServiceClient::new(channel);
        // The admin is seen once before the flood, as a monitoring tool would be.
        keys.list_keys(with_bearer(pb::ListKeysRequest::default(), &admin_token))
            .await
            .expect("admin before the flood");

        let issue = || pb::IssueAccessTokenRequest {
            subject: "alice".into(),
            tenant_id: "acme".into(),
            role: "viewer".into(),
            ..Default::default()
        };
        let mut statuses: Vec<Status> = Vec::new();
        for _ in 0..150 {
            let status = tokens
                .issue_access_token(with_bearer(issue(), &forged_credential()))
                .await
                .expect_err("a forged credential issued a token");
            statuses.push(status);
        }
        assert!(
            statuses[..50]
                .iter()
                .all(|status| status.code() == Code::Unauthenticated),
            "the burst of 50 is Unauthenticated: {statuses:?}"
        );
        // Tokens come back at 10 a second, so a slow machine sees a few more Unauthenticated.
        let limited = statuses[50..]
            .iter()
            .find(|status| status.code() == Code::ResourceExhausted)
            .expect("calls beyond the burst are ResourceExhausted");
        let retry_after: u64 = limited
            .metadata()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no retry-after in seconds: {limited:?}"));
        assert!((1..=5).contains(&retry_after), "retry-after {retry_after}");

        // Anonymous calls from the same peer are over the same budget.
        let mut anonymous_codes = Vec::new();
        for _ in 0..10 {
            let status = keys
                .list_keys(Request::new(pb::ListKeysRequest::default()))
                .await
                .expect_err("anonymous ListKeys answered");
            anonymous_codes.push(status.code());
        }
        assert!(
            anonymous_codes.contains(&Code::ResourceExhausted),
            "{anonymous_codes:?}"
        );

        // The valid admin credential from the same address is never rate limited.
        let listed = keys
            .list_keys(with_bearer(pb::ListKeysRequest::default(), &admin_token))
            .await
            .expect("the admin still works during the flood")
            .into_inner();
        assert!(!listed.keys.is_empty());
    });
    // And so does the CLI, a separate process from the same address.
    issuer.cli_json(&["keys", "list"]);
}

/// Text an attacker would plant to forge or disguise an audit entry.
const HOSTILE_REASONS: [(&str, &str); 3] = [
    ("bidi override", "routine rotation \u{202E}kees-yek"),
    (
        "newline",
        "routine\n42 2026-01-01 key.rotate ok access forged-entry",
    ),
    ("NUL", "routine\0hidden"),
];

/// Asserts that `result` is `INVALID_ARGUMENT` naming `field`.
fn refused_naming<T: std::fmt::Debug>(
    case: &str,
    field: &str,
    result: Result<tonic::Response<T>, Status>,
) {
    match result {
        Ok(response) => panic!("{case}: accepted: {:?}", response.get_ref()),
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
            assert!(
                status.message().starts_with(field),
                "{case}: the message must name `{field}`: {status:?}"
            );
        }
    }
}

#[test]
fn a_reason_with_a_bidi_override_newline_or_nul_is_refused_naming_the_field_and_nothing_is_written()
{
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let admin_token = issuer.admin_token();
    let audit_before = audit_events(&issuer);
    let keys_before = issuer.cli_json(&["keys", "list"]);

    // Through the CLI, as an operator pasting a crafted reason would.
    let rotated = issuer.cli(&["keys", "rotate", "--reason", HOSTILE_REASONS[0].1]);
    assert!(
        !rotated.success()
            && rotated.stderr.contains("InvalidArgument")
            && rotated.stderr.contains("reason"),
        "the CLI must report INVALID_ARGUMENT naming `reason`: {rotated:?}"
    );

    let runtime = runtime();
    runtime.block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let mut keys = KeyServiceClient::new(channel.clone());
        let mut tokens = TokenServiceClient::new(channel.clone());
        let mut admin = AdminServiceClient::new(channel);
        let kid = keys
            .list_keys(with_bearer(pb::ListKeysRequest::default(), &admin_token))
            .await
            .expect("keys")
            .into_inner()
            .keys[0]
            .kid
            .clone();
        for (what, reason) in HOSTILE_REASONS {
            let reason = reason.to_owned();
            refused_naming(
                &format!("RotateKeys, {what}"),
                "reason",
                keys.rotate_keys(with_bearer(
                    pb::RotateKeysRequest {
                        key_set: "access".into(),
                        emergency: true,
                        reason: reason.clone(),
                        ..Default::default()
                    },
                    &admin_token,
                ))
                .await,
            );
            refused_naming(
                &format!("RevokeKey, {what}"),
                "reason",
                keys.revoke_key(with_bearer(
                    pb::RevokeKeyRequest {
                        kid: kid.clone(),
                        reason: reason.clone(),
                    },
                    &admin_token,
                ))
                .await,
            );
            refused_naming(
                &format!("RevokeTokens, {what}"),
                "reason",
                tokens
                    .revoke_tokens(with_bearer(
                        pb::RevokeTokensRequest {
                            target: Some(Target::TenantId("acme".into())),
                            reason: reason.clone(),
                            ..Default::default()
                        },
                        &admin_token,
                    ))
                    .await,
            );
            refused_naming(
                &format!("EmergencyRevoke incident_id, {what}"),
                "incident_id",
                tokens
                    .emergency_revoke(with_bearer(
                        pb::EmergencyRevokeRequest {
                            scope: Some(pb::emergency_revoke_request::Scope::Global(true)),
                            incident_id: reason.clone(),
                            reason: "breach".into(),
                        },
                        &admin_token,
                    ))
                    .await,
            );
            refused_naming(
                &format!("CreateClient name, {what}"),
                "name",
                admin
                    .create_client(with_bearer(
                        pb::CreateClientRequest {
                            name: reason.clone(),
                            scopes: vec!["issue".into()],
                            tenants: Vec::new(),
                        },
                        &admin_token,
                    ))
                    .await,
            );
        }
    });

    assert_eq!(
        audit_events(&issuer),
        audit_before,
        "a refused request writes nothing to the audit log"
    );
    assert_eq!(
        issuer.cli_json(&["keys", "list"]),
        keys_before,
        "no key was rotated or revoked"
    );
}

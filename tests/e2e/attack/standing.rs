//! Attack cases: the rest of the standing credentials (API-key budget and limits, service
//! tokens, webhook tokens) against the real issuer and a real sidecar. A caller confined
//! to `acme` (admin, issue, introspect) acting on `globex`'s key, identity and tokens is
//! answered as if they did not exist, and afterwards each still works; forged checksums,
//! a wrong secret behind a real id, oversized input and a revoked token replayed are
//! refused with their typed answer at the issuer and at the sidecar; a sidecar whose
//! credential is confined to `globex` never hears of `acme`'s credential changes and
//! cannot validate `acme`'s key.

use std::time::{Duration, Instant};

use tessera_common::credential::CredentialKind;
use tessera_proto::v1 as pb;
use tessera_proto::v1::bundle_change::Change;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::Code;

use crate::standing::harness::{
    Family, GENEROUS, Standing, Verdict, bad_checksum, credential_file, public_id, refused_key,
    refused_opaque, verdict, wrong_secret,
};
use crate::support::grpc::{BundleWatch, StreamEvent, with_bearer};
use crate::support::issuer::read_trimmed;
use crate::support::wait::patience;

const HOME: &str = "acme";
const VICTIM: &str = "globex";

/// `Err(code)` of a call, or a panic naming `what` when it succeeded.
fn code<T: std::fmt::Debug>(what: &str, result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(response) => panic!("{what} must fail, got {:?}", response.into_inner()),
        Err(status) => status.code(),
    }
}

#[test]
fn attack_standing_credentials_across_tenants_forged_oversized_and_replayed() {
    let started = Instant::now();
    let stack = Standing::start(&[]);
    let root = stack.root.path();
    let confined = |name: &str, scope: &str| {
        read_trimmed(&credential_file(
            &stack.issuer,
            root,
            name,
            &[scope],
            &[HOME],
        ))
    };
    let confined_admin = confined("acme-admin", "admin");
    let confined_issue = confined("acme-issue", "issue");
    let confined_introspect = confined("acme-introspect", "introspect");
    let admin = stack.admin.clone();
    let rt = &stack.runtime;
    let mut keys = stack.api_keys();
    let mut services = stack.service_tokens();
    let mut webhooks = stack.webhooks();

    // The victim's objects.
    let victim_key = stack.create_key(VICTIM, Some(GENEROUS));
    let victim_key_id = victim_key.api_key.as_ref().unwrap().key_id.clone();
    stack.create_identity(VICTIM, "billing", 0);
    let first = stack.issue_service_token(VICTIM, "billing");
    let first_id = first.info.as_ref().unwrap().token_id.clone();
    let second = rt
        .block_on(services.issue_service_token(with_bearer(
            pb::IssueServiceTokenRequest {
                tenant_id: VICTIM.into(),
                service: "billing".into(),
                replaces: first_id.clone(),
                holder: "victim-pod".into(),
            },
            &admin,
        )))
        .expect("IssueServiceToken replacing the first")
        .into_inner();
    let second_id = second.info.as_ref().unwrap().token_id.clone();
    let webhook = stack.issue_webhook_token(VICTIM, "orders-callback");
    let webhook_id = webhook.info.as_ref().unwrap().token_id.clone();

    eprintln!("[{:?}] across tenants", started.elapsed());
    // --- Across tenants: answered like objects that do not exist. ---
    for credential in [&confined_introspect, &confined_admin] {
        let lease = rt.block_on(keys.lease_api_key_budget(with_bearer(
            pb::LeaseApiKeyBudgetRequest {
                key_id: victim_key_id.clone(),
                requested: 10,
            },
            credential,
        )));
        assert_eq!(
            code("LeaseApiKeyBudget across tenants", lease),
            Code::NotFound
        );
    }
    let limits = rt.block_on(keys.set_api_key_rate_limits(with_bearer(
        pb::SetApiKeyRateLimitsRequest {
            key_id: victim_key_id.clone(),
            rate_limits: Some(pb::RateLimits {
                per_minute: 1,
                per_hour: 1,
                per_day: 1,
            }),
            reason: "attack".into(),
        },
        &confined_admin,
    )));
    assert_eq!(
        code("SetApiKeyRateLimits across tenants", limits),
        Code::NotFound
    );
    let issued = rt.block_on(services.issue_service_token(with_bearer(
        pb::IssueServiceTokenRequest {
            tenant_id: VICTIM.into(),
            service: "billing".into(),
            ..Default::default()
        },
        &confined_issue,
    )));
    let issued = code("IssueServiceToken in another tenant", issued);
    assert!(
        matches!(issued, Code::PermissionDenied | Code::NotFound),
        "{issued:?}"
    );
    let confirm = rt.block_on(services.confirm_service_token(with_bearer(
        pb::ConfirmServiceTokenRequest {
            token_id: second_id.clone(),
        },
        &confined_issue,
    )));
    assert_eq!(
        code("ConfirmServiceToken across tenants", confirm),
        Code::NotFound
    );
    let revoke = rt.block_on(services.revoke_service_token(with_bearer(
        pb::RevokeServiceTokenRequest {
            token_id: first_id.clone(),
            reason: "attack".into(),
        },
        &confined_admin,
    )));
    assert_eq!(
        code("RevokeServiceToken across tenants", revoke),
        Code::NotFound
    );
    for token in [&first.token, &webhook.token] {
        let answer = rt
            .block_on(services.validate_service_token(with_bearer(
                pb::ValidateOpaqueTokenRequest {
                    token: token.clone(),
                    ..Default::default()
                },
                &confined_introspect,
            )))
            .expect("ValidateServiceToken answers")
            .into_inner();
        assert!(
            !answer.valid && answer.refusal() == pb::OpaqueTokenRefusal::Unknown,
            "another tenant's token must look unknown: {answer:?}"
        );
        assert!(answer.info.is_none(), "{answer:?}");
    }
    let planted = rt.block_on(webhooks.issue_webhook_token(with_bearer(
        pb::IssueWebhookTokenRequest {
            tenant_id: VICTIM.into(),
            endpoint: "orders-callback".into(),
            ..Default::default()
        },
        &confined_issue,
    )));
    let planted = code("IssueWebhookToken in another tenant", planted);
    assert!(
        matches!(planted, Code::PermissionDenied | Code::NotFound),
        "{planted:?}"
    );
    let revoke_webhook = rt.block_on(webhooks.revoke_webhook_token(with_bearer(
        pb::RevokeWebhookTokenRequest {
            token_id: webhook_id.clone(),
            reason: "attack".into(),
        },
        &confined_admin,
    )));
    assert_eq!(
        code("RevokeWebhookToken across tenants", revoke_webhook),
        Code::NotFound
    );
    let identity = rt.block_on(services.create_service_identity(with_bearer(
        pb::CreateServiceIdentityRequest {
            tenant_id: VICTIM.into(),
            name: "planted".into(),
            ..Default::default()
        },
        &confined_admin,
    )));
    assert_eq!(
        code("CreateServiceIdentity in another tenant", identity),
        Code::PermissionDenied
    );
    let disable = rt.block_on(services.disable_service_identity(with_bearer(
        pb::DisableServiceIdentityRequest {
            tenant_id: VICTIM.into(),
            name: "billing".into(),
            reason: "attack".into(),
        },
        &confined_admin,
    )));
    let disable = code("DisableServiceIdentity in another tenant", disable);
    assert!(
        matches!(disable, Code::PermissionDenied | Code::NotFound),
        "{disable:?}"
    );
    let listed = rt
        .block_on(services.list_service_identities(with_bearer(
            pb::ListServiceIdentitiesRequest::default(),
            &confined_admin,
        )))
        .expect("ListServiceIdentities")
        .into_inner();
    assert!(
        listed
            .identities
            .iter()
            .all(|identity| identity.tenant_id == HOME),
        "{listed:?}"
    );

    eprintln!("[{:?}] nothing changed", started.elapsed());
    // Nothing changed: limits, key, both service tokens (no confirmation happened, so
    // the first is still live) and the webhook token.
    let got = rt
        .block_on(keys.get_api_key(with_bearer(
            pb::GetApiKeyRequest {
                key_id: victim_key_id.clone(),
            },
            &admin,
        )))
        .unwrap()
        .into_inner();
    assert_eq!(got.rate_limits, Some(GENEROUS), "{got:?}");
    assert!(stack.validate_at_issuer(&victim_key.key).valid);
    for token in [&first.token, &second.token, &webhook.token] {
        let answer = stack.validate_opaque_at_issuer(token);
        assert!(answer.valid, "a victim's token stopped working: {answer:?}");
    }

    eprintln!("[{:?}] forged at issuer and sidecar", started.elapsed());
    // --- Forged, oversized and replayed, at the issuer and at a sidecar. ---
    let sidecar = stack.sidecar("sidecar").start();
    let mut client = stack.validator(&sidecar);
    let at_issuer = |token: &str, permissions: usize| {
        let mut services = stack.service_tokens();
        rt.block_on(services.validate_service_token(with_bearer(
            pb::ValidateOpaqueTokenRequest {
                token: token.to_owned(),
                required_permissions: (0..permissions).map(|i| format!("p{i}")).collect(),
                ..Default::default()
            },
            &admin,
        )))
    };
    let at_sidecar = |client: &mut _, token: &str, permissions: usize| {
        let client: &mut tessera_proto::v1::validator_service_client::ValidatorServiceClient<
            tonic::transport::Channel,
        > = client;
        rt.block_on(
            client.validate_opaque_token(pb::ValidateOpaqueTokenRequest {
                token: token.to_owned(),
                required_permissions: (0..permissions).map(|i| format!("p{i}")).collect(),
                ..Default::default()
            }),
        )
    };
    for (token, kind) in [
        (&first.token, CredentialKind::Service),
        (&webhook.token, CredentialKind::Webhook),
    ] {
        let forged = bad_checksum(token);
        let wrong = wrong_secret(kind, &public_id(token));
        let cases = [
            (forged.as_str(), pb::OpaqueTokenRefusal::BadChecksum),
            (wrong.as_str(), pb::OpaqueTokenRefusal::Unknown),
            (victim_key.key.as_str(), pb::OpaqueTokenRefusal::Malformed),
            ("tbs_nope", pb::OpaqueTokenRefusal::Malformed),
        ];
        for (presented, wanted) in cases {
            let issuer_answer = at_issuer(presented, 0)
                .expect("issuer answers")
                .into_inner();
            assert_eq!(issuer_answer.refusal(), wanted, "issuer: {issuer_answer:?}");
            assert!(issuer_answer.info.is_none());
            assert_eq!(
                rt.block_on(verdict(&mut client, Family::Opaque, presented)),
                refused_opaque(wanted),
                "sidecar"
            );
        }
        let oversized = format!("{}{}", &token[..4], "a".repeat(125));
        assert_eq!(oversized.len(), 129);
        assert_eq!(
            code("129-byte token at the issuer", at_issuer(&oversized, 0)),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                "129-byte token at the sidecar",
                at_sidecar(&mut client, &oversized, 0)
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code("129 permissions at the issuer", at_issuer(token, 129)),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                "129 permissions at the sidecar",
                at_sidecar(&mut client, token, 129)
            ),
            Code::InvalidArgument
        );
    }
    eprintln!("[{:?}] api keys at the sidecar", started.elapsed());
    // API keys at the sidecar: forged, wrong secret, oversized.
    let forged_key = bad_checksum(&victim_key.key);
    let wrong_key = wrong_secret(CredentialKind::ApiKey, &victim_key_id);
    assert_eq!(
        rt.block_on(verdict(&mut client, Family::ApiKey, &forged_key)),
        refused_key(pb::ApiKeyRefusal::BadChecksum)
    );
    assert_eq!(
        rt.block_on(verdict(&mut client, Family::ApiKey, &wrong_key)),
        refused_key(pb::ApiKeyRefusal::Unknown)
    );
    let too_many = rt.block_on(client.validate_api_key(pb::ValidateApiKeyRequest {
        key: victim_key.key.clone(),
        required_permissions: (0..129).map(|i| format!("p{i}")).collect(),
        ..Default::default()
    }));
    assert_eq!(
        code("129 permissions, ValidateApiKey at the sidecar", too_many),
        Code::InvalidArgument
    );
    eprintln!("[{:?}] out of bounds", started.elapsed());
    // Out-of-bounds budget and limits.
    for requested in [0, 1_001] {
        let lease = rt.block_on(keys.lease_api_key_budget(with_bearer(
            pb::LeaseApiKeyBudgetRequest {
                key_id: victim_key_id.clone(),
                requested,
            },
            &admin,
        )));
        assert_eq!(
            code(&format!("lease of {requested}"), lease),
            Code::InvalidArgument
        );
    }
    let lease_with_validation = rt.block_on(keys.validate_api_key(with_bearer(
        pb::ValidateApiKeyRequest {
            key: victim_key.key.clone(),
            lease_admissions: 1_001,
            ..Default::default()
        },
        &admin,
    )));
    assert_eq!(
        code("lease_admissions 1001", lease_with_validation),
        Code::InvalidArgument
    );
    let huge = rt.block_on(keys.set_api_key_rate_limits(with_bearer(
        pb::SetApiKeyRateLimitsRequest {
            key_id: victim_key_id.clone(),
            rate_limits: Some(pb::RateLimits {
                per_minute: 1_000_001,
                per_hour: 0,
                per_day: 0,
            }),
            reason: "attack".into(),
        },
        &admin,
    )));
    assert_eq!(code("per_minute 1,000,001", huge), Code::InvalidArgument);
    let long_life = rt.block_on(webhooks.issue_webhook_token(with_bearer(
        pb::IssueWebhookTokenRequest {
            tenant_id: VICTIM.into(),
            endpoint: "orders-callback".into(),
            ttl_seconds: 86_401,
            ..Default::default()
        },
        &admin,
    )));
    assert_eq!(
        code("webhook ttl 86,401 s", long_life),
        Code::InvalidArgument
    );
    let long_endpoint = rt.block_on(webhooks.issue_webhook_token(with_bearer(
        pb::IssueWebhookTokenRequest {
            tenant_id: VICTIM.into(),
            endpoint: "e".repeat(129),
            ..Default::default()
        },
        &admin,
    )));
    assert_eq!(
        code("129-byte endpoint", long_endpoint),
        Code::InvalidArgument
    );
    // `replaces` naming another identity's token is refused.
    stack.create_identity(VICTIM, "mailer", 0);
    let hijack = rt.block_on(services.issue_service_token(with_bearer(
        pb::IssueServiceTokenRequest {
            tenant_id: VICTIM.into(),
            service: "mailer".into(),
            replaces: second_id.clone(),
            holder: "attacker".into(),
        },
        &admin,
    )));
    let hijack = code("replaces another identity's token", hijack);
    assert!(
        matches!(
            hijack,
            Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound
        ),
        "{hijack:?}"
    );

    eprintln!("[{:?}] replay", started.elapsed());
    // Replay of revoked tokens, cached at the sidecar first.
    for token in [&second.token, &webhook.token] {
        assert_eq!(
            rt.block_on(verdict(&mut client, Family::Opaque, token)),
            Verdict::Valid
        );
    }
    rt.block_on(services.revoke_service_token(with_bearer(
        pb::RevokeServiceTokenRequest {
            token_id: second_id.clone(),
            reason: "replay test".into(),
        },
        &admin,
    )))
    .expect("RevokeServiceToken");
    rt.block_on(webhooks.revoke_webhook_token(with_bearer(
        pb::RevokeWebhookTokenRequest {
            token_id: webhook_id.clone(),
            reason: "replay test".into(),
        },
        &admin,
    )))
    .expect("RevokeWebhookToken");
    for token in [&second.token, &webhook.token] {
        let answer = at_issuer(token, 0).unwrap().into_inner();
        assert_eq!(
            answer.refusal(),
            pb::OpaqueTokenRefusal::Revoked,
            "{answer:?}"
        );
        let wanted = refused_opaque(pb::OpaqueTokenRefusal::Revoked);
        let deadline = Instant::now() + patience(Duration::from_secs(2));
        let mut last = rt.block_on(verdict(&mut client, Family::Opaque, token));
        while last != wanted && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            last = rt.block_on(verdict(&mut client, Family::Opaque, token));
        }
        assert_eq!(
            last,
            wanted,
            "a revoked {} token replayed at the sidecar 2 s after its revocation; log:\n{}",
            &token[..4],
            sidecar.log()
        );
    }
    // The first service token was never confirmed away: it still works.
    assert!(stack.validate_opaque_at_issuer(&first.token).valid);
}

#[test]
fn attack_a_sidecar_confined_to_one_tenant_never_hears_of_another_tenants_credentials() {
    let stack = Standing::start(&[]);
    let root = stack.root.path();
    let confined = credential_file(
        &stack.issuer,
        root,
        "globex-sidecar",
        &["bundle:read", "introspect"],
        &[VICTIM],
    );
    let home_key = stack.create_key(HOME, Some(GENEROUS));
    let victim_key = stack.create_key(VICTIM, Some(GENEROUS));

    // The stream as the confined sidecar's credential reads it, and as an unconfined
    // reader does (the control: the event exists).
    let confined_watch = BundleWatch::open(
        &stack.runtime,
        stack.issuer.grpc_addr,
        &read_trimmed(&confined),
        "e2e-globex",
    )
    .expect("a confined bundle reader may watch");
    let open_watch = BundleWatch::open(
        &stack.runtime,
        stack.issuer.grpc_addr,
        &read_trimmed(&stack.verifier),
        "e2e-all",
    )
    .expect("the verifier may watch");
    for watch in [&confined_watch, &open_watch] {
        watch
            .wait_for(patience(Duration::from_secs(10)), |update| {
                matches!(update.kind, Some(Kind::Snapshot(_)))
            })
            .expect("a snapshot first");
    }

    let mut keys = stack.api_keys();
    for key in [&home_key, &victim_key] {
        stack
            .runtime
            .block_on(keys.revoke_api_key(with_bearer(
                pb::RevokeApiKeyRequest {
                    key_id: key.api_key.as_ref().unwrap().key_id.clone(),
                    reason: "confinement test".into(),
                },
                &stack.admin,
            )))
            .expect("RevokeApiKey");
    }
    let home_id = home_key.api_key.as_ref().unwrap().key_id.clone();
    let victim_id = victim_key.api_key.as_ref().unwrap().key_id.clone();

    // Unconfined: both events. Confined to globex: globex's, never acme's.
    let seen_open = credential_changes_until(&open_watch, &victim_id);
    assert!(
        seen_open
            .iter()
            .any(|(id, tenant)| *id == home_id && tenant == HOME),
        "the unconfined reader did not see acme's revocation: {seen_open:?}"
    );
    let seen_confined = credential_changes_until(&confined_watch, &victim_id);
    assert!(
        seen_confined.iter().all(|(_, tenant)| tenant == VICTIM),
        "a reader confined to globex saw: {seen_confined:?}"
    );
    // Nothing for acme trails in after it either.
    let end = Instant::now() + Duration::from_millis(500);
    while let Some((_, event)) = confined_watch.next(end.saturating_duration_since(Instant::now()))
    {
        if let StreamEvent::Update(update) = event {
            assert!(
                changes(&update).iter().all(|(_, tenant)| tenant == VICTIM),
                "late event for another tenant: {update:?}"
            );
        }
    }

    // A sidecar holding the confined credential cannot validate acme's keys.
    let sidecar = stack.sidecar_with("globex-sidecar", &confined).start();
    let mut client = stack.validator(&sidecar);
    let live_home = stack.create_key(HOME, Some(GENEROUS)).key;
    let live_victim = stack.create_key(VICTIM, Some(GENEROUS)).key;
    assert_eq!(
        stack
            .runtime
            .block_on(verdict(&mut client, Family::ApiKey, &live_home)),
        refused_key(pb::ApiKeyRefusal::Unknown)
    );
    assert_eq!(
        stack
            .runtime
            .block_on(verdict(&mut client, Family::ApiKey, &live_victim)),
        Verdict::Valid
    );
}

/// The (credential id, tenant) of every CredentialChanged in `update`.
fn changes(update: &pb::TrustBundleUpdate) -> Vec<(String, String)> {
    match &update.kind {
        Some(Kind::Delta(delta)) => delta
            .changes
            .iter()
            .filter_map(|change| match &change.change {
                Some(Change::CredentialChanged(changed)) => {
                    Some((changed.credential_id.clone(), changed.tenant_id.clone()))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Every CredentialChanged seen until one for `last_id` arrives (panics after 5 s).
fn credential_changes_until(watch: &BundleWatch, last_id: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let end = Instant::now() + patience(Duration::from_secs(5));
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match watch.next(left) {
            Some((_, StreamEvent::Update(update))) => {
                seen.extend(changes(&update));
                if seen.iter().any(|(id, _)| id == last_id) {
                    return seen;
                }
            }
            Some((_, StreamEvent::Ended(result))) => {
                panic!("the stream ended ({result:?}) after {seen:?}")
            }
            None => panic!("no CredentialChanged for {last_id} within 5 s; saw {seen:?}"),
        }
    }
}

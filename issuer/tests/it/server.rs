//! Server tests: the issuer's gRPC services on a real socket — issuance, input checks,
//! authentication and scopes, audit, the trust-bundle stream and graceful shutdown.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, Validation, decode, decode_header};
use tessera_proto::v1 as pb;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::Code;

use crate::harness::{TestIssuer, issue_request, with_credential};

async fn jwks(issuer: &TestIssuer) -> jsonwebtoken::jwk::JwkSet {
    let response = issuer
        .keys()
        .await
        .get_jwks(issuer.as_admin(pb::GetJwksRequest {}))
        .await
        .expect("jwks")
        .into_inner();
    serde_json::from_str(&response.jwks_json).expect("jwks json")
}

#[tokio::test]
async fn issued_token_verifies_with_jsonwebtoken_and_carries_the_seed_claims() {
    let issuer = TestIssuer::start().await;
    let mut request = issue_request("acme");
    request.ttl_seconds = 600;
    request.features = vec!["beta".into()];
    request.mfa_verified = true;
    // The caller's W3C trace context is accepted (and continued when tracing exports).
    let mut traced = issuer.as_admin(request);
    traced.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let issued = issuer
        .tokens()
        .await
        .issue_access_token(traced)
        .await
        .expect("issue")
        .into_inner();
    let header = decode_header(&issued.token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(issued.kid.as_str()));
    assert_eq!(header.alg, JwtAlgorithm::RS256);
    let jwks = jwks(&issuer).await;
    let jwk = jwks.find(&issued.kid).expect("kid published");
    let mut validation = Validation::new(JwtAlgorithm::RS256);
    validation.set_audience(&["tessera-api"]);
    validation.set_issuer(&["tessera"]);
    let claims = decode::<serde_json::Value>(
        &issued.token,
        &DecodingKey::from_jwk(jwk).expect("jwk"),
        &validation,
    )
    .expect("token verifies")
    .claims;
    for field in [
        "iss",
        "sub",
        "aud",
        "iat",
        "exp",
        "nbf",
        "jti",
        "tenant_id",
        "role",
        "permissions",
        "session_id",
        "token_type",
        "mfa_verified",
        "last_password_change",
        "features",
        "iat_ms",
    ] {
        assert!(
            claims.get(field).is_some(),
            "missing claim {field}: {claims}"
        );
    }
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(claims["jti"], issued.jti);
    assert_eq!(claims["tenant_id"], "acme");
    assert_eq!(claims["mfa_verified"], true);
    let expires_at = issued.expires_at.expect("expires_at").seconds;
    let refresh_after = issued.refresh_after.expect("refresh_after").seconds;
    assert_eq!(
        expires_at - refresh_after,
        300,
        "refresh hint 5 minutes before expiry"
    );

    let introspection = issuer
        .tokens()
        .await
        .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
            token: issued.token.clone(),
        }))
        .await
        .expect("introspect")
        .into_inner();
    assert!(introspection.active, "{introspection:?}");
    assert_eq!(introspection.claims.expect("claims").subject, "alice");
    issuer.stop().await;
}

#[tokio::test]
async fn every_algorithm_issues_tokens_the_stream_keys_verify() {
    for (algorithm, name) in [
        (tessera_common::keys::Algorithm::Es256, "ES256"),
        (tessera_common::keys::Algorithm::EdDsa, "EdDSA"),
    ] {
        let issuer = TestIssuer::start_with(
            |config| {
                for (key_set, policy) in &mut config.key_policies {
                    // The HMAC set keeps HS256: a JWS algorithm is refused there.
                    if key_set.is_published() {
                        policy.algorithm = algorithm;
                    }
                }
            },
            std::sync::Arc::new(tessera_common::SystemClock),
        )
        .await;
        let issued = issuer
            .tokens()
            .await
            .issue_access_token(issuer.as_admin(issue_request("acme")))
            .await
            .expect("issue")
            .into_inner();
        let header = decode_header(&issued.token).expect("header");
        assert_eq!(format!("{:?}", header.alg), name);
        let introspection = issuer
            .tokens()
            .await
            .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
                token: issued.token,
            }))
            .await
            .expect("introspect")
            .into_inner();
        assert!(introspection.active, "{name}: {introspection:?}");
        issuer.stop().await;
    }
}

#[tokio::test]
async fn bad_issuance_input_is_invalid_argument_naming_the_field() {
    let issuer = TestIssuer::start().await;
    let mut tokens = issuer.tokens().await;
    let cases: Vec<(pb::IssueAccessTokenRequest, &str)> = vec![
        (
            pb::IssueAccessTokenRequest {
                subject: String::new(),
                ..issue_request("acme")
            },
            "subject",
        ),
        (
            pb::IssueAccessTokenRequest {
                tenant_id: String::new(),
                ..issue_request("acme")
            },
            "tenant_id",
        ),
        (
            pb::IssueAccessTokenRequest {
                role: String::new(),
                ..issue_request("acme")
            },
            "role",
        ),
        (
            pb::IssueAccessTokenRequest {
                subject: "x".repeat(300),
                ..issue_request("acme")
            },
            "subject",
        ),
        (
            pb::IssueAccessTokenRequest {
                ttl_seconds: 3600,
                ..issue_request("acme")
            },
            "ttl_seconds",
        ),
        (
            pb::IssueAccessTokenRequest {
                ttl_seconds: 1,
                ..issue_request("acme")
            },
            "ttl_seconds",
        ),
        (
            pb::IssueAccessTokenRequest {
                audience: "elsewhere".into(),
                ..issue_request("acme")
            },
            "audience",
        ),
        (
            pb::IssueAccessTokenRequest {
                permissions: vec!["p".repeat(200)],
                ..issue_request("acme")
            },
            "permissions",
        ),
        (
            pb::IssueAccessTokenRequest {
                permissions: (0..200).map(|i| format!("p{i}")).collect(),
                ..issue_request("acme")
            },
            "permissions",
        ),
        (
            pb::IssueAccessTokenRequest {
                session_id: "a\nb".into(),
                ..issue_request("acme")
            },
            "session_id",
        ),
    ];
    for (request, field) in cases {
        let status = tokens
            .issue_access_token(issuer.as_admin(request))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let mut keys = issuer.keys().await;
    let status = keys
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "refresh".into(),
            reason: "x".into(),
            ..Default::default()
        }))
        .await
        .expect_err("unknown key set");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("key_set"), "{}", status.message());
    let status = keys
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            ..Default::default()
        }))
        .await
        .expect_err("reason required");
    assert!(status.message().contains("reason"), "{}", status.message());

    // A message over the hard request limit is refused before it is decoded, and the
    // connection stays usable.
    let oversized = pb::IssueAccessTokenRequest {
        subject: "x".repeat(tessera_issuer::server::MAX_REQUEST_BYTES + 1),
        ..issue_request("acme")
    };
    let status = tokens
        .issue_access_token(issuer.as_admin(oversized))
        .await
        .expect_err("oversized request refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    tokens
        .issue_access_token(issuer.as_admin(issue_request("acme")))
        .await
        .expect("a normal request after the oversized one");
    issuer.stop().await;
}

#[tokio::test]
async fn credentials_scopes_and_tenants_are_enforced_and_denials_audited() {
    let issuer = TestIssuer::start().await;
    let mut tokens = issuer.tokens().await;
    let status = tokens
        .issue_access_token(tonic::Request::new(issue_request("acme")))
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = tokens
        .issue_access_token(with_credential(issue_request("acme"), "tbc_notreal_x"))
        .await
        .expect_err("garbage credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    // A well-formed credential with a valid checksum but a wrong secret.
    let forged = tessera_common::credential::Credential::generate(
        tessera_common::credential::CredentialKind::IssuerCaller,
    )
    .expose();
    let status = tokens
        .issue_access_token(with_credential(issue_request("acme"), &forged))
        .await
        .expect_err("unknown credential");
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut admin = issuer.admin().await;
    let created = admin
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: "billing-api".into(),
            scopes: vec!["issue".into()],
            tenants: vec!["acme".into()],
        }))
        .await
        .expect("create client")
        .into_inner();
    assert!(created.credential.starts_with("tbc_"));
    tokens
        .issue_access_token(with_credential(issue_request("acme"), &created.credential))
        .await
        .expect("own tenant");
    let status = tokens
        .issue_access_token(with_credential(
            issue_request("globex"),
            &created.credential,
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = issuer
        .keys()
        .await
        .list_keys(with_credential(
            pb::ListKeysRequest::default(),
            &created.credential,
        ))
        .await
        .expect_err("admin RPC with issue scope");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = issuer
        .keys()
        .await
        .list_keys(tonic::Request::new(pb::ListKeysRequest::default()))
        .await
        .expect_err("admin RPC without credential");
    assert_eq!(status.code(), Code::Unauthenticated);

    admin
        .disable_client(issuer.as_admin(pb::DisableClientRequest {
            client_id: created.client_id.clone(),
            reason: "rotated out".into(),
        }))
        .await
        .expect("disable");
    let status = tokens
        .issue_access_token(with_credential(issue_request("acme"), &created.credential))
        .await
        .expect_err("disabled client");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Anonymous refusals are summarised per burst; write the open burst now.
    issuer.app.flush_denial_summaries().await;
    let events = admin
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 100,
            before_seq: 0,
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let denials: Vec<_> = events
        .iter()
        .filter(|event| event.action == "auth.denied")
        .collect();
    assert!(
        denials
            .iter()
            .any(|event| event.actor == created.client_id && event.target == "KeyService/ListKeys"),
        "{denials:?}"
    );
    assert!(
        denials.iter().any(|event| event.actor == "anonymous"
            && event.target.contains("KeyService/ListKeys")
            && event.reason.contains("refused calls from 127.0.0.1")),
        "{denials:?}"
    );
    assert!(
        denials
            .iter()
            .any(|event| event.actor == created.client_id && event.reason.contains("globex"))
    );
    for event in &events {
        assert!(
            !event.reason.contains(&created.credential) && !event.target.contains("tbc_"),
            "{event:?}"
        );
    }
    let verified = admin
        .verify_audit_log(issuer.as_admin(pb::VerifyAuditLogRequest {}))
        .await
        .expect("verify")
        .into_inner();
    assert!(
        verified.intact && verified.n_events as usize >= events.len(),
        "{verified:?}"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn rotations_and_revocations_are_audited_with_actor_reason_and_request_id() {
    let issuer = TestIssuer::start().await;
    let mut request = issuer.as_admin(pb::RotateKeysRequest {
        key_set: "access".into(),
        reason: "quarterly drill".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let rotated = issuer
        .keys()
        .await
        .rotate_keys(request)
        .await
        .expect("rotate")
        .into_inner();
    issuer
        .keys()
        .await
        .revoke_key(issuer.as_admin(pb::RevokeKeyRequest {
            kid: rotated.previous_kid.clone(),
            reason: "suspected leak".into(),
        }))
        .await
        .expect("revoke");
    let status = issuer
        .keys()
        .await
        .revoke_key(issuer.as_admin(pb::RevokeKeyRequest {
            kid: rotated.previous_kid.clone(),
            reason: "again".into(),
        }))
        .await
        .expect_err("already revoked");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let rotate = events
        .iter()
        .find(|event| event.action == "key.rotate")
        .expect("rotation audited");
    assert_eq!(rotate.request_id, "req-42");
    assert_eq!(rotate.reason, "quarterly drill");
    assert_ne!(rotate.actor, "system");
    assert!(
        events
            .iter()
            .any(|event| event.action == "key.create" && event.target == rotated.new_kid)
    );
    let revoke = events
        .iter()
        .find(|event| event.action == "key.revoke" && event.target == rotated.previous_kid)
        .expect("revocation audited");
    assert_eq!(revoke.reason, "suspected leak");
    // Bootstrap creations were recorded by the system actor.
    assert!(
        events
            .iter()
            .any(|event| event.action == "key.create" && event.actor == "system")
    );
    issuer.stop().await;
}

async fn next_update(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
) -> pb::TrustBundleUpdate {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("update within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

/// Reads updates until one is a delta (skipping heartbeats).
async fn next_delta(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
) -> (u64, pb::TrustBundleDelta) {
    loop {
        let update = next_update(stream).await;
        if let Some(Kind::Delta(delta)) = update.kind {
            return (update.revision, delta);
        }
    }
}

#[tokio::test]
async fn stream_sends_a_snapshot_then_pushes_rotations_as_deltas() {
    let issuer = TestIssuer::start().await;
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
            since_revision: 0,
            subscriber_id: "test".into(),
            credential_changes: false,
            secret_changes: false,
        }))
        .await
        .expect("watch")
        .into_inner();
    let first = next_update(&mut stream).await;
    let Some(Kind::Snapshot(snapshot)) = first.kind else {
        panic!("snapshot first: {first:?}")
    };
    assert_eq!(snapshot.keys.len(), 2, "one access and one action key");
    assert!(first.revision >= 2);
    let policy = snapshot.policy.expect("policy");
    assert_eq!(policy.issuer, "tessera");
    assert_eq!(policy.audiences, vec!["tessera-api".to_owned()]);

    let started = Instant::now();
    let rotated = issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            reason: "test".into(),
            ..Default::default()
        }))
        .await
        .expect("rotate")
        .into_inner();
    let (revision, delta) = next_delta(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(revision > first.revision);
    let upserted: Vec<String> = delta
        .changes
        .iter()
        .filter_map(|change| match &change.change {
            Some(pb::bundle_change::Change::KeyUpserted(key)) => Some(key.kid.clone()),
            _ => None,
        })
        .collect();
    // The new key arrives in the same revision group as the rotation (possibly over
    // several delta messages): wait for it.
    let mut seen = upserted;
    while !seen.contains(&rotated.new_kid) {
        let (_, delta) = next_delta(&mut stream).await;
        for change in delta.changes {
            if let Some(pb::bundle_change::Change::KeyUpserted(key)) = change.change {
                seen.push(key.kid);
            }
        }
    }
    assert!(elapsed < Duration::from_secs(1), "pushed in {elapsed:?}");

    let emergency = issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            reason: "compromise".into(),
            emergency: true,
            ..Default::default()
        }))
        .await
        .expect("emergency")
        .into_inner();
    assert_eq!(emergency.previous_kid, rotated.new_kid);
    loop {
        let (_, delta) = next_delta(&mut stream).await;
        let revoked = delta.changes.iter().any(|change| {
            matches!(&change.change, Some(pb::bundle_change::Change::KeyRevoked(key)) if key.kid == rotated.new_kid)
        });
        if revoked {
            break;
        }
    }
    issuer.stop().await;
}

#[tokio::test]
async fn stream_resumes_with_deltas_falls_back_to_snapshots_and_heartbeats_when_idle() {
    let issuer = TestIssuer::start_with(
        |config| config.heartbeat = Duration::from_secs(1),
        std::sync::Arc::new(tessera_common::SystemClock),
    )
    .await;
    let current = issuer.app.hub.revision().0;
    let mut client = issuer.bundle().await;
    issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "action".into(),
            reason: "test".into(),
            ..Default::default()
        }))
        .await
        .expect("rotate");
    let mut resumed = client
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
            since_revision: current,
            subscriber_id: "resume".into(),
            credential_changes: false,
            secret_changes: false,
        }))
        .await
        .expect("watch")
        .into_inner();
    let first = next_update(&mut resumed).await;
    let Some(Kind::Delta(delta)) = first.kind else {
        panic!("deltas from a retained revision: {first:?}")
    };
    assert_eq!(
        delta.changes.first().map(|change| change.revision),
        Some(current + 1)
    );
    assert_eq!(first.revision, issuer.app.hub.revision().0);
    // Idle stream: a heartbeat carrying the current revision.
    let heartbeat = next_update(&mut resumed).await;
    assert!(
        matches!(heartbeat.kind, Some(Kind::Heartbeat(_))),
        "{heartbeat:?}"
    );
    assert_eq!(heartbeat.revision, first.revision);

    let mut ahead = client
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
            since_revision: 1_000_000,
            subscriber_id: "ahead".into(),
            credential_changes: false,
            secret_changes: false,
        }))
        .await
        .expect("watch")
        .into_inner();
    let first = next_update(&mut ahead).await;
    assert!(
        matches!(first.kind, Some(Kind::Snapshot(_))),
        "unknown revision gets a snapshot"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_streams_and_returns() {
    let issuer = TestIssuer::start().await;
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest::default()))
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = next_update(&mut stream).await;
    let stopping = tokio::spawn(issuer.stop());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "stream closed on shutdown");
    stopping.await.expect("server stopped cleanly");
}

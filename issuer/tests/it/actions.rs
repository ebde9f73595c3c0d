//! Action links, password reset and email verification over gRPC, in-process on real
//! sockets: a link's URL and one consumption (a replay is ALREADY_USED), each typed
//! refusal (wrong action, wrong resource, IP outside the allowlist, user-agent mismatch,
//! expired on a test clock), the two-step confirmation (replayed, or bound to another
//! link), an access token presented as an action token and the reverse, a forged
//! signature, oversized input, another tenant's caller; a new reset superseding the old
//! one, a completed reset revoking the user's earlier access token and later tokens
//! carrying `last_password_change`; email verification; settings bounds and scopes.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_proto::v1 as pb;
use tessera_proto::v1::ActionRefusal as Refused;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, issue_request, with_credential};

const HOME: &str = "acme";
const OTHER: &str = "globex";

async fn actions(issuer: &TestIssuer) -> ActionLinkServiceClient<Channel> {
    ActionLinkServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("{}-{}", scopes.join("-"), tenants.join("-")),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

fn link_request(tenant: &str, action: &str) -> pb::CreateActionLinkRequest {
    pb::CreateActionLinkRequest {
        action: action.into(),
        resource_id: "inv-1".into(),
        user_id: "alice".into(),
        tenant_id: tenant.into(),
        params: [("amount".to_owned(), "125.00".to_owned())].into(),
        ..Default::default()
    }
}

async fn create(
    issuer: &TestIssuer,
    request: pb::CreateActionLinkRequest,
) -> pb::CreateActionLinkResponse {
    actions(issuer)
        .await
        .create_action_link(issuer.as_admin(request))
        .await
        .expect("create link")
        .into_inner()
}

fn consume_request(token: &str, action: &str) -> pb::ConsumeActionTokenRequest {
    pb::ConsumeActionTokenRequest {
        token: token.into(),
        action: action.into(),
        resource_id: "inv-1".into(),
        ..Default::default()
    }
}

async fn consume(
    issuer: &TestIssuer,
    request: pb::ConsumeActionTokenRequest,
) -> pb::ConsumeActionTokenResponse {
    actions(issuer)
        .await
        .consume_action_token(issuer.as_admin(request))
        .await
        .expect("consume answers")
        .into_inner()
}

fn refusal(response: &pb::ConsumeActionTokenResponse) -> Refused {
    Refused::try_from(response.refusal).expect("known refusal")
}

#[tokio::test]
async fn a_link_is_consumed_once_and_replays_are_already_used() {
    let issuer = TestIssuer::start().await;
    actions(&issuer)
        .await
        .set_action_link_settings(issuer.as_admin(pb::SetActionLinkSettingsRequest {
            tenant_id: HOME.into(),
            base_url: "https://app.example.com/".into(),
            lifetimes_seconds: [("cancel_booking".to_owned(), 600)].into(),
            reason: "onboarding".into(),
        }))
        .await
        .expect("settings");
    let created = create(&issuer, link_request(HOME, "confirm_payment")).await;
    assert!(created.token.starts_with("tba_"), "{}", created.token);
    assert!(
        created
            .url
            .starts_with("https://app.example.com/actions/confirm_payment?token=tba_")
            && created.url.ends_with("&resource=inv-1"),
        "{}",
        created.url
    );
    let lifetime = created.expires_at.as_ref().unwrap().seconds - SystemClock.now().as_secs();
    assert!(
        (3_590..=3_600).contains(&lifetime),
        "confirm_payment lives 60 min: {lifetime}"
    );
    let cancel = create(&issuer, link_request(HOME, "cancel_booking")).await;
    let lifetime = cancel.expires_at.as_ref().unwrap().seconds - SystemClock.now().as_secs();
    assert!(
        (590..=600).contains(&lifetime),
        "the tenant's override: {lifetime}"
    );

    let inspected = actions(&issuer)
        .await
        .inspect_action_token(issuer.as_admin(pb::InspectActionTokenRequest {
            token: created.token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(inspected.valid);
    assert_eq!(inspected.state, "live");
    assert_eq!(
        inspected.claims.as_ref().unwrap().params["amount"],
        "125.00"
    );

    let first = consume(&issuer, consume_request(&created.token, "confirm_payment")).await;
    assert!(first.consumed, "{first:?}");
    let claims = first.claims.expect("claims");
    assert_eq!(
        (
            claims.action.as_str(),
            claims.resource_id.as_str(),
            claims.user_id.as_str()
        ),
        ("confirm_payment", "inv-1", "alice")
    );
    let replay = consume(&issuer, consume_request(&created.token, "confirm_payment")).await;
    assert!(!replay.consumed);
    assert_eq!(refusal(&replay), Refused::AlreadyUsed);
    let inspected = actions(&issuer)
        .await
        .inspect_action_token(issuer.as_admin(pb::InspectActionTokenRequest {
            token: created.token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspected.state, "used");
}

#[tokio::test]
async fn each_mismatch_has_its_own_refusal_and_consumes_nothing() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let bound = create(
        &issuer,
        pb::CreateActionLinkRequest {
            ip_allowlist: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            user_agent: "Mozilla/5.0 (X11; Linux)".into(),
            ..link_request(HOME, "approve_estimate")
        },
    )
    .await;
    let good = pb::ConsumeActionTokenRequest {
        client_ip: "10.20.30.40".into(),
        user_agent: "Mozilla/5.0 (X11; Linux)".into(),
        ..consume_request(&bound.token, "approve_estimate")
    };
    let cases = [
        (
            pb::ConsumeActionTokenRequest {
                action: "confirm_payment".into(),
                ..good.clone()
            },
            Refused::WrongAction,
        ),
        (
            pb::ConsumeActionTokenRequest {
                resource_id: "inv-2".into(),
                ..good.clone()
            },
            Refused::WrongResource,
        ),
        (
            pb::ConsumeActionTokenRequest {
                client_ip: "192.0.2.1".into(),
                ..good.clone()
            },
            Refused::IpNotAllowed,
        ),
        (
            pb::ConsumeActionTokenRequest {
                client_ip: String::new(),
                ..good.clone()
            },
            Refused::IpNotAllowed,
        ),
        (
            pb::ConsumeActionTokenRequest {
                user_agent: "curl/8.0".into(),
                ..good.clone()
            },
            Refused::UserAgentMismatch,
        ),
    ];
    for (request, expected) in cases {
        let answer = consume(&issuer, request).await;
        assert!(!answer.consumed);
        assert_eq!(refusal(&answer), expected);
    }
    assert!(
        consume(&issuer, good.clone()).await.consumed,
        "still live after the refusals"
    );

    // Expiry, on the test clock: 30 min default, 30 s leeway.
    let short = create(&issuer, link_request(HOME, "cancel_booking")).await;
    clock.advance(Duration::from_secs(31 * 60));
    let expired = consume(&issuer, consume_request(&short.token, "cancel_booking")).await;
    assert_eq!(refusal(&expired), Refused::Expired);
}

#[tokio::test]
async fn two_step_actions_need_a_confirmation_bound_to_the_link() {
    let issuer = TestIssuer::start().await;
    let two_step = |action: &str| pb::CreateActionLinkRequest {
        requires_confirmation: true,
        ..link_request(HOME, action)
    };
    let link = create(&issuer, two_step("confirm_payment")).await;
    let other = create(&issuer, two_step("confirm_payment")).await;

    let first = consume(&issuer, consume_request(&link.token, "confirm_payment")).await;
    assert!(!first.consumed && first.confirmation_required, "{first:?}");
    assert!(first.confirmation_token.starts_with("tba_"));
    let confirmation = first.confirmation_token.clone();

    // The confirmation alone, or beside another link, consumes nothing.
    let alone = consume(&issuer, consume_request(&confirmation, "confirm_payment")).await;
    assert_eq!(refusal(&alone), Refused::ConfirmationInvalid);
    let crossed = consume(
        &issuer,
        pb::ConsumeActionTokenRequest {
            confirmation_token: confirmation.clone(),
            ..consume_request(&other.token, "confirm_payment")
        },
    )
    .await;
    assert_eq!(refusal(&crossed), Refused::ConfirmationInvalid);
    // A confirmation on a one-step link is refused too.
    let one_step = create(&issuer, link_request(HOME, "confirm_payment")).await;
    let stray = consume(
        &issuer,
        pb::ConsumeActionTokenRequest {
            confirmation_token: confirmation.clone(),
            ..consume_request(&one_step.token, "confirm_payment")
        },
    )
    .await;
    assert_eq!(refusal(&stray), Refused::ConfirmationInvalid);

    let second = consume(
        &issuer,
        pb::ConsumeActionTokenRequest {
            confirmation_token: confirmation.clone(),
            ..consume_request(&link.token, "confirm_payment")
        },
    )
    .await;
    assert!(second.consumed, "{second:?}");
    let replay = consume(
        &issuer,
        pb::ConsumeActionTokenRequest {
            confirmation_token: confirmation,
            ..consume_request(&link.token, "confirm_payment")
        },
    )
    .await;
    assert_eq!(refusal(&replay), Refused::AlreadyUsed);
    // A spent link mints no new confirmation.
    let again = consume(&issuer, consume_request(&link.token, "confirm_payment")).await;
    assert!(!again.confirmation_required);
    assert_eq!(refusal(&again), Refused::AlreadyUsed);
}

#[tokio::test]
async fn forged_foreign_and_oversized_tokens_are_refused() {
    let issuer = TestIssuer::start().await;
    let link = create(&issuer, link_request(HOME, "confirm_payment")).await;

    // Forged: the payload changed (another resource), the signature kept.
    let jws = link.token.strip_prefix("tba_").unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["resource_id"] = "inv-9".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let forged = format!("tba_{}.{forged_payload}.{}", parts[0], parts[2]);
    let answer = consume(
        &issuer,
        pb::ConsumeActionTokenRequest {
            resource_id: "inv-9".into(),
            ..consume_request(&forged, "confirm_payment")
        },
    )
    .await;
    assert_eq!(refusal(&answer), Refused::BadSignature);
    // alg confusion: `none` and HS256 headers are refused before any key is used.
    for alg in ["none", "HS256"] {
        let header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"x","typ":"action+jwt"}}"#));
        let token = format!("tba_{header}.{}.{}", parts[1], parts[2]);
        let answer = consume(&issuer, consume_request(&token, "confirm_payment")).await;
        assert!(!answer.consumed);
        assert!(
            matches!(refusal(&answer), Refused::BadSignature | Refused::Malformed),
            "{alg}: {:?}",
            refusal(&answer)
        );
    }

    // An access token, with and without the action prefix.
    let access = issuer
        .tokens()
        .await
        .issue_access_token(issuer.as_admin(issue_request(HOME)))
        .await
        .unwrap()
        .into_inner()
        .token;
    for token in [access.clone(), format!("tba_{access}")] {
        let answer = consume(&issuer, consume_request(&token, "confirm_payment")).await;
        assert_eq!(refusal(&answer), Refused::WrongTokenType, "{token:.12}");
    }
    // The action token is no access token either.
    let introspected = issuer
        .tokens()
        .await
        .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
            token: jws.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !introspected.active,
        "an action token passed as an access token"
    );
    // A reset token is not an action link.
    let reset = actions(&issuer)
        .await
        .issue_password_reset(issuer.as_admin(pb::IssuePasswordResetRequest {
            tenant_id: HOME.into(),
            user_id: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let answer = consume(&issuer, consume_request(&reset.token, "reset_password")).await;
    assert_eq!(refusal(&answer), Refused::WrongTokenType);

    // Oversized: a token past 8 KiB is TOO_LARGE; past the request bound INVALID_ARGUMENT;
    // params past their bounds are refused at creation.
    let big = format!("tba_{}", "a".repeat(9 * 1024));
    assert_eq!(
        refusal(&consume(&issuer, consume_request(&big, "confirm_payment")).await),
        Refused::TooLarge
    );
    let huge = format!("tba_{}", "a".repeat(20 * 1024));
    let status = actions(&issuer)
        .await
        .consume_action_token(issuer.as_admin(consume_request(&huge, "confirm_payment")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let oversized = pb::CreateActionLinkRequest {
        params: (0..40).map(|n| (format!("k{n}"), "v".to_owned())).collect(),
        ..link_request(HOME, "confirm_payment")
    };
    let status = actions(&issuer)
        .await
        .create_action_link(issuer.as_admin(oversized))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for bad in [
        pb::CreateActionLinkRequest {
            action: "Confirm Payment".into(),
            ..link_request(HOME, "x")
        },
        pb::CreateActionLinkRequest {
            ip_allowlist: vec!["10.0.0.0/33".into()],
            ..link_request(HOME, "confirm_payment")
        },
        pb::CreateActionLinkRequest {
            expires_in_seconds: 30 * 86_400,
            ..link_request(HOME, "confirm_payment")
        },
    ] {
        let status = actions(&issuer)
            .await
            .create_action_link(issuer.as_admin(bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}

#[tokio::test]
async fn another_tenants_caller_learns_nothing_and_scopes_are_enforced() {
    let issuer = TestIssuer::start().await;
    let link = create(&issuer, link_request(HOME, "confirm_payment")).await;
    let outsider = client(&issuer, &["issue", "introspect", "admin"], &[OTHER]).await;
    let mut service = actions(&issuer).await;
    let answer = service
        .consume_action_token(with_credential(
            consume_request(&link.token, "confirm_payment"),
            &outsider,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refusal(&answer), Refused::WrongTenant);
    assert!(
        answer.claims.is_none(),
        "no claims of another tenant's token"
    );
    let status = service
        .create_action_link(with_credential(link_request(HOME, "x"), &outsider))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = service
        .issue_password_reset(with_credential(
            pb::IssuePasswordResetRequest {
                tenant_id: HOME.into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            &outsider,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = service
        .set_action_link_settings(with_credential(
            pb::SetActionLinkSettingsRequest {
                tenant_id: HOME.into(),
                base_url: "https://evil.example".into(),
                ..Default::default()
            },
            &outsider,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The link is still live for its own tenant.
    assert!(
        consume(&issuer, consume_request(&link.token, "confirm_payment"))
            .await
            .consumed
    );

    // Missing scopes.
    let introspector = client(&issuer, &["introspect"], &[HOME]).await;
    let status = service
        .create_action_link(with_credential(link_request(HOME, "x"), &introspector))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let issuer_only = client(&issuer, &["issue"], &[HOME]).await;
    let status = service
        .consume_action_token(with_credential(
            consume_request(&link.token, "confirm_payment"),
            &issuer_only,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = service
        .consume_action_token(tonic::Request::new(consume_request(&link.token, "x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Settings: a plain-http base URL and an out-of-bounds lifetime are refused.
    for bad in [
        pb::SetActionLinkSettingsRequest {
            tenant_id: HOME.into(),
            base_url: "http://app.example.com".into(),
            ..Default::default()
        },
        pb::SetActionLinkSettingsRequest {
            tenant_id: HOME.into(),
            lifetimes_seconds: [("password_reset".to_owned(), 7_200)].into(),
            ..Default::default()
        },
    ] {
        let status = service
            .set_action_link_settings(issuer.as_admin(bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}

#[tokio::test]
async fn a_completed_reset_revokes_earlier_tokens_and_later_ones_carry_the_change() {
    let issuer = TestIssuer::start().await;
    let mut service = actions(&issuer).await;
    let reset = |user: &str| pb::IssuePasswordResetRequest {
        tenant_id: HOME.into(),
        user_id: user.into(),
        ..Default::default()
    };
    let before = issuer
        .tokens()
        .await
        .issue_access_token(issuer.as_admin(issue_request(HOME)))
        .await
        .unwrap()
        .into_inner();
    let first = service
        .issue_password_reset(issuer.as_admin(reset("alice")))
        .await
        .unwrap()
        .into_inner();
    assert!(first.token.starts_with("tbr_"));
    let second = service
        .issue_password_reset(issuer.as_admin(reset("alice")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.superseded, 1);
    let complete = |token: &str| pb::CompletePasswordResetRequest {
        token: token.into(),
    };
    let old = service
        .complete_password_reset(issuer.as_admin(complete(&first.token)))
        .await
        .unwrap()
        .into_inner();
    assert!(!old.completed);
    assert_eq!(old.refusal, Refused::Invalidated as i32);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let done = service
        .complete_password_reset(issuer.as_admin(complete(&second.token)))
        .await
        .unwrap()
        .into_inner();
    assert!(done.completed, "{done:?}");
    let replay = service
        .complete_password_reset(issuer.as_admin(complete(&second.token)))
        .await
        .unwrap()
        .into_inner();
    assert!(!replay.completed);
    // Used, and also revoked with every token of the user issued before the change
    // (which one answers depends on whether the revocation reached the bundle yet).
    assert!(
        [Refused::AlreadyUsed as i32, Refused::Revoked as i32].contains(&replay.refusal),
        "{replay:?}"
    );

    // The access token issued before the change is revoked (pushed to the issuer's own
    // bundle, which introspection reads).
    let introspect = |token: String| {
        let issuer = &issuer;
        async move {
            issuer
                .tokens()
                .await
                .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest { token }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    crate::assert_eventually!(
        introspect(before.token.clone()).await.reason == "revoked",
        Duration::from_secs(5),
        "the earlier access token is revoked"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = issuer
        .tokens()
        .await
        .issue_access_token(issuer.as_admin(issue_request(HOME)))
        .await
        .unwrap()
        .into_inner();
    let after = introspect(after.token).await;
    assert!(after.active, "{after:?}");
    let claims: serde_json::Value = serde_json::from_str(&after.claims_json).unwrap();
    let changed = claims["last_password_change"].as_i64().unwrap();
    assert!(
        (SystemClock.now().as_secs() - changed).abs() < 30,
        "last_password_change {changed}"
    );
}

#[tokio::test]
async fn email_verification_is_single_use_and_bound_to_its_address() {
    let issuer = TestIssuer::start().await;
    let mut service = actions(&issuer).await;
    let issued = service
        .issue_email_verification(issuer.as_admin(pb::IssueEmailVerificationRequest {
            tenant_id: HOME.into(),
            user_id: "alice".into(),
            email: "alice@example.com".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(issued.token.starts_with("tbe_"));
    let lifetime = issued.expires_at.as_ref().unwrap().seconds - SystemClock.now().as_secs();
    assert!((86_390..=86_400).contains(&lifetime), "24 h: {lifetime}");
    let verify = |email: &str| pb::ConsumeEmailVerificationRequest {
        token: issued.token.clone(),
        email: email.into(),
    };
    let wrong = service
        .consume_email_verification(issuer.as_admin(verify("mallory@example.com")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrong.refusal, Refused::WrongResource as i32);
    let done = service
        .consume_email_verification(issuer.as_admin(verify("alice@example.com")))
        .await
        .unwrap()
        .into_inner();
    assert!(done.verified);
    assert_eq!(done.claims.unwrap().resource_id, "alice@example.com");
    let replay = service
        .consume_email_verification(issuer.as_admin(verify("")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.refusal, Refused::AlreadyUsed as i32);
}

#[tokio::test]
async fn the_scheduler_prunes_records_an_hour_past_expiry() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(
        |config| config.rotation_check = Duration::from_millis(50),
        clock.clone(),
    )
    .await;
    let used = create(&issuer, link_request(HOME, "cancel_booking")).await;
    assert!(
        consume(&issuer, consume_request(&used.token, "cancel_booking"))
            .await
            .consumed
    );
    let unused = create(&issuer, link_request(HOME, "confirm_payment")).await;
    let tenant = tessera_common::ids::TenantId::new(HOME).unwrap();
    let store = issuer.app.actions.store().clone();
    let exists = |jti: String| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move { store.one_time_token(&tenant, &jti).await.unwrap().is_some() }
    };
    // 30 min links, kept an hour past expiry: at +80 min both are still there.
    clock.advance(Duration::from_secs(80 * 60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(exists(used.jti.clone()).await && exists(unused.jti.clone()).await);
    // At +91 min the 30 min link is pruned; the 60 min one is kept until +121 min.
    clock.advance(Duration::from_secs(11 * 60));
    crate::assert_eventually!(
        !exists(used.jti.clone()).await,
        Duration::from_secs(5),
        "the used link's record is pruned"
    );
    assert!(exists(unused.jti.clone()).await);
    clock.advance(Duration::from_secs(31 * 60));
    crate::assert_eventually!(
        !exists(unused.jti.clone()).await,
        Duration::from_secs(5),
        "the unused link's record is pruned"
    );
}

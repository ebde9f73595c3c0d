//! OTP and magic-link challenges over gRPC, in-process on real sockets: codes returned to
//! the caller verify once (a replay is ALREADY_USED), brute force dies after 5 attempts,
//! lifetimes on a test clock, tenant isolation (a confined caller, another tenant's
//! challenge id), oversized and malformed input, rate limits (RESOURCE_EXHAUSTED with
//! retry-after), emergency invalidation (also through EmergencyRevoke), pruning over
//! simulated time, and the code never in the audit log. Delivery through real SMTP and
//! HTTP endpoints: `challenges/delivery.rs`.

mod alerts;
mod delivery;
pub mod support;

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::config::delivery::ChallengeSettings;
use tessera_proto::v1 as pb;
use tessera_proto::v1::ChallengeRefusal as Refused;
use tessera_proto::v1::challenge_service_client::ChallengeServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, with_credential};

pub const HOME: &str = "acme";
pub const OTHER: &str = "globex";

/// Starts an issuer whose challenge settings are `toml` (relative paths under `dir`).
pub async fn start(toml: &str, clock: Arc<dyn Clock>) -> TestIssuer {
    let settings =
        ChallengeSettings::from_toml(toml, std::path::Path::new("/")).expect("challenge settings");
    TestIssuer::start_with(
        move |config: &mut IssuerConfig| config.challenges = settings,
        clock,
    )
    .await
}

pub async fn service(issuer: &TestIssuer) -> ChallengeServiceClient<Channel> {
    ChallengeServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
pub async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
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

pub fn start_request(method: pb::ChallengeMethod, user: &str) -> pb::StartChallengeRequest {
    pb::StartChallengeRequest {
        method: method as i32,
        user_id: user.into(),
        tenant_id: HOME.into(),
        ..Default::default()
    }
}

pub async fn start_challenge(
    issuer: &TestIssuer,
    request: pb::StartChallengeRequest,
) -> pb::StartChallengeResponse {
    service(issuer)
        .await
        .start_challenge(issuer.as_admin(request))
        .await
        .expect("start challenge")
        .into_inner()
}

pub async fn verify(
    issuer: &TestIssuer,
    challenge_id: &str,
    code: &str,
) -> pb::VerifyChallengeResponse {
    service(issuer)
        .await
        .verify_challenge(issuer.as_admin(pb::VerifyChallengeRequest {
            challenge_id: challenge_id.into(),
            tenant_id: HOME.into(),
            code: code.into(),
            client_ip: String::new(),
        }))
        .await
        .expect("verify challenge")
        .into_inner()
}

fn reason(response: &pb::VerifyChallengeResponse) -> Refused {
    Refused::try_from(response.reason).expect("known reason")
}

/// Returns every audit entry's action, target and reason, oldest first.
pub async fn audit_rows(issuer: &TestIssuer) -> Vec<(String, String, String)> {
    let mut page = issuer.app.store.audit_page(None, 1000).await.unwrap();
    page.reverse();
    page.into_iter()
        .map(|record| {
            (
                record.entry.action,
                record.entry.target,
                record.entry.reason,
            )
        })
        .collect()
}

/// Returns a code of the same shape as `code` that differs from it.
fn wrong(code: &str) -> String {
    let first = if code.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &code[1..])
}

/// An OTP returned to the caller: 6 digits, 5 attempts announced; a wrong code counts
/// an attempt; the right one verifies with the user and method; a replay is
/// ALREADY_USED; the code is nowhere in the audit log.
#[tokio::test]
async fn an_otp_returned_to_the_caller_verifies_once() {
    let issuer = TestIssuer::start().await;
    let started =
        start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "alice")).await;
    assert_eq!(started.code.len(), 6);
    assert!(started.code.bytes().all(|b| b.is_ascii_digit()));
    assert!(started.challenge_id.starts_with("chl_"));
    assert_eq!(started.max_attempts, 5);
    assert!(started.provider.is_empty() && started.link.is_empty());

    let miss = verify(&issuer, &started.challenge_id, &wrong(&started.code)).await;
    assert!(!miss.verified);
    assert_eq!((reason(&miss), miss.attempts_left), (Refused::WrongCode, 4));
    let hit = verify(&issuer, &started.challenge_id, &started.code).await;
    assert!(hit.verified, "{hit:?}");
    assert_eq!(hit.user_id, "alice");
    assert_eq!(hit.method, pb::ChallengeMethod::OtpSms as i32);
    let replay = verify(&issuer, &started.challenge_id, &started.code).await;
    assert_eq!(
        (replay.verified, reason(&replay)),
        (false, Refused::AlreadyUsed)
    );

    let rows = audit_rows(&issuer).await;
    let actions: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
    assert!(actions.contains(&"challenge.start"));
    assert!(
        !actions.contains(&"challenge.verified"),
        "a verification is counted and logged, not audited"
    );
    for (action, target, why) in &rows {
        assert!(
            !target.contains(&started.code) && !why.contains(&started.code),
            "the code leaked into {action}"
        );
    }
}

/// Brute force: five wrong codes kill the challenge (the fifth answers 0 attempts left
/// and is audited as `challenge.exhausted`); the right code afterwards is
/// TOO_MANY_ATTEMPTS. 20 concurrent wrong guesses on a fresh challenge: exactly 5 counted.
#[tokio::test]
async fn brute_force_stops_after_five_attempts() {
    let issuer = TestIssuer::start().await;
    let started =
        start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpEmail, "bob")).await;
    let bad = wrong(&started.code);
    for left in (0..5).rev() {
        let miss = verify(&issuer, &started.challenge_id, &bad).await;
        assert_eq!(
            (reason(&miss), miss.attempts_left),
            (Refused::WrongCode, left)
        );
    }
    let late = verify(&issuer, &started.challenge_id, &started.code).await;
    assert_eq!(
        (late.verified, reason(&late)),
        (false, Refused::TooManyAttempts)
    );
    assert!(
        audit_rows(&issuer)
            .await
            .iter()
            .any(|(action, target, _)| action == "challenge.exhausted"
                && target == &started.challenge_id)
    );

    let fresh = start_challenge(
        &issuer,
        start_request(pb::ChallengeMethod::OtpEmail, "carol"),
    )
    .await;
    let bad = wrong(&fresh.code);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let channel = issuer.channel().await;
        let request = issuer.as_admin(pb::VerifyChallengeRequest {
            challenge_id: fresh.challenge_id.clone(),
            tenant_id: HOME.into(),
            code: bad.clone(),
            client_ip: String::new(),
        });
        tasks.push(tokio::spawn(async move {
            ChallengeServiceClient::new(channel)
                .verify_challenge(request)
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut wrong_codes = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        match reason(&answer) {
            Refused::WrongCode => wrong_codes += 1,
            Refused::TooManyAttempts => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wrong_codes, 5, "exactly five attempts counted");
}

/// A magic link: 64 lowercase hex characters, a link under the configured base URL with
/// the challenge id and token, single use; 15 minutes on a test clock (an OTP 5).
#[tokio::test]
async fn magic_links_and_otps_expire_on_time() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = start(
        "link_base_url = \"https://app.example.com/magic\"\n",
        clock.clone(),
    )
    .await;
    let link = start_challenge(
        &issuer,
        start_request(pb::ChallengeMethod::MagicLink, "dan"),
    )
    .await;
    assert_eq!(link.code.len(), 64);
    assert!(
        link.code
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(
        link.link,
        format!(
            "https://app.example.com/magic?challenge={}&token={}",
            link.challenge_id, link.code
        )
    );
    let otp = start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "dan")).await;
    let used = start_challenge(
        &issuer,
        start_request(pb::ChallengeMethod::MagicLink, "erin"),
    )
    .await;
    assert!(
        verify(&issuer, &used.challenge_id, &used.code)
            .await
            .verified
    );
    assert_eq!(
        reason(&verify(&issuer, &used.challenge_id, &used.code).await),
        Refused::AlreadyUsed
    );

    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        reason(&verify(&issuer, &otp.challenge_id, &otp.code).await),
        Refused::Expired,
        "an OTP lives 5 minutes"
    );
    clock.advance(Duration::from_secs(10 * 60 - 1));
    let still = verify(&issuer, &link.challenge_id, &wrong(&link.code)).await;
    assert_eq!(
        reason(&still),
        Refused::WrongCode,
        "a link lives 15 minutes"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        reason(&verify(&issuer, &link.challenge_id, &link.code).await),
        Refused::Expired
    );
}

/// Tenant isolation: a caller confined to globex cannot start or verify for acme; acme's
/// challenge verified under globex (by an unconfined caller) is NOT_FOUND and counts no
/// attempt; a caller without `issue` is refused.
#[tokio::test]
async fn another_tenants_caller_and_challenge_ids_are_refused() {
    let issuer = TestIssuer::start().await;
    let started =
        start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "alice")).await;
    let foreign = client(&issuer, &["issue"], &[OTHER]).await;
    let mut challenges = service(&issuer).await;
    let refused = challenges
        .start_challenge(with_credential(
            start_request(pb::ChallengeMethod::OtpSms, "mallory"),
            &foreign,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = challenges
        .verify_challenge(with_credential(
            pb::VerifyChallengeRequest {
                challenge_id: started.challenge_id.clone(),
                tenant_id: HOME.into(),
                code: started.code.clone(),
                client_ip: String::new(),
            },
            &foreign,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The foreign caller naming its own tenant finds nothing (and spends nothing).
    for _ in 0..6 {
        let answer = challenges
            .verify_challenge(with_credential(
                pb::VerifyChallengeRequest {
                    challenge_id: started.challenge_id.clone(),
                    tenant_id: OTHER.into(),
                    code: started.code.clone(),
                    client_ip: String::new(),
                },
                &foreign,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (answer.verified, reason(&answer)),
            (false, Refused::NotFound)
        );
    }
    let introspector = client(&issuer, &["introspect"], &[HOME]).await;
    let refused = challenges
        .start_challenge(with_credential(
            start_request(pb::ChallengeMethod::OtpSms, "alice"),
            &introspector,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The owner still has all five attempts.
    let hit = verify(&issuer, &started.challenge_id, &started.code).await;
    assert!(hit.verified);
    // Forged ids: unknown but well-formed, and malformed.
    for id in ["chl_AAAAAAAAAAAAAAAAAAAAAAAAAA", "not-a-challenge", ""] {
        assert_eq!(
            reason(&verify(&issuer, id, "123456").await),
            Refused::NotFound
        );
    }
}

/// Oversized and malformed input is INVALID_ARGUMENT before any work.
#[tokio::test]
async fn oversized_and_malformed_input_is_refused() {
    let issuer = TestIssuer::start().await;
    let mut challenges = service(&issuer).await;
    let mut cases = Vec::new();
    let mut long_destination = start_request(pb::ChallengeMethod::OtpEmail, "alice");
    long_destination.destination = format!("{}@example.com", "a".repeat(300));
    cases.push(long_destination);
    let mut bad_phone = start_request(pb::ChallengeMethod::OtpSms, "alice");
    bad_phone.destination = "0151 1234".into();
    cases.push(bad_phone);
    cases.push(start_request(pb::ChallengeMethod::OtpSms, &"u".repeat(129)));
    cases.push(start_request(pb::ChallengeMethod::OtpSms, "bad\nuser"));
    cases.push(start_request(pb::ChallengeMethod::Unspecified, "alice"));
    let mut bad_ip = start_request(pb::ChallengeMethod::OtpSms, "alice");
    bad_ip.client_ip = "300.1.1.1".into();
    cases.push(bad_ip);
    let mut no_provider = start_request(pb::ChallengeMethod::OtpSms, "alice");
    no_provider.delivery = pb::ChallengeDelivery::Provider as i32;
    no_provider.destination = "+4915112345678".into();
    for request in cases {
        let status = challenges
            .start_challenge(issuer.as_admin(request.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    let status = challenges
        .start_challenge(issuer.as_admin(no_provider))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "no provider configured"
    );
    for (id, code) in [
        ("chl_x".to_owned(), "1".repeat(129)),
        ("c".repeat(65), "123456".to_owned()),
    ] {
        let status = challenges
            .verify_challenge(issuer.as_admin(pb::VerifyChallengeRequest {
                challenge_id: id,
                tenant_id: HOME.into(),
                code,
                client_ip: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}

/// Rate limits: starts per user and per IP, verifications per IP, each over its limit
/// RESOURCE_EXHAUSTED with `retry-after` and `tessera-refusal: RATE_LIMITED`; another
/// user is not affected; the window's end lifts the limit (test clock).
#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_retry_after() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = start(
        "[limits.challenge_start]\nper_user = 3\nper_ip = 5\nwindow_seconds = 60\n\
         [limits.challenge_verify]\nper_user = 100\nper_ip = 4\nwindow_seconds = 60\n",
        clock.clone(),
    )
    .await;
    let mut challenges = service(&issuer).await;
    for _ in 0..3 {
        start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "alice")).await;
    }
    let limited = challenges
        .start_challenge(issuer.as_admin(start_request(pb::ChallengeMethod::OtpSms, "alice")))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let retry_after: u64 = limited
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.metadata().get("tessera-refusal").unwrap(),
        "RATE_LIMITED"
    );
    start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "bob")).await;

    // Per IP: 5 starts from one address across users, the sixth refused.
    for n in 0..5 {
        let mut request = start_request(pb::ChallengeMethod::OtpSms, &format!("ip-user-{n}"));
        request.client_ip = "203.0.113.7".into();
        start_challenge(&issuer, request).await;
    }
    let mut request = start_request(pb::ChallengeMethod::OtpSms, "ip-user-9");
    request.client_ip = "203.0.113.7".into();
    let limited = challenges
        .start_challenge(issuer.as_admin(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);

    // Verifications per IP, including probes of unknown ids.
    let started =
        start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "carol")).await;
    let probe = |id: &str| {
        issuer.as_admin(pb::VerifyChallengeRequest {
            challenge_id: id.into(),
            tenant_id: HOME.into(),
            code: "000000".into(),
            client_ip: "198.51.100.1".into(),
        })
    };
    for _ in 0..4 {
        challenges
            .verify_challenge(probe("chl_AAAAAAAAAAAAAAAAAAAAAAAAAA"))
            .await
            .unwrap();
    }
    let limited = challenges
        .verify_challenge(probe(&started.challenge_id))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);

    // The next window lifts every limit.
    clock.advance(Duration::from_secs(60));
    challenges
        .start_challenge(issuer.as_admin(request))
        .await
        .unwrap();
    challenges
        .verify_challenge(probe(&started.challenge_id))
        .await
        .unwrap();
}

/// EmergencyInvalidateChallenges kills the tenant's live challenges and unused action
/// links (counted), leaves other tenants alone, needs an unconfined caller for all
/// tenants; EmergencyRevoke of a tenant invalidates its challenges too. Both audited.
#[tokio::test]
async fn emergencies_invalidate_challenges_and_one_time_tokens() {
    let issuer = TestIssuer::start().await;
    let home = start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "alice")).await;
    let mut other_request = start_request(pb::ChallengeMethod::OtpSms, "zed");
    other_request.tenant_id = OTHER.into();
    let other = start_challenge(&issuer, other_request).await;
    pb::action_link_service_client::ActionLinkServiceClient::new(issuer.channel().await)
        .create_action_link(issuer.as_admin(pb::CreateActionLinkRequest {
            action: "confirm_payment".into(),
            resource_id: "inv-1".into(),
            user_id: "alice".into(),
            tenant_id: HOME.into(),
            ..Default::default()
        }))
        .await
        .expect("create action link");

    let mut challenges = service(&issuer).await;
    let confined_admin = client(&issuer, &["admin"], &[HOME]).await;
    let refused = challenges
        .emergency_invalidate_challenges(with_credential(
            pb::EmergencyInvalidateChallengesRequest {
                tenant_id: String::new(),
                reason: "incident 7".into(),
            },
            &confined_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let done = challenges
        .emergency_invalidate_challenges(with_credential(
            pb::EmergencyInvalidateChallengesRequest {
                tenant_id: HOME.into(),
                reason: "incident 7".into(),
            },
            &confined_admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.n_challenges, done.n_one_time_tokens), (1, 1));
    assert_eq!(
        reason(&verify(&issuer, &home.challenge_id, &home.code).await),
        Refused::Invalidated
    );
    assert!(
        audit_rows(&issuer)
            .await
            .iter()
            .any(
                |(action, target, _)| action == "challenge.emergency_invalidate" && target == HOME
            )
    );

    // EmergencyRevoke of globex invalidates globex's challenge.
    issuer
        .tokens()
        .await
        .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::TenantId(OTHER.into())),
            incident_id: "INC-42".into(),
            reason: "tenant compromised".into(),
        }))
        .await
        .expect("emergency revoke");
    let answer = service(&issuer)
        .await
        .verify_challenge(issuer.as_admin(pb::VerifyChallengeRequest {
            challenge_id: other.challenge_id.clone(),
            tenant_id: OTHER.into(),
            code: other.code.clone(),
            client_ip: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&answer), Refused::Invalidated);
}

/// Pruning over simulated time: a day after expiry a challenge (used or not) is gone;
/// a younger one stays.
#[tokio::test]
async fn used_and_expired_challenges_are_pruned_after_a_day() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = start("", clock.clone()).await;
    let used = start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "a")).await;
    assert!(
        verify(&issuer, &used.challenge_id, &used.code)
            .await
            .verified
    );
    let unused = start_challenge(&issuer, start_request(pb::ChallengeMethod::OtpSms, "b")).await;
    clock.advance(Duration::from_secs(20 * 3600));
    let young = start_challenge(&issuer, start_request(pb::ChallengeMethod::MagicLink, "c")).await;
    assert_eq!(
        issuer.app.challenges.prune().await.unwrap(),
        0,
        "nothing a day past expiry yet"
    );
    clock.advance(Duration::from_secs(4 * 3600 + 5 * 60 + 1));
    assert_eq!(issuer.app.challenges.prune().await.unwrap(), 2);
    for gone in [&used, &unused] {
        assert_eq!(
            reason(&verify(&issuer, &gone.challenge_id, &gone.code).await),
            Refused::NotFound
        );
    }
    assert_eq!(
        reason(&verify(&issuer, &young.challenge_id, &young.code).await),
        Refused::Expired,
        "expired but kept until a day past expiry"
    );
}

/// Password-reset and email-verification requests are rate-limited per user and per IP
/// by the same limiter (defaults 5 per user per hour): the sixth reset for one user is
/// RESOURCE_EXHAUSTED with `retry-after`, another user is unaffected; verification
/// requests from one IP over its limit are refused too.
#[tokio::test]
async fn reset_and_verification_requests_are_rate_limited() {
    let issuer = start(
        "[limits.email_verification]\nper_user = 10\nper_ip = 2\nwindow_seconds = 3600\n",
        Arc::new(SystemClock),
    )
    .await;
    let mut actions =
        pb::action_link_service_client::ActionLinkServiceClient::new(issuer.channel().await);
    let reset = |user: &str| pb::IssuePasswordResetRequest {
        tenant_id: HOME.into(),
        user_id: user.into(),
        ..Default::default()
    };
    for _ in 0..5 {
        actions
            .issue_password_reset(issuer.as_admin(reset("alice")))
            .await
            .expect("a reset within the limit");
    }
    let limited = actions
        .issue_password_reset(issuer.as_admin(reset("alice")))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(limited.metadata().get("retry-after").is_some());
    actions
        .issue_password_reset(issuer.as_admin(reset("bob")))
        .await
        .expect("another user");

    let verification = |user: &str| pb::IssueEmailVerificationRequest {
        tenant_id: HOME.into(),
        user_id: user.into(),
        email: format!("{user}@example.com"),
        client_ip: "192.0.2.9".into(),
        ..Default::default()
    };
    for user in ["u1", "u2"] {
        actions
            .issue_email_verification(issuer.as_admin(verification(user)))
            .await
            .expect("within the IP limit");
    }
    let limited = actions
        .issue_email_verification(issuer.as_admin(verification("u3")))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
}

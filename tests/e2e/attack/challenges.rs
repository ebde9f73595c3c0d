//! Attack cases: ChallengeService against the real binary (and its CLI). Brute force of
//! an OTP stops after 5 attempts (the right code is refused afterwards), a caller confined
//! to `acme` reaching for `globex`'s challenges, `globex`'s challenge id verified under
//! `acme`, forged ids, oversized destination, code, id and user, a verified code and a
//! magic link replayed, a provider switch by a tenant admin — each gets its typed
//! refusal; and no code ever appears in the issuer's log or its audit log.

use tessera_proto::v1 as pb;
use tessera_proto::v1::ChallengeRefusal as Refused;
use tessera_proto::v1::admin_service_client::AdminServiceClient;
use tessera_proto::v1::challenge_service_client::ChallengeServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

/// The attacker's tenant.
const HOME: &str = "acme";
/// The victim tenant.
const VICTIM: &str = "globex";

fn start(tenant: &str, user: &str, method: pb::ChallengeMethod) -> pb::StartChallengeRequest {
    pb::StartChallengeRequest {
        method: method as i32,
        user_id: user.into(),
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

fn verify(tenant: &str, challenge_id: &str, code: &str) -> pb::VerifyChallengeRequest {
    pb::VerifyChallengeRequest {
        challenge_id: challenge_id.into(),
        tenant_id: tenant.into(),
        code: code.into(),
        client_ip: String::new(),
    }
}

async fn answer(
    challenges: &mut ChallengeServiceClient<Channel>,
    request: tonic::Request<pb::VerifyChallengeRequest>,
) -> (bool, Refused, u32) {
    let answer = challenges
        .verify_challenge(request)
        .await
        .expect("a verification answer")
        .into_inner();
    (
        answer.verified,
        Refused::try_from(answer.reason).expect("known reason"),
        answer.attempts_left,
    )
}

fn other_code(code: &str) -> String {
    let first = if code.starts_with('9') { '8' } else { '9' };
    format!("{first}{}", &code[1..])
}

#[test]
fn brute_force_cross_tenant_oversized_and_replayed_challenges_are_refused() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::start(root_dir.path());
    let root = issuer.admin_token();
    let mut codes = Vec::new();
    runtime().block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let mut challenges = ChallengeServiceClient::new(channel.clone());
        let attacker = AdminServiceClient::new(channel)
            .create_client(with_bearer(
                pb::CreateClientRequest {
                    name: "acme-app".into(),
                    scopes: vec!["issue".into(), "admin".into()],
                    tenants: vec![HOME.into()],
                },
                &root,
            ))
            .await
            .expect("create confined client")
            .into_inner()
            .credential;

        // Brute force: five guesses, then even the right code is refused.
        let target = challenges
            .start_challenge(with_bearer(
                start(HOME, "alice", pb::ChallengeMethod::OtpSms),
                &attacker,
            ))
            .await
            .expect("start")
            .into_inner();
        codes.push(target.code.clone());
        let guess = other_code(&target.code);
        for left in (0..5).rev() {
            assert_eq!(
                answer(
                    &mut challenges,
                    with_bearer(verify(HOME, &target.challenge_id, &guess), &attacker)
                )
                .await,
                (false, Refused::WrongCode, left)
            );
        }
        assert_eq!(
            answer(
                &mut challenges,
                with_bearer(verify(HOME, &target.challenge_id, &target.code), &attacker)
            )
            .await,
            (false, Refused::TooManyAttempts, 0),
            "the sixth try, even right, is refused"
        );

        // The victim's challenge.
        let victims = challenges
            .start_challenge(with_bearer(
                start(VICTIM, "victor", pb::ChallengeMethod::OtpEmail),
                &root,
            ))
            .await
            .expect("start globex")
            .into_inner();
        codes.push(victims.code.clone());
        let refused = challenges
            .verify_challenge(with_bearer(
                verify(VICTIM, &victims.challenge_id, &victims.code),
                &attacker,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "verify for globex");
        let refused = challenges
            .start_challenge(with_bearer(
                start(VICTIM, "victor", pb::ChallengeMethod::OtpSms),
                &attacker,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "start for globex");
        let refused = challenges
            .emergency_invalidate_challenges(with_bearer(
                pb::EmergencyInvalidateChallengesRequest {
                    tenant_id: VICTIM.into(),
                    reason: "sabotage".into(),
                },
                &attacker,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "invalidate globex");
        let refused = challenges
            .set_provider_enabled(with_bearer(
                pb::SetProviderEnabledRequest {
                    name: "mail".into(),
                    enabled: false,
                    reason: "sabotage".into(),
                },
                &attacker,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "switch a shared provider"
        );
        // Globex's id under the attacker's own tenant, with the right code: NOT_FOUND,
        // and it costs the victim no attempt.
        for _ in 0..6 {
            assert_eq!(
                answer(
                    &mut challenges,
                    with_bearer(
                        verify(HOME, &victims.challenge_id, &victims.code),
                        &attacker
                    )
                )
                .await,
                (false, Refused::NotFound, 0)
            );
        }
        // Forged ids.
        for forged in [
            "chl_00000000000000000000000000",
            "chl_../../etc/passwd",
            "' OR 1=1 --",
        ] {
            assert_eq!(
                answer(
                    &mut challenges,
                    with_bearer(verify(HOME, forged, "123456"), &attacker)
                )
                .await
                .1,
                Refused::NotFound,
                "{forged}"
            );
        }
        // Oversized input.
        let mut huge_destination = start(HOME, "alice", pb::ChallengeMethod::OtpEmail);
        huge_destination.destination = format!("{}@example.com", "a".repeat(10_000));
        let mut huge_user = start(HOME, "alice", pb::ChallengeMethod::OtpEmail);
        huge_user.user_id = "u".repeat(10_000);
        for request in [huge_destination, huge_user] {
            let status = challenges
                .start_challenge(with_bearer(request, &attacker))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
        }
        for (id, code) in [
            (victims.challenge_id.clone(), "1".repeat(10_000)),
            ("c".repeat(10_000), "123456".to_owned()),
        ] {
            let status = challenges
                .verify_challenge(with_bearer(verify(HOME, &id, &code), &attacker))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
        }
        // The victim still has every attempt.
        assert_eq!(
            answer(
                &mut challenges,
                with_bearer(verify(VICTIM, &victims.challenge_id, &victims.code), &root)
            )
            .await,
            (true, Refused::Unspecified, 0)
        );
        // Replays of a verified code and of a used magic link.
        assert_eq!(
            answer(
                &mut challenges,
                with_bearer(verify(VICTIM, &victims.challenge_id, &victims.code), &root)
            )
            .await
            .1,
            Refused::AlreadyUsed
        );
        let link = challenges
            .start_challenge(with_bearer(
                start(HOME, "alice", pb::ChallengeMethod::MagicLink),
                &attacker,
            ))
            .await
            .expect("start magic link")
            .into_inner();
        codes.push(link.code.clone());
        for expected in [Refused::Unspecified, Refused::AlreadyUsed] {
            assert_eq!(
                answer(
                    &mut challenges,
                    with_bearer(verify(HOME, &link.challenge_id, &link.code), &attacker)
                )
                .await
                .1,
                expected
            );
        }
    });

    // The CLI: start prints the code, verify succeeds once, the replay exits non-zero.
    let started = issuer.cli_json(&[
        "challenges",
        "start",
        "--tenant",
        HOME,
        "--user",
        "carol",
        "--method",
        "otp-email",
    ]);
    let id = started["challenge_id"].as_str().expect("id").to_owned();
    let code = started["code"].as_str().expect("code").to_owned();
    codes.push(code.clone());
    issuer
        .cli(&["challenges", "verify", "--tenant", HOME, &id, &code])
        .assert_success("challenges verify");
    let replay = issuer.cli(&["challenges", "verify", "--tenant", HOME, &id, &code]);
    assert!(!replay.success(), "a replay must fail: {}", replay.stdout);
    assert!(replay.stdout.contains("ALREADY_USED"), "{}", replay.stdout);

    // No code in the log or the audit log (the magic-link token is 64 hex characters;
    // 6-digit codes are looked for in audit targets and reasons only, where numbers
    // appear nowhere else).
    let log = issuer.log();
    assert!(
        !log.contains(&codes[2]),
        "the magic-link token is in the issuer log"
    );
    let audit = issuer.cli_json(&["audit", "list", "--limit", "200"]);
    let text = audit.to_string();
    assert!(text.contains("challenge.start") && text.contains("challenge.exhausted"));
    for entry in audit["events"].as_array().expect("audit entries") {
        for field in ["target", "reason"] {
            let value = entry[field].as_str().unwrap_or_default();
            for code in &codes {
                assert!(
                    !value.contains(code.as_str()),
                    "a code in the audit {field}: {value}"
                );
            }
        }
    }
}

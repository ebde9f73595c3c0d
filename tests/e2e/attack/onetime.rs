//! Attack cases: single-use tokens (issue 11) against the real issuer. A forged
//! signature, an access token (or a reset token) presented as an action link and an action
//! token presented as an access token, `alg` confusion (`none`, HS256 keyed with the public
//! key's bytes), a replay, oversized tokens and parameters, a caller confined to another
//! tenant, an address outside the allowlist, another user agent, a confirmation token
//! replayed or bound to another link — each refused with its typed answer, and the
//! genuine link still consumable once afterwards.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tessera_proto::v1 as pb;
use tessera_proto::v1::ActionRefusal as Refused;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::standing::harness::credential_file;
use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::{Issuer, read_trimmed};

const HOME: &str = "acme";
const VICTIM: &str = "globex";

fn link(tenant: &str, action: &str) -> pb::CreateActionLinkRequest {
    pb::CreateActionLinkRequest {
        action: action.into(),
        resource_id: "inv-1".into(),
        user_id: "alice".into(),
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

fn consume(token: &str, action: &str) -> pb::ConsumeActionTokenRequest {
    pb::ConsumeActionTokenRequest {
        token: token.into(),
        action: action.into(),
        resource_id: "inv-1".into(),
        ..Default::default()
    }
}

/// Replaces the header of `jws` (no prefix) with `header`, keeping payload and signature.
fn with_header(jws: &str, header: &str) -> String {
    let (_, rest) = jws.split_once('.').unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header))
}

#[test]
fn attack_single_use_tokens_forged_foreign_replayed_oversized_and_across_tenants() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let admin = issuer.admin_token();
    let outsider = read_trimmed(&credential_file(
        &issuer,
        root.path(),
        "globex-all",
        &["admin", "issue", "introspect"],
        &[VICTIM],
    ));
    let rt = runtime();
    let channel: Channel = rt.block_on(connect(issuer.grpc_addr));
    let client = || ActionLinkServiceClient::new(channel.clone());
    let create = |request: pb::CreateActionLinkRequest| {
        rt.block_on(client().create_action_link(with_bearer(request, &admin)))
            .expect("create")
            .into_inner()
    };
    let answer_as = |request: pb::ConsumeActionTokenRequest, credential: &str| {
        rt.block_on(client().consume_action_token(with_bearer(request, credential)))
            .expect("consume answers")
            .into_inner()
    };
    let answer = |request: pb::ConsumeActionTokenRequest| answer_as(request, &admin);
    let refused = |response: &pb::ConsumeActionTokenResponse| {
        assert!(!response.consumed, "{response:?}");
        Refused::try_from(response.refusal).unwrap()
    };

    let target = create(pb::CreateActionLinkRequest {
        ip_allowlist: vec!["203.0.113.0/24".into()],
        user_agent: "Mozilla/5.0 (victim)".into(),
        ..link(HOME, "confirm_payment")
    });
    let good = pb::ConsumeActionTokenRequest {
        client_ip: "203.0.113.9".into(),
        user_agent: "Mozilla/5.0 (victim)".into(),
        ..consume(&target.token, "confirm_payment")
    };
    let jws = target.token.strip_prefix("tba_").unwrap().to_owned();
    let parts: Vec<String> = jws.split('.').map(str::to_owned).collect();

    // Forged: the amount raised, the signature kept.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["params"] = serde_json::json!({ "amount": "1000000" });
    let forged = format!(
        "tba_{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(
        refused(&answer(pb::ConsumeActionTokenRequest {
            token: forged,
            ..good.clone()
        })),
        Refused::BadSignature
    );
    // alg confusion: `none` with no signature, and HS256 with a MAC keyed by anything.
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    for alg in ["none", "HS256"] {
        let token = with_header(
            &jws,
            &format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"action+jwt"}}"#),
        );
        let stripped = if alg == "none" {
            format!("tba_{}.", token.rsplit_once('.').unwrap().0)
        } else {
            format!("tba_{token}")
        };
        let refusal = refused(&answer(pb::ConsumeActionTokenRequest {
            token: stripped,
            ..good.clone()
        }));
        assert!(
            matches!(refusal, Refused::BadSignature | Refused::Malformed),
            "{alg}: {refusal:?}"
        );
    }
    // The header retyped as an access token: the signature no longer matches.
    let retyped = with_header(
        &jws,
        &format!(
            r#"{{"alg":"{}","kid":"{kid}","typ":"at+jwt"}}"#,
            header["alg"].as_str().unwrap()
        ),
    );
    assert_eq!(
        refused(&answer(pb::ConsumeActionTokenRequest {
            token: format!("tba_{retyped}"),
            ..good.clone()
        })),
        Refused::BadSignature
    );
    // Another key set's token: an access token, bare or prefixed; a reset token.
    let access =
        issuer.cli_json(&["token", "issue", "--subject", "alice", "--tenant", HOME])["token"]
            .as_str()
            .unwrap()
            .to_owned();
    for token in [access.clone(), format!("tba_{access}")] {
        assert_eq!(
            refused(&answer(pb::ConsumeActionTokenRequest {
                token,
                ..good.clone()
            })),
            Refused::WrongTokenType
        );
    }
    let reset = rt
        .block_on(client().issue_password_reset(with_bearer(
            pb::IssuePasswordResetRequest {
                tenant_id: HOME.into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            &admin,
        )))
        .unwrap()
        .into_inner();
    assert_eq!(
        refused(&answer(consume(&reset.token, "reset_password"))),
        Refused::WrongTokenType
    );
    // And the action token is no access token.
    let introspected = issuer.cli(&["token", "introspect", &jws, "--json"]);
    assert!(
        introspected.stdout.contains("wrong_token_type") || !introspected.success(),
        "{}",
        introspected.stdout
    );

    // Binding: another address, no address, another user agent.
    for (request, expected) in [
        (
            pb::ConsumeActionTokenRequest {
                client_ip: "198.51.100.1".into(),
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
                user_agent: "Mozilla/5.0 (attacker)".into(),
                ..good.clone()
            },
            Refused::UserAgentMismatch,
        ),
    ] {
        assert_eq!(refused(&answer(request)), expected);
    }

    // Another tenant's caller: WRONG_TENANT, no claims; cannot mint in acme either.
    let foreign = answer_as(good.clone(), &outsider);
    assert_eq!(refused(&foreign), Refused::WrongTenant);
    assert!(foreign.claims.is_none());
    let status = rt
        .block_on(client().create_action_link(with_bearer(link(HOME, "x"), &outsider)))
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Oversized: a 9 KiB token, a 20 KiB request field, 40 params, a 600-byte value.
    assert_eq!(
        refused(&answer(consume(
            &format!("tba_{}", "A".repeat(9 * 1024)),
            "confirm_payment"
        ))),
        Refused::TooLarge
    );
    let status = rt
        .block_on(client().consume_action_token(with_bearer(
            consume(&"A".repeat(20 * 1024), "confirm_payment"),
            &admin,
        )))
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for params in [
        (0..40)
            .map(|n| (format!("p{n}"), "v".to_owned()))
            .collect::<std::collections::HashMap<_, _>>(),
        [("memo".to_owned(), "x".repeat(600))].into(),
        [("_tessera_confirms".to_owned(), "j".to_owned())].into(),
    ] {
        let status = rt
            .block_on(client().create_action_link(with_bearer(
                pb::CreateActionLinkRequest {
                    params,
                    ..link(HOME, "confirm_payment")
                },
                &admin,
            )))
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    // The genuine link, after all that: consumed once, then a replay.
    assert!(answer(good.clone()).consumed);
    assert_eq!(refused(&answer(good)), Refused::AlreadyUsed);

    // Two-step: a confirmation bound to another link, and a replayed confirmation.
    let two_step = |_: ()| {
        create(pb::CreateActionLinkRequest {
            requires_confirmation: true,
            ..link(HOME, "approve_estimate")
        })
    };
    let (first, second) = (two_step(()), two_step(()));
    let confirmation = answer(consume(&first.token, "approve_estimate")).confirmation_token;
    assert!(confirmation.starts_with("tba_"));
    let crossed = answer(pb::ConsumeActionTokenRequest {
        confirmation_token: confirmation.clone(),
        ..consume(&second.token, "approve_estimate")
    });
    assert_eq!(refused(&crossed), Refused::ConfirmationInvalid);
    let completed = answer(pb::ConsumeActionTokenRequest {
        confirmation_token: confirmation.clone(),
        ..consume(&first.token, "approve_estimate")
    });
    assert!(completed.consumed);
    let replayed = answer(pb::ConsumeActionTokenRequest {
        confirmation_token: confirmation,
        ..consume(&first.token, "approve_estimate")
    });
    assert_eq!(refused(&replayed), Refused::AlreadyUsed);
}

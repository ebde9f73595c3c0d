//! Action links at the real binaries: 100 concurrent ConsumeActionToken calls of one
//! link, 50 through each of two issuer replicas sharing one PostgreSQL database, give
//! exactly one `consumed` and 99 `ALREADY_USED` (the store's conditional write, not
//! luck: every consumer is released at once by a barrier); and at a `tessera-sidecar`,
//! a forged or mismatched token is refused without reaching the issuer while a genuine
//! one is consumed there once.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tessera_proto::v1 as pb;
use tessera_proto::v1::ActionRefusal as Refused;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;

use crate::standing::harness::Standing;
use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;
use crate::support::scratch_database::ScratchDatabase;
use crate::support::test_database::database_url;

/// Concurrent consumers of the one link.
const CONSUMERS: usize = 100;

#[test]
fn postgres_one_link_consumed_by_100_callers_on_two_replicas_succeeds_once() {
    let Some(server_url) = database_url() else {
        return;
    };
    let database = ScratchDatabase::create(&server_url, "tessera_e2e_onetime");
    let root = tempfile::tempdir().unwrap();
    let kek_file = root.path().join("shared.kek");
    let mut kek = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut kek).unwrap();
    std::fs::write(&kek_file, STANDARD.encode(kek)).unwrap();
    let replica = |name: &str, credential: Option<&std::path::Path>| {
        let mut builder = Issuer::builder(root.path(), name).args([
            "--database-url",
            database.url.as_str(),
            "--kek-file",
            kek_file.to_str().unwrap(),
        ]);
        if let Some(path) = credential {
            builder = builder.credential_file(path);
        }
        builder.start()
    };
    let a = replica("replica-a", None);
    let admin_file = a.data_dir.join("admin.token");
    let b = replica("replica-b", Some(&admin_file));
    let admin = a.admin_token();

    let rt = runtime();
    let (consumed, already_used, other, token) = rt.block_on(async {
        let channels = [connect(a.grpc_addr).await, connect(b.grpc_addr).await];
        let created = ActionLinkServiceClient::new(channels[0].clone())
            .create_action_link(with_bearer(
                pb::CreateActionLinkRequest {
                    action: "confirm_payment".into(),
                    resource_id: "inv-42".into(),
                    user_id: "alice".into(),
                    tenant_id: "acme".into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("create on A")
            .into_inner();
        let barrier = Arc::new(tokio::sync::Barrier::new(CONSUMERS));
        let mut tasks = Vec::new();
        for n in 0..CONSUMERS {
            let mut client = ActionLinkServiceClient::new(channels[n % 2].clone());
            let (barrier, admin, token) = (barrier.clone(), admin.clone(), created.token.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .consume_action_token(with_bearer(
                        pb::ConsumeActionTokenRequest {
                            token,
                            action: "confirm_payment".into(),
                            resource_id: "inv-42".into(),
                            ..Default::default()
                        },
                        &admin,
                    ))
                    .await
                    .map(tonic::Response::into_inner)
            }));
        }
        let (mut consumed, mut already_used, mut other) = (0, 0, Vec::new());
        for task in tasks {
            match task.await.expect("task") {
                Ok(answer) if answer.consumed => consumed += 1,
                Ok(answer) if answer.refusal == Refused::AlreadyUsed as i32 => already_used += 1,
                result => other.push(format!("{result:?}")),
            }
        }
        (consumed, already_used, other, created.token)
    });
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!(
        (consumed, already_used),
        (1, CONSUMERS - 1),
        "exactly one consumer of {CONSUMERS} on two replicas wins"
    );
    // Either replica reads the record as used.
    for replica in [&a, &b] {
        let state = rt.block_on(async {
            ActionLinkServiceClient::new(connect(replica.grpc_addr).await)
                .inspect_action_token(with_bearer(
                    pb::InspectActionTokenRequest {
                        token: token.clone(),
                    },
                    &admin,
                ))
                .await
                .expect("inspect")
                .into_inner()
                .state
        });
        assert_eq!(state, "used");
    }
}

/// The issuer's count of ConsumeActionToken outcomes named `outcome`.
fn issuer_attempts(stack: &Standing, outcome: &str) -> f64 {
    stack.issuer_metric(&format!(
        "tessera_auth_validation_attempt_total{{outcome=\"{outcome}\"}}"
    ))
}

#[test]
fn a_sidecar_refuses_forged_foreign_and_mismatched_action_tokens_locally_and_forwards_the_rest() {
    let stack = Standing::start(&[]);
    let sidecar = stack.sidecar("actions").start();
    let validator = stack.validator(&sidecar);
    let rt = &stack.runtime;
    let admin = stack.admin.clone();
    let mut links = ActionLinkServiceClient::new(stack.channel.clone());
    let created = rt
        .block_on(links.create_action_link(with_bearer(
            pb::CreateActionLinkRequest {
                action: "approve_estimate".into(),
                resource_id: "est-7".into(),
                user_id: "alice".into(),
                tenant_id: "acme".into(),
                ..Default::default()
            },
            &admin,
        )))
        .expect("create")
        .into_inner();
    let request = |token: &str, action: &str, resource: &str| pb::ConsumeActionTokenRequest {
        token: token.into(),
        action: action.into(),
        resource_id: resource.into(),
        ..Default::default()
    };
    let consume_at_sidecar = |request: pb::ConsumeActionTokenRequest| {
        rt.block_on(validator.clone().consume_action_token(request))
            .expect("the sidecar answers")
            .into_inner()
    };

    // Forged: the payload names another resource, the signature is the original's.
    let jws = created.token.strip_prefix("tba_").unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["resource_id"] = "est-8".into();
    let forged = format!(
        "tba_{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let access = rt
        .block_on(
            stack
                .tokens()
                .issue_access_token(with_bearer(crate_issue_request(), &admin)),
        )
        .expect("access token")
        .into_inner()
        .token;
    let cases = [
        (
            request(&forged, "approve_estimate", "est-8"),
            Refused::BadSignature,
        ),
        (
            request(&format!("tba_{access}"), "approve_estimate", "est-7"),
            Refused::WrongTokenType,
        ),
        (
            request(&access, "approve_estimate", "est-7"),
            Refused::WrongTokenType,
        ),
        (
            request(&created.token, "confirm_payment", "est-7"),
            Refused::WrongAction,
        ),
        (
            request(&created.token, "approve_estimate", "est-9"),
            Refused::WrongResource,
        ),
        (
            request("tba_not.a.token", "approve_estimate", "est-7"),
            Refused::Malformed,
        ),
    ];
    for (request, expected) in cases {
        let answer = consume_at_sidecar(request);
        assert!(!answer.consumed);
        assert_eq!(
            Refused::try_from(answer.refusal).unwrap(),
            expected,
            "{answer:?}"
        );
    }
    // None of them reached the issuer.
    for outcome in [
        "bad_signature",
        "wrong_token_type",
        "wrong_action",
        "wrong_resource",
        "malformed",
    ] {
        assert_eq!(
            issuer_attempts(&stack, outcome),
            0.0,
            "{outcome} at the issuer"
        );
    }
    let oversized = rt
        .block_on(validator.clone().consume_action_token(request(
            &"a".repeat(20 * 1024),
            "approve_estimate",
            "est-7",
        )))
        .unwrap_err();
    assert_eq!(oversized.code(), tonic::Code::InvalidArgument);

    // The genuine token goes to the issuer, which consumes it once.
    let first = consume_at_sidecar(request(&created.token, "approve_estimate", "est-7"));
    assert!(first.consumed, "{first:?}");
    let replay = consume_at_sidecar(request(&created.token, "approve_estimate", "est-7"));
    assert_eq!(
        Refused::try_from(replay.refusal).unwrap(),
        Refused::AlreadyUsed
    );
    assert_eq!(issuer_attempts(&stack, "success"), 1.0);
    assert_eq!(issuer_attempts(&stack, "already_used"), 1.0);
}

fn crate_issue_request() -> pb::IssueAccessTokenRequest {
    pb::IssueAccessTokenRequest {
        subject: "alice".into(),
        tenant_id: "acme".into(),
        role: "staff".into(),
        ..Default::default()
    }
}

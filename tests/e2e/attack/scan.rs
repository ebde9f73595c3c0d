//! Attack cases: `scan --revoke` and `AdminService/RevokeLeakedCredentials` against the
//! real issuer. An admin confined to `acme` who found `globex`'s credentials cannot revoke
//! them (each is answered `unknown`, as a credential that does not exist, and keeps
//! working); knowing a client's id (it is shown in `clients list`, in logs and in scan
//! reports) is not enough to switch the client off — a forged credential with that id and
//! a valid checksum is `unknown`; an oversized request is refused before any lookup.

use tessera_common::credential::{Credential, random_base62};
use tessera_proto::v1 as pb;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

#[test]
fn attack_scan_revoke_confined_admin_and_forged_credentials_revoke_nothing() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let acme_admin = issuer.cli_json(&[
        "clients",
        "create",
        "--name",
        "acme-admin",
        "--scope",
        "admin",
        "--tenant",
        "acme",
    ]);
    let acme_admin_file = root.path().join("acme-admin.token");
    std::fs::write(&acme_admin_file, acme_admin["credential"].as_str().unwrap()).unwrap();
    let victim = issuer.cli_json(&[
        "clients",
        "create",
        "--name",
        "globex-ci",
        "--scope",
        "issue",
        "--tenant",
        "globex",
    ]);
    let victim_credential = victim["credential"].as_str().unwrap().to_owned();
    let victim_session = issuer.cli_json(&[
        "session",
        "create",
        "--subject",
        "bob",
        "--tenant",
        "globex",
    ]);
    let victim_refresh = victim_session["refresh_token"].as_str().unwrap().to_owned();
    // The victim's id with another secret: well-formed, valid checksum, not the credential.
    let parsed = Credential::parse(&victim_credential).unwrap();
    let forged = Credential::from_parts(parsed.kind, parsed.id, random_base62(43)).expose();

    let tree = root.path().join("found");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(
        tree.join("loot.txt"),
        format!("{victim_credential}\n{victim_refresh}\n{forged}\n"),
    )
    .unwrap();
    let output = issuer.cli_as(
        &acme_admin_file,
        &["scan", "--revoke", tree.to_str().unwrap()],
    );
    assert_eq!(
        output.code(),
        Some(1),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    let outcomes: Vec<&str> = output
        .stdout
        .lines()
        .map(|line| line.rsplit("revocation=").next().unwrap())
        .collect();
    assert_eq!(outcomes, ["unknown"; 3], "{}", output.stdout);

    // The unconfined admin presenting only the forgery revokes nothing either.
    std::fs::write(tree.join("loot.txt"), format!("{forged}\n")).unwrap();
    let output = issuer.cli(&["scan", "--revoke", tree.to_str().unwrap()]);
    assert!(
        output.stdout.trim_end().ends_with("revocation=unknown"),
        "{}",
        output.stdout
    );

    // Everything of globex still works.
    let victim_file = root.path().join("victim.token");
    std::fs::write(&victim_file, &victim_credential).unwrap();
    issuer
        .cli_as(
            &victim_file,
            &["token", "issue", "--subject", "bob", "--tenant", "globex"],
        )
        .assert_success("the victim's credential still authenticates");
    issuer
        .cli(&["session", "refresh", &victim_refresh])
        .assert_success("the victim's refresh token still refreshes");

    // Oversized: refused as a whole, typed, before anything is looked up.
    let admin_token = issuer.admin_token();
    let grpc_addr = issuer.grpc_addr;
    let refused = runtime().block_on(async {
        let mut admin = pb::admin_service_client::AdminServiceClient::new(connect(grpc_addr).await);
        let too_many = pb::RevokeLeakedCredentialsRequest {
            credentials: vec![victim_credential.clone(); 129],
            reason: String::new(),
        };
        let too_long = pb::RevokeLeakedCredentialsRequest {
            credentials: vec![format!("{victim_credential}{}", "x".repeat(4096))],
            reason: String::new(),
        };
        [
            admin
                .revoke_leaked_credentials(with_bearer(too_many, &admin_token))
                .await
                .unwrap_err(),
            admin
                .revoke_leaked_credentials(with_bearer(too_long, &admin_token))
                .await
                .unwrap_err(),
        ]
    });
    for status in refused {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    issuer
        .cli_as(
            &victim_file,
            &["token", "issue", "--subject", "bob", "--tenant", "globex"],
        )
        .assert_success("nothing refused changed anything");
}

//! Attack cases: sessions. Forged refresh tokens (bad checksum, unknown id, the right id
//! with a guessed secret, the right id and secret under another credential prefix) are
//! `UNAUTHENTICATED` and change nothing; a rotated refresh token presented again after the
//! reuse-grace window is `PERMISSION_DENIED` (reuse) and kills the whole family; oversized
//! refresh tokens are refused before any lookup (`INVALID_ARGUMENT` past the credential
//! limit, `OUT_OF_RANGE` past the request limit).

use std::time::Duration;

use tessera_common::credential::{
    CHECKSUM_CHARS, Credential, CredentialKind, ID_CHARS, MAX_CREDENTIAL_BYTES, SECRET_CHARS,
    random_base62,
};
use tessera_proto::v1 as pb;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

/// The issuer's reuse-grace window in these tests.
const GRACE: Duration = Duration::from_secs(1);

fn start_issuer(root: &std::path::Path) -> Issuer {
    Issuer::builder(root, "issuer")
        .args([
            "--refresh-reuse-grace-seconds",
            &GRACE.as_secs().to_string(),
        ])
        .start()
}

async fn login(tokens: &mut TokenServiceClient<Channel>, admin: &str) -> pb::SessionTokens {
    tokens
        .create_session(with_bearer(
            pb::CreateSessionRequest {
                subject: "alice".into(),
                tenant_id: "acme".into(),
                role: "staff".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("login")
        .into_inner()
}

async fn refresh(
    tokens: &mut TokenServiceClient<Channel>,
    admin: &str,
    refresh_token: &str,
) -> Result<pb::SessionTokens, Status> {
    tokens
        .refresh_session(with_bearer(
            pb::RefreshSessionRequest {
                refresh_token: refresh_token.to_owned(),
            },
            admin,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn introspect(
    tokens: &mut TokenServiceClient<Channel>,
    admin: &str,
    token: &str,
) -> pb::IntrospectTokenResponse {
    tokens
        .introspect_token(with_bearer(
            pb::IntrospectTokenRequest {
                token: token.to_owned(),
            },
            admin,
        ))
        .await
        .expect("introspect")
        .into_inner()
}

/// Forgeries of `genuine`, by name.
fn forgeries(genuine: &str) -> Vec<(&'static str, String)> {
    let parsed = Credential::parse(genuine).expect("the issuer's refresh token parses");
    let secret = parsed.secret.expose().to_owned();
    let mut bad_checksum = genuine.to_owned();
    let last = bad_checksum.pop().expect("non-empty");
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    vec![
        ("bad checksum", bad_checksum),
        (
            "unknown id (valid checksum)",
            Credential::from_parts(
                CredentialKind::Refresh,
                random_base62(ID_CHARS),
                secret.clone(),
            )
            .expose(),
        ),
        (
            "right id, wrong secret",
            Credential::from_parts(
                CredentialKind::Refresh,
                parsed.id.clone(),
                random_base62(SECRET_CHARS),
            )
            .expose(),
        ),
        (
            "right id and secret under the API-key prefix",
            Credential::from_parts(CredentialKind::ApiKey, parsed.id.clone(), secret.clone())
                .expose(),
        ),
        (
            "right id and secret under the service-token prefix",
            Credential::from_parts(CredentialKind::Service, parsed.id.clone(), secret).expose(),
        ),
        ("an empty token", String::new()),
    ]
}

#[test]
fn forged_refresh_tokens_are_unauthenticated_and_leave_the_session_alive() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer(root_dir.path());
    let admin = issuer.admin_token();
    runtime().block_on(async {
        let mut tokens = TokenServiceClient::new(connect(issuer.grpc_addr).await);
        let session = login(&mut tokens, &admin).await;
        for (case, forged) in forgeries(&session.refresh_token) {
            assert_ne!(forged, session.refresh_token, "{case}");
            let status = refresh(&mut tokens, &admin, &forged).await.expect_err(case);
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            assert!(
                status.message().starts_with("refresh_token:"),
                "{case}: the refusal names the grant, not the caller: {status:?}"
            );
            let introspection = introspect(&mut tokens, &admin, &forged).await;
            assert!(!introspection.active, "{case}: {introspection:?}");
        }
        // Guessing neither rotates nor revokes the genuine token.
        assert!(
            introspect(&mut tokens, &admin, &session.access_token)
                .await
                .active
        );
        let rotated = refresh(&mut tokens, &admin, &session.refresh_token)
            .await
            .expect("the genuine token still refreshes");
        assert_eq!(rotated.family_id, session.family_id);
    });
}

#[test]
fn a_rotated_refresh_token_reused_after_the_grace_window_kills_the_family() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer(root_dir.path());
    let admin = issuer.admin_token();
    runtime().block_on(async {
        let mut tokens = TokenServiceClient::new(connect(issuer.grpc_addr).await);
        let first = login(&mut tokens, &admin).await;
        let second = refresh(&mut tokens, &admin, &first.refresh_token)
            .await
            .expect("rotation");
        // Within the grace window a repeat is a concurrent tab: the same successor.
        let repeat = refresh(&mut tokens, &admin, &first.refresh_token)
            .await
            .expect("repeat within the grace window");
        assert_eq!(repeat.refresh_token, second.refresh_token);

        tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
        let status = refresh(&mut tokens, &admin, &first.refresh_token)
            .await
            .expect_err("reuse after the grace window");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("reuse"), "{status:?}");

        // The whole family is dead: the current refresh token and every access token.
        let status = refresh(&mut tokens, &admin, &second.refresh_token)
            .await
            .expect_err("the successor died with its family");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        for (case, token) in [
            ("login access token", &first.access_token),
            ("refreshed access token", &second.access_token),
        ] {
            let introspection = introspect(&mut tokens, &admin, token).await;
            assert!(
                !introspection.active && introspection.reason == "revoked",
                "{case}: {introspection:?}"
            );
        }
        let introspection = introspect(&mut tokens, &admin, &second.refresh_token).await;
        assert!(
            !introspection.active && introspection.reason == "revoked",
            "{introspection:?}"
        );
    });
}

#[test]
fn oversize_refresh_tokens_are_refused_before_any_lookup() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer(root_dir.path());
    let admin = issuer.admin_token();
    runtime().block_on(async {
        let mut tokens = TokenServiceClient::new(connect(issuer.grpc_addr).await);
        let session = login(&mut tokens, &admin).await;
        // A genuine token padded past the credential limit: refused on length alone.
        let padded = format!(
            "{}{}",
            session.refresh_token,
            "A".repeat(MAX_CREDENTIAL_BYTES + 1 - session.refresh_token.len())
        );
        assert!(session.refresh_token.len() >= ID_CHARS + SECRET_CHARS + CHECKSUM_CHARS);
        let status = refresh(&mut tokens, &admin, &padded)
            .await
            .expect_err("over the credential limit");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("refresh_token"), "{status:?}");
        // Past the 64 KiB request limit the message is not even decoded.
        let huge = "A".repeat(70 * 1024);
        let status = refresh(&mut tokens, &admin, &huge)
            .await
            .expect_err("over the request limit");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        refresh(&mut tokens, &admin, &session.refresh_token)
            .await
            .expect("the genuine token is unaffected");
    });
}

//! Attacks on `SecretService` at the real issuer (issue 12): reads without a scope, with
//! a scope for another name, with a prefix scope that does not cover the name, and as
//! `admin` (which never reads values); a tenant-confined admin writing the platform's
//! secrets; oversized values; bad names (path tricks, `..`, uppercase, 129 characters);
//! rotator settings smuggling credentials; forged credentials. And a value read and
//! rotated never appears in the issuer's log or its audit log.

use std::path::Path;

use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::{Issuer, read_trimmed};

fn random(name: &str) -> pb::RegisterSecretRequest {
    pb::RegisterSecretRequest {
        name: name.into(),
        kind: pb::RotatorKind::Random.into(),
        ..Default::default()
    }
}

fn bootstrap(root: &Path) -> String {
    [
        ("exact", "scope=secrets:read:app/db"),
        ("prefix", "scope=secrets:read:app/*"),
        ("confined", "scope=admin,tenant=acme"),
    ]
    .iter()
    .map(|(name, scopes)| {
        format!(
            "name={name},{scopes},file={}",
            root.join(format!("{name}.token")).display()
        )
    })
    .collect::<Vec<_>>()
    .join(";")
}

#[test]
fn secret_service_refuses_every_attacker_and_never_leaks_a_value() {
    let root = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::builder(root.path(), "issuer")
        .args(["--bootstrap-clients".to_owned(), bootstrap(root.path())])
        .start();
    let admin = issuer.admin_token();
    let token = |name: &str| read_trimmed(&root.path().join(format!("{name}.token")));
    let (exact, prefix, confined) = (token("exact"), token("prefix"), token("confined"));
    runtime().block_on(async {
        let mut service: SecretServiceClient<Channel> =
            SecretServiceClient::new(connect(issuer.grpc_addr).await);
        for name in ["app/db", "app/cache", "billing/db"] {
            service
                .register_secret(with_bearer(random(name), &admin))
                .await
                .expect("register");
        }
        let read = |name: &str| pb::ReadSecretRequest {
            name: name.into(),
            include_previous: true,
        };
        // Who may not read what.
        for (credential, name, code) in [
            ("", "app/db", Code::Unauthenticated),
            (
                "tbc_forged_AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "app/db",
                Code::Unauthenticated,
            ),
            (exact.as_str(), "app/cache", Code::PermissionDenied),
            (exact.as_str(), "billing/db", Code::PermissionDenied),
            (prefix.as_str(), "billing/db", Code::PermissionDenied),
            (prefix.as_str(), "app", Code::PermissionDenied),
            (admin.as_str(), "app/db", Code::PermissionDenied),
            (confined.as_str(), "app/db", Code::PermissionDenied),
            (prefix.as_str(), "app/../billing/db", Code::InvalidArgument),
        ] {
            let status = service
                .read_secret(with_bearer(read(name), credential))
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                code,
                "{name} as {credential:.12}: {status:?}"
            );
        }
        // A tenant-confined admin writes and lists nothing: secrets are the platform's.
        let status = service
            .register_secret(with_bearer(random("acme/db"), &confined))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = service
            .rotate_secret(with_bearer(
                pb::RotateSecretRequest {
                    name: "app/db".into(),
                    emergency: true,
                    reason: String::new(),
                },
                &confined,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = service
            .list_secrets(with_bearer(pb::ListSecretsRequest::default(), &confined))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = service
            .put_secret_version(with_bearer(
                pb::PutSecretVersionRequest {
                    name: "app/db".into(),
                    value: b"attacker".to_vec(),
                    reason: String::new(),
                },
                &prefix,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        // Bad names.
        for name in [
            "",
            "../etc/passwd",
            "app/../billing/db",
            "app//db",
            "app/./db",
            "App/db",
            "/app/db",
            "app/db/",
            "app db",
            &"a".repeat(129),
        ] {
            let status = service
                .register_secret(with_bearer(random(name), &admin))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        }
        // Oversized values: past 64 KiB refused by the service, far past it by gRPC.
        let mut external = random("vendor/key");
        external.kind = pb::RotatorKind::External.into();
        external.initial_value = vec![b'k'; 64 * 1024 + 1];
        let status = service
            .register_secret(with_bearer(external.clone(), &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        external.initial_value = vec![b'k'; 1024 * 1024];
        let status = service
            .register_secret(with_bearer(external, &admin))
            .await
            .unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
            ),
            "{status:?}"
        );
        // Rotator settings never carry credentials, and a random secret takes no value.
        let mut smuggled = random("db/smuggled");
        smuggled.kind = pb::RotatorKind::Postgres.into();
        smuggled.rotator = Some(pb::RotatorConfig {
            config: Some(pb::rotator_config::Config::Postgres(pb::PostgresRotator {
                url: "postgres://evil:pw@127.0.0.1:5432/test".into(),
                role_a: "app_a".into(),
                role_b: "app_b".into(),
            })),
        });
        let status = service
            .register_secret(with_bearer(smuggled, &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let mut redis_default = random("cache/default");
        redis_default.kind = pb::RotatorKind::Redis.into();
        redis_default.rotator = Some(pb::RotatorConfig {
            config: Some(pb::rotator_config::Config::Redis(pb::RedisRotator {
                url: "redis://127.0.0.1:6379".into(),
                username: "default".into(),
            })),
        });
        let status = service
            .register_secret(with_bearer(redis_default, &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let mut with_value = random("app/valued");
        with_value.initial_value = b"chosen-by-attacker".to_vec();
        let status = service
            .register_secret(with_bearer(with_value, &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);

        // The values read never reach the issuer's log or the audit log.
        let first = service
            .read_secret(with_bearer(read("app/db"), &exact))
            .await
            .expect("read")
            .into_inner();
        service
            .rotate_secret(with_bearer(
                pb::RotateSecretRequest {
                    name: "app/db".into(),
                    emergency: false,
                    reason: String::new(),
                },
                &admin,
            ))
            .await
            .expect("rotate");
        let second = service
            .read_secret(with_bearer(read("app/db"), &exact))
            .await
            .expect("read")
            .into_inner();
        let audit = issuer.cli(&["audit", "list", "--limit", "500", "--json"]);
        audit.assert_success("audit list");
        assert!(audit.stdout.contains("secret.read"));
        let log = issuer.log();
        for value in [first.current.unwrap().value, second.current.unwrap().value] {
            let value = String::from_utf8(value).unwrap();
            assert!(!log.contains(&value), "a value is in the issuer's log");
            assert!(
                !audit.stdout.contains(&value),
                "a value is in the audit log"
            );
        }
    });
}

//! The secrets engine (issue 12) through the real gRPC server: scopes (a covering
//! `secrets:read:` scope reads, `admin` never does), staged rotations and their records,
//! rollback, the scheduler's 80 %/90 % rule run twice at once, and the PostgreSQL and
//! Redis rotators against the servers on this machine, with a client querying through
//! every rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_issuer::secrets::ScheduledAction;
use tessera_issuer::secrets::rotators::RotatorCredentials;
use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, with_credential};

const DAY: Duration = Duration::from_secs(86_400);
const REDIS: &str = "127.0.0.1:6379";

async fn secrets(issuer: &TestIssuer) -> SecretServiceClient<Channel> {
    SecretServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("c{}", uuid::Uuid::new_v4().simple()),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

fn random_secret(name: &str) -> pb::RegisterSecretRequest {
    pb::RegisterSecretRequest {
        name: name.to_owned(),
        kind: pb::RotatorKind::Random.into(),
        rotator: Some(pb::RotatorConfig {
            config: Some(pb::rotator_config::Config::Random(pb::RandomRotator {
                length: 32,
                alphabet: "hex".into(),
            })),
        }),
        tier: 1,
        owner: "platform".into(),
        ..Default::default()
    }
}

async fn read(
    issuer: &TestIssuer,
    credential: &str,
    name: &str,
    include_previous: bool,
) -> Result<pb::ReadSecretResponse, tonic::Status> {
    secrets(issuer)
        .await
        .read_secret(with_credential(
            pb::ReadSecretRequest {
                name: name.into(),
                include_previous,
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn rotate(issuer: &TestIssuer, name: &str, emergency: bool) -> pb::RotateSecretResponse {
    secrets(issuer)
        .await
        .rotate_secret(issuer.as_admin(pb::RotateSecretRequest {
            name: name.into(),
            emergency,
            reason: "test".into(),
        }))
        .await
        .expect("rotate")
        .into_inner()
}

fn stages(info: &pb::SecretInfo) -> Vec<(u64, pb::SecretStage)> {
    info.versions
        .iter()
        .map(|version| (version.version, version.stage()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_reads_need_a_covering_scope_and_admin_reads_none() {
    let issuer = TestIssuer::start().await;
    let mut service = secrets(&issuer).await;
    for name in ["app/db", "app/cache", "billing/db"] {
        service
            .register_secret(issuer.as_admin(random_secret(name)))
            .await
            .expect("register");
    }
    let exact = client(&issuer, &["secrets:read:app/db"], &[]).await;
    let prefix = client(&issuer, &["secrets:read:app/*"], &[]).await;
    let value = read(&issuer, &exact, "app/db", false).await.expect("read");
    let current = value.current.expect("current");
    assert_eq!(current.version, 1);
    assert_eq!(current.value.len(), 32);
    assert!(current.value.iter().all(u8::is_ascii_hexdigit));
    assert!(read(&issuer, &prefix, "app/cache", false).await.is_ok());
    for (credential, name) in [
        (&exact, "app/cache"),
        (&exact, "billing/db"),
        (&prefix, "billing/db"),
        (&issuer.admin_token, "app/db"),
    ] {
        let refused = read(&issuer, credential, name, false).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{name}");
    }
    // A reader cannot write, list or rotate.
    let refused = service
        .list_secrets(with_credential(pb::ListSecretsRequest::default(), &prefix))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A tenant-confined admin writes nothing: secrets are the platform's.
    let confined = client(&issuer, &["admin"], &["acme"]).await;
    let refused = service
        .register_secret(with_credential(random_secret("acme/x"), &confined))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = service
        .rotate_secret(with_credential(
            pb::RotateSecretRequest {
                name: "app/db".into(),
                ..Default::default()
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // The rotation reaches the trust-bundle stream as versions, never as a value.
    let rotated = rotate(&issuer, "app/db", false).await;
    assert_eq!(rotated.steps, ["create", "set", "test", "finish"]);
    let both = read(&issuer, &exact, "app/db", true).await.expect("read");
    assert_eq!(both.current.as_ref().unwrap().version, 2);
    assert_eq!(both.previous.as_ref().unwrap().version, 1);
    assert_eq!(both.previous.as_ref().unwrap().value, current.value);
    let events = issuer
        .app
        .store
        .events_after(Revision(0), 1000)
        .await
        .expect("events");
    let rotations: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.change {
            BundleChange::SecretRotated { change } if change.name == "app/db" => {
                Some((change.current_version, change.previous_version))
            }
            _ => None,
        })
        .collect();
    assert_eq!(rotations, [(1, None), (2, Some(1))]);
    let text = format!("{events:?}");
    let secret = String::from_utf8(current.value.clone()).unwrap();
    assert!(!text.contains(&secret));
    // Audit rows name the secret and versions, never a value.
    let audit = issuer
        .app
        .store
        .audit_page(None, 1000)
        .await
        .expect("audit");
    let rows = format!("{audit:?}");
    assert!(rows.contains("secret.read") && rows.contains("secret.rotate"));
    for value in [&current.value, &both.current.unwrap().value] {
        assert!(!rows.contains(std::str::from_utf8(value).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_stages_rollback_put_and_history_are_recorded() {
    let issuer = TestIssuer::start().await;
    let mut service = secrets(&issuer).await;
    service
        .register_secret(issuer.as_admin(random_secret("svc/token")))
        .await
        .expect("register");
    rotate(&issuer, "svc/token", false).await;
    let third = rotate(&issuer, "svc/token", false).await;
    assert_eq!(third.version, 3);
    assert_eq!(
        stages(third.secret.as_ref().unwrap()),
        [
            (3, pb::SecretStage::Current),
            (2, pb::SecretStage::Previous),
            (1, pb::SecretStage::Retired)
        ]
    );
    // Rollback: previous current again, the replaced one previous.
    let rolled = service
        .rollback_secret(issuer.as_admin(pb::RollbackSecretRequest {
            name: "svc/token".into(),
            reason: "bad deploy".into(),
        }))
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!(
        stages(&rolled)[..2],
        [
            (3, pb::SecretStage::Previous),
            (2, pb::SecretStage::Current)
        ]
    );
    // An emergency rotation leaves no previous.
    let emergency = rotate(&issuer, "svc/token", true).await;
    assert_eq!(
        emergency.steps,
        ["create", "set", "test", "finish", "revoke_previous"]
    );
    assert!(
        !stages(emergency.secret.as_ref().unwrap())
            .iter()
            .any(|(_, stage)| *stage == pb::SecretStage::Previous)
    );
    // External secrets are put, not rotated; put refuses oversized values.
    let mut external = random_secret("vendor/api-key");
    external.kind = pb::RotatorKind::External.into();
    external.rotator = None;
    external.initial_value = b"vendor-key-1".to_vec();
    service
        .register_secret(issuer.as_admin(external))
        .await
        .expect("register external");
    let refused = service
        .rotate_secret(issuer.as_admin(pb::RotateSecretRequest {
            name: "vendor/api-key".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let put = service
        .put_secret_version(issuer.as_admin(pb::PutSecretVersionRequest {
            name: "vendor/api-key".into(),
            value: b"vendor-key-2".to_vec(),
            reason: "rotated at vendor".into(),
        }))
        .await
        .expect("put")
        .into_inner();
    assert_eq!(stages(&put)[0], (2, pb::SecretStage::Current));
    for (value, code) in [
        (vec![b'x'; 64 * 1024 + 1], Code::InvalidArgument),
        (Vec::new(), Code::InvalidArgument),
    ] {
        let refused = service
            .put_secret_version(issuer.as_admin(pb::PutSecretVersionRequest {
                name: "vendor/api-key".into(),
                value,
                reason: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code);
    }
    let history = service
        .secret_history(issuer.as_admin(pb::SecretHistoryRequest {
            name: "svc/token".into(),
            limit: 0,
        }))
        .await
        .expect("history")
        .into_inner()
        .entries;
    let steps: Vec<&str> = history.iter().map(|entry| entry.step.as_str()).collect();
    assert_eq!(
        steps[..6],
        [
            "revoke_previous",
            "finish",
            "test",
            "set",
            "create",
            "rollback"
        ]
    );
    assert_eq!(steps.last(), Some(&"register"));
    assert!(
        history
            .iter()
            .all(|entry| !entry.request_id.is_empty() && !entry.actor.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_warns_at_80_percent_and_rotates_once_at_90() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone() as Arc<dyn Clock>).await;
    let mut request = random_secret("cron/secret");
    request.cadence_days = 10;
    secrets(&issuer)
        .await
        .register_secret(issuer.as_admin(request))
        .await
        .expect("register");
    let engine = issuer.app.secrets.clone();
    clock.advance(DAY * 85 / 10);
    let actions = engine.run_scheduled().await;
    assert!(
        matches!(actions.as_slice(), [ScheduledAction::Warned { .. }]),
        "{actions:?}"
    );
    assert!(engine.run_scheduled().await.is_empty(), "warned once");
    clock.advance(DAY * 7 / 10);
    // Two passes at once (two replicas' schedulers): exactly one rotation.
    let (first, second) = tokio::join!(engine.run_scheduled(), engine.run_scheduled());
    let rotated = first
        .iter()
        .chain(second.iter())
        .filter(|action| matches!(action, ScheduledAction::Rotated { .. }))
        .count();
    assert_eq!(rotated, 1, "{first:?} {second:?}");
    let view = engine.get("cron/secret").await.expect("get");
    assert_eq!(view.versions.len(), 2);
    assert!(!view.warning && !view.overdue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_backs_off_an_hour_after_a_rolled_back_rotation() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    // No Redis admin connection configured: every `set` fails and is rolled back.
    let issuer = TestIssuer::start_with(|_| {}, clock.clone() as Arc<dyn Clock>).await;
    let mut request = random_secret("cron/broken");
    request.kind = pb::RotatorKind::Redis.into();
    request.rotator = Some(pb::RotatorConfig {
        config: Some(pb::rotator_config::Config::Redis(pb::RedisRotator {
            url: format!("redis://{REDIS}"),
            username: "tessera_nobody".into(),
        })),
    });
    let refused = secrets(&issuer)
        .await
        .register_secret(issuer.as_admin(request))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let engine = issuer.app.secrets.clone();
    let failed = |actions: &[ScheduledAction]| {
        actions
            .iter()
            .filter(|action| matches!(action, ScheduledAction::Failed { .. }))
            .count()
    };
    clock.advance(DAY * 85);
    assert_eq!(failed(&engine.run_scheduled().await), 1);
    assert_eq!(failed(&engine.run_scheduled().await), 0, "retried at once");
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(failed(&engine.run_scheduled().await), 1);
    let view = engine.get("cron/broken").await.unwrap();
    assert_eq!(view.versions.len(), 3);
    assert!(
        view.versions
            .iter()
            .all(|version| version.stage == tessera_issuer::store::SecretStage::Retired)
    );
}

// === PostgreSQL: alternating roles ===

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Logs in with a `role:password` value.
async fn pg_login(value: &[u8]) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let text = std::str::from_utf8(value).unwrap();
    let (role, password) = text.split_once(':').unwrap();
    let mut config: tokio_postgres::Config = "postgres://127.0.0.1:5432/test".parse().unwrap();
    config.user(role).password(password);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotator_alternates_roles_without_a_failed_query() {
    let Some(url) = crate::test_database::database_url() else {
        return;
    };
    let admin = pg_connect(&url).await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let (role_a, role_b, table) = (
        format!("tessera_rot_{id}_a"),
        format!("tessera_rot_{id}_b"),
        format!("tessera_rot_{id}_t"),
    );
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role_a} LOGIN; CREATE ROLE {role_b} LOGIN; \
             CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (1); \
             GRANT SELECT ON {table} TO {role_a}, {role_b};"
        ))
        .await
        .expect("roles");
    let issuer = TestIssuer::start_with(
        |config| {
            config.secrets_rotators = RotatorCredentials {
                postgres_admin_url: Some(url.clone()),
                redis_admin_url: None,
            }
        },
        Arc::new(SystemClock),
    )
    .await;
    let reader = client(&issuer, &["secrets:read:db/*"], &[]).await;
    let mut register = random_secret("db/app");
    register.kind = pb::RotatorKind::Postgres.into();
    register.rotator = Some(pb::RotatorConfig {
        config: Some(pb::rotator_config::Config::Postgres(pb::PostgresRotator {
            url: "postgres://127.0.0.1:5432/test".into(),
            role_a: role_a.clone(),
            role_b: role_b.clone(),
        })),
    });
    let result = async {
        secrets(&issuer)
            .await
            .register_secret(issuer.as_admin(register))
            .await
            .expect("register");
        let first = read(&issuer, &reader, "db/app", false)
            .await
            .unwrap()
            .current
            .unwrap();
        assert!(first.value.starts_with(format!("{role_a}:").as_bytes()));
        // A client on the first credential queries through two rotations.
        let pinned = pg_login(&first.value).await.expect("login v1");
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let querying = tokio::spawn({
            let (stop, ok, failed, table) =
                (stop.clone(), ok.clone(), failed.clone(), table.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match pinned
                        .query_one(&format!("SELECT n FROM {table}"), &[])
                        .await
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        for expected_role in [&role_b, &role_a] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rotated = rotate(&issuer, "db/app", false).await;
            let now = read(&issuer, &reader, "db/app", true).await.unwrap();
            let current = now.current.unwrap();
            assert!(
                current
                    .value
                    .starts_with(format!("{expected_role}:").as_bytes())
            );
            assert_eq!(current.version, rotated.version);
            // Fresh logins with current and previous both work during the overlap.
            let fresh = pg_login(&current.value).await.expect("login with current");
            fresh
                .query_one(&format!("SELECT n FROM {table}"), &[])
                .await
                .expect("query as the new role");
            pg_login(&now.previous.unwrap().value)
                .await
                .expect("previous still logs in");
        }
        stop.store(true, Ordering::Relaxed);
        querying.await.unwrap();
        assert_eq!(failed.load(Ordering::Relaxed), 0, "failed queries");
        assert!(ok.load(Ordering::Relaxed) > 10);

        // Emergency: the previous role loses LOGIN at once.
        let before = read(&issuer, &reader, "db/app", false)
            .await
            .unwrap()
            .current
            .unwrap();
        let emergency = rotate(&issuer, "db/app", true).await;
        assert!(emergency.steps.contains(&"revoke_previous".to_owned()));
        assert!(
            pg_login(&before.value).await.is_err(),
            "revoked role still logs in"
        );
        let now = read(&issuer, &reader, "db/app", true).await.unwrap();
        assert!(now.previous.is_none());
        pg_login(&now.current.unwrap().value)
            .await
            .expect("current logs in");

        // A failed step rolls back: the idle role is gone, so `set` fails; the pending
        // version is discarded and current is untouched.
        let current_before = read(&issuer, &reader, "db/app", false)
            .await
            .unwrap()
            .current
            .unwrap();
        let idle = if current_before.value.starts_with(role_a.as_bytes()) {
            &role_b
        } else {
            &role_a
        };
        admin
            .batch_execute(&format!("ALTER ROLE {idle} RENAME TO {idle}_gone"))
            .await
            .unwrap();
        let refused = secrets(&issuer)
            .await
            .rotate_secret(issuer.as_admin(pb::RotateSecretRequest {
                name: "db/app".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        admin
            .batch_execute(&format!("ALTER ROLE {idle}_gone RENAME TO {idle}"))
            .await
            .unwrap();
        let after = read(&issuer, &reader, "db/app", false)
            .await
            .unwrap()
            .current
            .unwrap();
        assert_eq!(after.version, current_before.version);
        assert_eq!(after.value, current_before.value);
        let view = issuer.app.secrets.get("db/app").await.unwrap();
        assert!(view.rotation_step.is_none());
        assert!(
            view.versions
                .iter()
                .any(|version| version.version == current_before.version + 1
                    && version.stage == tessera_issuer::store::SecretStage::Retired)
        );
        let history = issuer.app.secrets.history("db/app", 3).await.unwrap();
        // The discard may fail too (its role is the one renamed away): it is recorded.
        let steps: Vec<(&str, &str)> = history
            .iter()
            .map(|entry| (entry.step.as_str(), entry.outcome.as_str()))
            .collect();
        assert_eq!(steps[0].0, "discard");
        assert_eq!(steps[1], ("set", "failed"));
    }
    .await;
    drop(issuer);
    let _ = admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename IN ('{role_a}', '{role_b}'); \
             DROP ROLE IF EXISTS {role_a}; DROP ROLE IF EXISTS {role_b};"
        ))
        .await;
    result
}

// === Redis: ACL passwords with overlap ===

/// A minimal RESP2 client for the test (simple, error, integer and bulk replies).
struct Resp(BufReader<TcpStream>);

impl Resp {
    async fn connect() -> Resp {
        Resp(BufReader::new(
            TcpStream::connect(REDIS)
                .await
                .expect("Redis at 127.0.0.1:6379"),
        ))
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<String, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.0.get_mut().write_all(&out).await.unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).await.unwrap();
        let line = line.trim_end().to_owned();
        match line.split_at(1) {
            ("+" | ":", rest) => Ok(rest.to_owned()),
            ("-", rest) => Err(rest.to_owned()),
            ("$", len) => {
                let len: i64 = len.parse().unwrap();
                if len < 0 {
                    return Ok(String::new());
                }
                let mut body = vec![0; len as usize + 2];
                self.0.read_exact(&mut body).await.unwrap();
                body.truncate(len as usize);
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn auth(user: &str, password: &[u8]) -> Result<Resp, String> {
        let mut connection = Resp::connect().await;
        connection
            .call(&[b"AUTH", user.as_bytes(), password])
            .await?;
        Ok(connection)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rotator_keeps_two_passwords_without_a_failed_command() {
    let user = format!(
        "tessera_rot_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let mut admin = Resp::connect().await;
    admin
        .call(&[
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
            b"on",
            b"resetpass",
            b"~*",
            b"+@all",
        ])
        .await
        .expect("create the ACL user");
    let issuer = TestIssuer::start_with(
        |config| {
            config.secrets_rotators = RotatorCredentials {
                postgres_admin_url: None,
                redis_admin_url: Some(format!("redis://{REDIS}")),
            }
        },
        Arc::new(SystemClock),
    )
    .await;
    let reader = client(&issuer, &["secrets:read:cache/redis"], &[]).await;
    let mut register = random_secret("cache/redis");
    register.kind = pb::RotatorKind::Redis.into();
    register.rotator = Some(pb::RotatorConfig {
        config: Some(pb::rotator_config::Config::Redis(pb::RedisRotator {
            url: format!("redis://{REDIS}"),
            username: user.clone(),
        })),
    });
    secrets(&issuer)
        .await
        .register_secret(issuer.as_admin(register))
        .await
        .expect("register");
    let v1 = read(&issuer, &reader, "cache/redis", false)
        .await
        .unwrap()
        .current
        .unwrap();
    let mut pinned = Resp::auth(&user, &v1.value).await.expect("AUTH with v1");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let key = format!("{user}:k");
    let commanding = tokio::spawn({
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                match pinned.call(&[b"SET", key.as_bytes(), b"1"]).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = rotate(&issuer, "cache/redis", false).await;
    // Overlap: v1 (previous) and v2 (current) both authenticate fresh connections.
    let now = read(&issuer, &reader, "cache/redis", true).await.unwrap();
    assert_eq!(now.current.as_ref().unwrap().version, v2.version);
    Resp::auth(&user, &now.current.as_ref().unwrap().value)
        .await
        .expect("AUTH v2");
    Resp::auth(&user, &v1.value)
        .await
        .expect("AUTH v1 during overlap");
    let v2_value = now.current.unwrap().value;
    tokio::time::sleep(Duration::from_millis(100)).await;
    rotate(&issuer, "cache/redis", false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    commanding.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed commands");
    assert!(ok.load(Ordering::Relaxed) > 10);
    // v1 left `previous`: its password is gone; v2 (now previous) still works.
    assert!(
        Resp::auth(&user, &v1.value).await.is_err(),
        "v1 still accepted"
    );
    Resp::auth(&user, &v2_value)
        .await
        .expect("AUTH v2 as previous");
    // Emergency: the replaced password goes at once.
    let v3 = read(&issuer, &reader, "cache/redis", false)
        .await
        .unwrap()
        .current
        .unwrap();
    rotate(&issuer, "cache/redis", true).await;
    assert!(
        Resp::auth(&user, &v3.value).await.is_err(),
        "revoked password accepted"
    );
    assert!(Resp::auth(&user, &v2_value).await.is_err());
    let v4 = read(&issuer, &reader, "cache/redis", false)
        .await
        .unwrap()
        .current
        .unwrap();
    Resp::auth(&user, &v4.value).await.expect("AUTH v4");
    drop(issuer);
    let _ = admin.call(&[b"ACL", b"DELUSER", user.as_bytes()]).await;
}

//! Per-key API-key rate limits at the issuer (issue 10 point 2): validations spend
//! admissions, the 101st of a 100/min key in one minute is RESOURCE_EXHAUSTED with
//! `retry-after` and `tessera-refusal` trailers, the budget comes back in the next
//! window, leases never exceed a slice nor sum past a limit, and LeaseApiKeyBudget /
//! SetApiKeyRateLimits are confined to the caller's tenants, scoped and bounded.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_common::{Clock, ManualClock, SystemClock, UnixMillis};
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::{TestIssuer, with_credential};

const HOME: &str = "acme";
const VICTIM: &str = "globex";
const MINUTE_MS: i64 = 60_000;

/// An issuer on a manual clock stopped `offset_ms` into a minute window.
async fn issuer_at(offset_ms: i64) -> (TestIssuer, Arc<ManualClock>) {
    let now = SystemClock.now().0;
    let start = UnixMillis(now - now.rem_euclid(MINUTE_MS) + offset_ms);
    let clock = Arc::new(ManualClock::new(start));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    (issuer, clock)
}

async fn service(issuer: &TestIssuer) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("rl-{}-{}", scopes.join("-"), tenants.join("-")),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

fn limits(per_minute: u32, per_hour: u32, per_day: u32) -> pb::RateLimits {
    pb::RateLimits {
        per_minute,
        per_hour,
        per_day,
    }
}

async fn create(
    issuer: &TestIssuer,
    tenant: &str,
    rate_limits: Option<pb::RateLimits>,
) -> Result<pb::CreateApiKeyResponse, Status> {
    service(issuer)
        .await
        .create_api_key(issuer.as_admin(pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            name: "limited".into(),
            permissions: vec!["invoices:read".into()],
            reason: "rate limit test".into(),
            rate_limits,
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn validate(
    issuer: &TestIssuer,
    key: &str,
    permissions: &[&str],
    lease_admissions: u32,
) -> Result<pb::ValidateApiKeyResponse, Status> {
    service(issuer)
        .await
        .validate_api_key(issuer.as_admin(pb::ValidateApiKeyRequest {
            key: key.into(),
            required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            lease_admissions,
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn lease_as(
    issuer: &TestIssuer,
    credential: &str,
    key_id: &str,
    requested: u32,
) -> Result<pb::LeaseApiKeyBudgetResponse, Status> {
    service(issuer)
        .await
        .lease_api_key_budget(with_credential(
            pb::LeaseApiKeyBudgetRequest {
                key_id: key_id.into(),
                requested,
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn set_limits_as(
    issuer: &TestIssuer,
    credential: &str,
    key_id: &str,
    rate_limits: pb::RateLimits,
) -> Result<pb::ApiKey, Status> {
    service(issuer)
        .await
        .set_api_key_rate_limits(with_credential(
            pb::SetApiKeyRateLimitsRequest {
                key_id: key_id.into(),
                rate_limits: Some(rate_limits),
                reason: "burst for the export".into(),
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The value of the counter `name{scope="api_key"}` in the process's metrics (0 if absent).
fn counter(name: &str) -> f64 {
    let prefix = format!("{name}{{scope=\"api_key\"}} ");
    tessera_issuer::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metadata(status: &Status, name: &str) -> Option<String> {
    status
        .metadata()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// 100 validations of a 100/min key pass; the 101st in the same minute is
/// RESOURCE_EXHAUSTED with `retry-after` (the whole seconds left in the minute) and
/// `tessera-refusal: RATE_LIMITED`, naming the window and not the key; the metrics rise;
/// a wrong secret is still UNKNOWN (no limit state leaks without the secret); the next
/// minute brings the budget back.
#[tokio::test]
async fn the_101st_validation_in_a_minute_is_resource_exhausted_until_the_window_ends() {
    let _ = tessera_issuer::metrics::handle();
    let (issuer, clock) = issuer_at(10_000).await;
    let created = create(&issuer, HOME, None).await.unwrap();
    let metadata_limits = created.api_key.as_ref().unwrap().rate_limits.unwrap();
    assert_eq!(
        metadata_limits,
        limits(100, 1_000, 10_000),
        "defaults filled in"
    );
    let key_id = created.api_key.unwrap().key_id;
    let attempts_before = counter("tessera_ratelimit_attempts_total");
    let exceeded_before = counter("tessera_ratelimit_exceeded_total");
    for n in 0..100 {
        let answer = validate(&issuer, &created.key, &[], 0).await;
        assert!(
            answer.as_ref().is_ok_and(|a| a.valid),
            "validation {n}: {answer:?}"
        );
    }
    clock.advance(Duration::from_millis(500));
    let refused = validate(&issuer, &created.key, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(metadata(&refused, "retry-after").as_deref(), Some("50"));
    assert_eq!(
        metadata(&refused, "tessera-refusal").as_deref(),
        Some("RATE_LIMITED")
    );
    assert!(
        refused.message().contains("minute"),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains(&key_id),
        "{}",
        refused.message()
    );
    assert!(counter("tessera_ratelimit_exceeded_total") >= exceeded_before + 1.0);
    assert!(counter("tessera_ratelimit_attempts_total") >= attempts_before + 101.0);

    // Without the secret nothing is learned about the key's budget.
    let wrong = Credential::from_parts(
        CredentialKind::ApiKey,
        key_id.clone(),
        "x".repeat(CredentialKind::ApiKey.secret_chars()),
    )
    .expose();
    let answer = validate(&issuer, &wrong, &[], 0).await.unwrap();
    assert_eq!(answer.refusal(), pb::ApiKeyRefusal::Unknown);

    // Exactly at the next minute's start the budget is back.
    clock.advance(Duration::from_millis(49_500));
    let answer = validate(&issuer, &created.key, &[], 0).await.unwrap();
    assert!(answer.valid, "{answer:?}");
    issuer.stop().await;
}

/// A real key's call lacking a permission still costs an admission (and leases
/// nothing); a key whose hour is spent names the hour and the time to its end.
#[tokio::test]
async fn insufficient_permission_still_costs_and_the_binding_window_is_named() {
    let (issuer, clock) = issuer_at(0).await;
    let created = create(&issuer, HOME, Some(limits(3, 4, 0))).await.unwrap();
    // Each refusal costs its own admission and leases nothing, asked or not.
    for _ in 0..3 {
        let answer = validate(&issuer, &created.key, &["payroll:write"], 1_000)
            .await
            .unwrap();
        assert_eq!(answer.refusal(), pb::ApiKeyRefusal::InsufficientPermissions);
        assert_eq!(answer.leased_admissions, 0);
    }
    let refused = validate(&issuer, &created.key, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&refused, "retry-after").as_deref(), Some("60"));
    // Next minute: one admission left in the hour, then the hour refuses.
    clock.advance(Duration::from_secs(60));
    assert!(validate(&issuer, &created.key, &[], 0).await.unwrap().valid);
    let refused = validate(&issuer, &created.key, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("hour"), "{}", refused.message());
    let now = clock.now().0;
    let hour_left_ms = 3_600_000 - now.rem_euclid(3_600_000);
    let expected = (hour_left_ms + 999) / 1000;
    assert_eq!(
        metadata(&refused, "retry-after"),
        Some(expected.to_string())
    );
    issuer.stop().await;
}

/// LeaseApiKeyBudget grants at most a slice (100/min → 5) valid until the minute ends,
/// and the grants sum to exactly the limit; then `granted = 0` names the window and the
/// wait. ValidateApiKey with `lease_admissions` leases at most a slice too, and the
/// validations plus their leases never sum past the limit.
#[tokio::test]
async fn leases_grant_at_most_a_slice_and_never_sum_past_the_limit() {
    let (issuer, clock) = issuer_at(15_000).await;
    let verifier = client(&issuer, &["introspect"], &[HOME]).await;
    let created = create(&issuer, HOME, None).await.unwrap();
    let key_id = created.api_key.unwrap().key_id;
    let mut total = 0;
    loop {
        let lease = lease_as(&issuer, &verifier, &key_id, 1_000).await.unwrap();
        assert!(lease.granted <= 5, "{lease:?}");
        if lease.granted == 0 {
            assert_eq!(lease.exhausted_window, "minute");
            assert_eq!(lease.retry_after_seconds, 45);
            break;
        }
        assert_eq!(lease.valid_for_ms, 45_000, "the rest of the minute");
        assert!(lease.exhausted_window.is_empty());
        total += lease.granted;
        assert!(total <= 100);
    }
    assert_eq!(total, 100, "every admission of the minute was leasable");
    let refused = validate(&issuer, &created.key, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    clock.advance(Duration::from_secs(45));
    let mut spent = 0;
    loop {
        match validate(&issuer, &created.key, &[], 1_000).await {
            Ok(answer) => {
                assert!(answer.valid);
                assert!(answer.leased_admissions <= 5, "{answer:?}");
                if answer.leased_admissions > 0 {
                    assert_eq!(answer.lease_valid_for_ms, 60_000);
                }
                spent += 1 + answer.leased_admissions;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                break;
            }
        }
        assert!(spent <= 100, "{spent}");
    }
    assert_eq!(spent, 100);
    issuer.stop().await;
}

/// SetApiKeyRateLimits replaces the limits (audited `apikey.limits`), shown by Get and
/// List and inherited by a rotation's successor; a confined caller of another tenant is
/// told NOT_FOUND as for a missing key, a verifier (introspect) is PERMISSION_DENIED.
#[tokio::test]
async fn set_limits_is_admin_only_tenant_confined_audited_and_inherited() {
    let (issuer, _clock) = issuer_at(0).await;
    let created = create(&issuer, HOME, Some(limits(7, 0, 0))).await.unwrap();
    let key_id = created.api_key.as_ref().unwrap().key_id.clone();
    assert_eq!(
        created.api_key.unwrap().rate_limits,
        Some(limits(7, 1_000, 10_000))
    );
    let updated = set_limits_as(&issuer, &issuer.admin_token, &key_id, limits(2, 20, 200))
        .await
        .unwrap();
    assert_eq!(updated.rate_limits, Some(limits(2, 20, 200)));
    let actions: Vec<(String, String, String)> = issuer
        .app
        .store
        .audit_page(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.action, r.entry.target, r.entry.reason))
        .collect();
    let audited = actions
        .iter()
        .find(|(action, ..)| action == "apikey.limits")
        .expect("audited");
    assert_eq!(audited.1, format!("apikey:{HOME}/{key_id}"));
    assert!(audited.2.contains("burst for the export"), "{audited:?}");
    assert!(!audited.2.contains(&created.key), "never the key");
    // The new limit binds at once.
    assert!(validate(&issuer, &created.key, &[], 0).await.is_ok());
    assert!(validate(&issuer, &created.key, &[], 0).await.is_ok());
    let refused = validate(&issuer, &created.key, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    let other_admin = client(&issuer, &["admin"], &[VICTIM]).await;
    let foreign = set_limits_as(&issuer, &other_admin, &key_id, limits(1_000, 0, 0))
        .await
        .unwrap_err();
    let missing = set_limits_as(&issuer, &other_admin, "NoSuchKey0000000", limits(1, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        (foreign.code(), foreign.message()),
        (missing.code(), missing.message())
    );
    let verifier = client(&issuer, &["introspect"], &[HOME]).await;
    let denied = set_limits_as(&issuer, &verifier, &key_id, limits(1_000, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unchanged = service(&issuer)
        .await
        .get_api_key(issuer.as_admin(pb::GetApiKeyRequest {
            key_id: key_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.rate_limits, Some(limits(2, 20, 200)));

    let rotated = service(&issuer)
        .await
        .rotate_api_key(issuer.as_admin(pb::RotateApiKeyRequest {
            key_id: key_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rotated.api_key.unwrap().rate_limits,
        Some(limits(2, 20, 200)),
        "the successor inherits the limits"
    );
    let listed = service(&issuer)
        .await
        .list_api_keys(issuer.as_admin(pb::ListApiKeysRequest {
            tenant_id: HOME.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .api_keys
            .iter()
            .all(|key| key.rate_limits == Some(limits(2, 20, 200)))
    );
    issuer.stop().await;
}

/// Out-of-bounds requests are INVALID_ARGUMENT; a confined verifier leasing another
/// tenant's key is told NOT_FOUND as for a missing one; a revoked key leases nothing
/// (FAILED_PRECONDITION) and its limits cannot be changed.
#[tokio::test]
async fn lease_and_limits_requests_are_bounded_confined_and_need_a_working_key() {
    let (issuer, _clock) = issuer_at(0).await;
    let created = create(&issuer, HOME, None).await.unwrap();
    let key_id = created.api_key.unwrap().key_id;
    let verifier = client(&issuer, &["introspect"], &[HOME]).await;
    let admin = &issuer.admin_token;

    for requested in [0, 1_001, u32::MAX] {
        let status = lease_as(&issuer, &verifier, &key_id, requested)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "requested {requested}"
        );
    }
    let status = validate(&issuer, &created.key, &[], 1_001)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for bad in [
        limits(1_000_001, 0, 0),
        limits(0, 1_000_001, 0),
        limits(0, 0, u32::MAX),
    ] {
        let status = set_limits_as(&issuer, admin, &key_id, bad)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        let status = create(&issuer, HOME, Some(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
    assert!(
        set_limits_as(
            &issuer,
            admin,
            &key_id,
            limits(1_000_000, 1_000_000, 1_000_000)
        )
        .await
        .is_ok(),
        "the maximum itself is allowed"
    );

    let other_verifier = client(&issuer, &["introspect"], &[VICTIM]).await;
    let foreign = lease_as(&issuer, &other_verifier, &key_id, 5)
        .await
        .unwrap_err();
    let missing = lease_as(&issuer, &other_verifier, "NoSuchKey0000000", 5)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        (foreign.code(), foreign.message()),
        (missing.code(), missing.message())
    );
    let no_scope = client(&issuer, &["issue"], &[HOME]).await;
    let denied = lease_as(&issuer, &no_scope, &key_id, 5).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    service(&issuer)
        .await
        .revoke_api_key(issuer.as_admin(pb::RevokeApiKeyRequest {
            key_id: key_id.clone(),
            reason: "leaked".into(),
        }))
        .await
        .unwrap();
    let revoked = lease_as(&issuer, &verifier, &key_id, 5).await.unwrap_err();
    assert_eq!(revoked.code(), Code::FailedPrecondition);
    let revoked = set_limits_as(&issuer, admin, &key_id, limits(1, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::FailedPrecondition);
    issuer.stop().await;
}

/// Two issuer replicas on one PostgreSQL, each spending slices leased from the shared
/// windows: 200 validations of a 100/min key, two at a time, one on each, admit exactly
/// 100 — the store never charges past the limit, and a replica refuses only once its
/// own slice is spent, so nothing is stranded when both have refused.
#[tokio::test]
async fn two_replicas_on_postgres_admit_exactly_the_limit_together() {
    let Some(url) = crate::test_database::database_url() else {
        return;
    };
    let schema = crate::postgres_replicas::fresh_schema(&url).await;
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let mut configs = crate::postgres_replicas::replica_configs(&url, &schema, kek_dir.path());
    let now = SystemClock.now().0;
    let clock = Arc::new(ManualClock::new(UnixMillis(
        now - now.rem_euclid(MINUTE_MS) + 5_000,
    )));
    let (config_b, dir_b) = configs.pop().expect("b");
    let (config_a, dir_a) = configs.pop().expect("a");
    let replica_a = TestIssuer::start_in(config_a, dir_a, clock.clone()).await;
    let replica_b = TestIssuer::start_in(config_b, dir_b, clock.clone()).await;
    let key = create(&replica_a, HOME, None).await.unwrap().key;

    // In rounds of one call on each replica at once, so both take part throughout.
    let mut admitted = [0, 0];
    let mut refused = [0, 0];
    for _ in 0..100 {
        let (a, b) = tokio::join!(
            validate(&replica_a, &key, &[], 0),
            validate(&replica_b, &key, &[], 0)
        );
        for (replica, answer) in [a, b].into_iter().enumerate() {
            match answer {
                Ok(answer) if answer.valid => admitted[replica] += 1,
                Err(status) if status.code() == Code::ResourceExhausted => refused[replica] += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert_eq!(admitted[0] + admitted[1], 100, "{admitted:?} {refused:?}");
    assert!(refused[0] > 0 && refused[1] > 0, "{refused:?}");
    replica_a.stop().await;
    replica_b.stop().await;
}

/// Runs the `tessera-issuer` binary against `issuer` with `args` and `--json`; returns
/// whether it succeeded and its JSON answer (Null when it printed none).
async fn cli(
    issuer: &TestIssuer,
    token_file: &std::path::Path,
    args: &[&str],
) -> (bool, serde_json::Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera-issuer"))
        .args(args)
        .arg("--json")
        .arg("--addr")
        .arg(format!("http://{}", issuer.grpc_addr))
        .arg("--token-file")
        .arg(token_file)
        .output()
        .await
        .expect("run tessera-issuer");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (output.status.success(), value)
}

/// The CLI with `--json`: `apikeys create --per-minute` (other windows default),
/// `apikeys limits` changing one window and keeping the others, `get` and `list` showing
/// them; a limit above 1,000,000 and a `limits` without any window fail.
#[tokio::test]
async fn the_cli_sets_and_shows_rate_limits() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &issuer.admin_token).unwrap();
    let json_limits = |m: u32, h: u32, d: u32| serde_json::json!({ "per_minute": m, "per_hour": h, "per_day": d });

    let (ok, created) = cli(
        &issuer,
        &token_file,
        &[
            "apikeys",
            "create",
            "--tenant",
            HOME,
            "--name",
            "cli",
            "--per-minute",
            "7",
        ],
    )
    .await;
    assert!(ok, "{created}");
    assert_eq!(created["rate_limits"], json_limits(7, 1_000, 10_000));
    let key_id = created["key_id"].as_str().unwrap().to_owned();

    let (ok, changed) = cli(
        &issuer,
        &token_file,
        &[
            "apikeys",
            "limits",
            &key_id,
            "--per-hour",
            "70",
            "--reason",
            "cli test",
        ],
    )
    .await;
    assert!(ok, "{changed}");
    assert_eq!(changed["rate_limits"], json_limits(7, 70, 10_000));
    let (ok, shown) = cli(&issuer, &token_file, &["apikeys", "get", &key_id]).await;
    assert!(ok);
    assert_eq!(shown["rate_limits"], json_limits(7, 70, 10_000));
    let (ok, listed) = cli(&issuer, &token_file, &["apikeys", "list", "--tenant", HOME]).await;
    assert!(ok);
    assert_eq!(
        listed["api_keys"][0]["rate_limits"],
        json_limits(7, 70, 10_000)
    );

    let (ok, _) = cli(
        &issuer,
        &token_file,
        &["apikeys", "limits", &key_id, "--per-day", "1000001"],
    )
    .await;
    assert!(!ok, "above the maximum");
    let (ok, _) = cli(&issuer, &token_file, &["apikeys", "limits", &key_id]).await;
    assert!(!ok, "no window given");
    let (_, shown) = cli(&issuer, &token_file, &["apikeys", "get", &key_id]).await;
    assert_eq!(
        shown["rate_limits"],
        json_limits(7, 70, 10_000),
        "unchanged"
    );
    issuer.stop().await;
}

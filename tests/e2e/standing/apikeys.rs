//! API keys at real sidecars: a key revoked at the issuer is refused at every sidecar
//! within 1 s although each had it cached (the pushed CredentialChanged event purges it);
//! a rotated key works during its grace and is GRACE_ENDED at every sidecar within 1 s of
//! its end; a typo is refused by the sidecar alone, with the issuer stopped, while a
//! well-formed key it has never seen is UNAVAILABLE then.

use std::time::{Duration, Instant};

use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tonic::Code;

use super::harness::{
    Family, GENEROUS, PROPAGATION_LIMIT, Standing, Verdict, bad_checksum, now_unix_seconds,
    poll_for, refused_key, sidecar_validate_key, unix_seconds, verdict,
};
use crate::support::grpc::with_bearer;
use crate::support::wait::patience;

/// Sidecars in the propagation tests.
const SIDECARS: usize = 3;

#[test]
fn api_key_revoked_at_the_issuer_is_refused_at_every_sidecar_within_one_second() {
    let stack = Standing::start(&[]);
    let sidecars = stack.sidecars(SIDECARS);
    let created = stack.create_key("acme", Some(GENEROUS));
    let key = created.key.clone();
    let key_id = created.api_key.as_ref().unwrap().key_id.clone();

    // First sight (verified by the issuer), then a cache hit, at every sidecar.
    for sidecar in &sidecars {
        let mut client = stack.validator(sidecar);
        let first = Instant::now();
        let answer = stack
            .runtime
            .block_on(sidecar_validate_key(&mut client, &key))
            .unwrap_or_else(|status| panic!("first sight failed: {status:?}"));
        let first = first.elapsed();
        assert!(answer.valid, "first sight refused: {answer:?}");
        assert_eq!(
            (answer.tenant_id.as_str(), answer.key_id.as_str()),
            ("acme", key_id.as_str())
        );
        assert_eq!(answer.permissions, ["invoices:read"]);
        assert_eq!(answer.role, "billing");
        assert_eq!(
            answer.leased_admissions, 0,
            "a lease is the sidecar's business, never its application's: {answer:?}"
        );
        let cached = Instant::now();
        let again = stack
            .runtime
            .block_on(sidecar_validate_key(&mut client, &key))
            .unwrap();
        let cached = cached.elapsed();
        assert!(again.valid, "cached answer refused: {again:?}");
        eprintln!("first sight {first:?}, cached {cached:?}");
    }

    let mut api_keys = stack.api_keys();
    let sent = Instant::now();
    stack
        .runtime
        .block_on(api_keys.revoke_api_key(with_bearer(
            pb::RevokeApiKeyRequest {
                key_id: key_id.clone(),
                reason: "e2e propagation".into(),
            },
            &stack.admin,
        )))
        .expect("RevokeApiKey");
    let revoked = Instant::now();
    let polls: Vec<_> = sidecars
        .iter()
        .map(|sidecar| {
            stack.runtime.spawn(poll_for(
                sidecar.socket.clone(),
                Family::ApiKey,
                key.clone(),
                refused_key(pb::ApiKeyRefusal::Revoked),
                patience(Duration::from_secs(5)),
            ))
        })
        .collect();
    for (sidecar, poll) in sidecars.iter().zip(polls) {
        let arrival = stack.runtime.block_on(poll).expect("poll task");
        let millis = arrival.millis_since(revoked);
        eprintln!(
            "REVOKED at {}: {millis:?} ms after RevokeApiKey returned ({:?} after it was \
             sent), {} calls",
            sidecar.socket.display(),
            revoked.duration_since(sent),
            arrival.calls
        );
        let millis = millis.unwrap_or_else(|| {
            panic!(
                "never REVOKED at {}: last {:?}; log:\n{}",
                sidecar.socket.display(),
                arrival.last,
                sidecar.log()
            )
        });
        assert!(
            millis <= PROPAGATION_LIMIT.as_secs_f64() * 1000.0,
            "REVOKED only {millis:.0} ms after the revocation at {}",
            sidecar.socket.display()
        );
    }
    assert_eq!(
        stack.validate_at_issuer(&key).refusal(),
        pb::ApiKeyRefusal::Revoked
    );

    // Rotation with a short grace: the predecessor works until grace_until, then
    // GRACE_ENDED everywhere; the successor works.
    let old = stack.create_key("acme", Some(GENEROUS));
    let mut clients: Vec<_> = sidecars
        .iter()
        .map(|sidecar| stack.validator(sidecar))
        .collect();
    for client in &mut clients {
        assert_eq!(
            stack
                .runtime
                .block_on(verdict(client, Family::ApiKey, &old.key)),
            Verdict::Valid
        );
    }
    let grace_seconds = 3;
    let rotated = stack
        .runtime
        .block_on(api_keys.rotate_api_key(with_bearer(
            pb::RotateApiKeyRequest {
                key_id: old.api_key.as_ref().unwrap().key_id.clone(),
                grace_seconds,
                reason: "e2e grace".into(),
            },
            &stack.admin,
        )))
        .expect("RotateApiKey")
        .into_inner();
    let grace_until = unix_seconds!(rotated.predecessor.as_ref().unwrap().grace_until);
    assert!(
        grace_until > now_unix_seconds(),
        "grace already over: {rotated:?}"
    );
    for client in &mut clients {
        // The rotation reaches each sidecar as a pushed event, milliseconds after
        // RotateApiKey returns: until then a sidecar may still answer from its cached
        // pre-rotation answer (no grace_until). Within 1 s it must carry the grace.
        let pushed_by = Instant::now() + Duration::from_secs(1);
        let during = loop {
            let during = stack
                .runtime
                .block_on(sidecar_validate_key(client, &old.key))
                .expect("validate during the grace");
            if during.grace_until.is_some() || Instant::now() >= pushed_by {
                break during;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(during.valid, "the predecessor during its grace: {during:?}");
        assert!(
            (unix_seconds!(during.grace_until) - grace_until).abs() < 1.0,
            "the answer carries grace_until: {during:?}"
        );
        assert_eq!(
            stack
                .runtime
                .block_on(verdict(client, Family::ApiKey, &rotated.key)),
            Verdict::Valid,
            "the successor"
        );
    }
    let polls: Vec<_> = sidecars
        .iter()
        .map(|sidecar| {
            stack.runtime.spawn(poll_for(
                sidecar.socket.clone(),
                Family::ApiKey,
                old.key.clone(),
                refused_key(pb::ApiKeyRefusal::GraceEnded),
                patience(Duration::from_secs(grace_seconds + 5)),
            ))
        })
        .collect();
    // The wall-clock instant the grace ends, as an Instant.
    let until_end = grace_until - now_unix_seconds();
    let grace_end = Instant::now() + Duration::from_secs_f64(until_end.max(0.0));
    for (sidecar, poll) in sidecars.iter().zip(polls) {
        let arrival = stack.runtime.block_on(poll).expect("poll task");
        let at = arrival.at.unwrap_or_else(|| {
            panic!(
                "never GRACE_ENDED at {}: last {:?}; log:\n{}",
                sidecar.socket.display(),
                arrival.last,
                sidecar.log()
            )
        });
        let late_ms = at.saturating_duration_since(grace_end).as_secs_f64() * 1000.0;
        let early_ms = grace_end.saturating_duration_since(at).as_secs_f64() * 1000.0;
        eprintln!(
            "GRACE_ENDED at {}: {late_ms:.0} ms after grace_until ({early_ms:.0} ms before)",
            sidecar.socket.display()
        );
        // The sidecar must not end the grace early (beyond clock-reading slack) …
        assert!(
            early_ms <= 50.0,
            "GRACE_ENDED {early_ms:.0} ms before grace_until"
        );
        // … nor keep the key working past it.
        assert!(
            late_ms <= PROPAGATION_LIMIT.as_secs_f64() * 1000.0,
            "the predecessor worked {late_ms:.0} ms past grace_until"
        );
    }
}

#[test]
fn a_typo_is_refused_locally_by_the_sidecar() {
    let mut stack = Standing::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let unseen = stack.create_key("acme", Some(GENEROUS)).key;
    let mut client = stack.validator(&sidecar);
    stack.issuer.terminate(patience(Duration::from_secs(20)));

    let typo = bad_checksum(&unseen);
    let random = Credential::generate(CredentialKind::ApiKey).expose();
    let service_token = Credential::generate(CredentialKind::Service).expose();
    let cases = [
        (typo.as_str(), pb::ApiKeyRefusal::BadChecksum),
        (&bad_checksum(&random), pb::ApiKeyRefusal::BadChecksum),
        ("tbk_short_x", pb::ApiKeyRefusal::Malformed),
        ("not a key at all", pb::ApiKeyRefusal::Malformed),
        ("", pb::ApiKeyRefusal::Malformed),
        (&service_token, pb::ApiKeyRefusal::Malformed),
    ];
    for (presented, wanted) in cases {
        let started = Instant::now();
        let answer = stack
            .runtime
            .block_on(sidecar_validate_key(&mut client, presented))
            .unwrap_or_else(|status| {
                panic!("{wanted:?} must be answered with the issuer down, got {status:?}")
            });
        assert!(
            !answer.valid && answer.refusal() == wanted,
            "expected {wanted:?}: {answer:?}"
        );
        assert!(answer.tenant_id.is_empty() && answer.key_id.is_empty());
        eprintln!(
            "{wanted:?} in {:?} with the issuer stopped",
            started.elapsed()
        );
    }
    // Out of bounds: refused before anything else.
    let oversized = format!("tbk_{}", "a".repeat(125));
    assert_eq!(oversized.len(), 129);
    let status = stack
        .runtime
        .block_on(sidecar_validate_key(&mut client, &oversized))
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Well-formed and never seen: only the issuer can say, and it is down.
    for presented in [&unseen, &random] {
        let status = stack
            .runtime
            .block_on(sidecar_validate_key(&mut client, presented))
            .expect_err("a first sight with the issuer down cannot be answered");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            !status.message().contains(&presented[21..]),
            "the status echoes the secret: {status:?}"
        );
    }
    assert!(
        !sidecar.log().contains(&unseen[21..]),
        "the sidecar logged a secret"
    );
}

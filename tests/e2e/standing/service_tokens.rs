//! Service tokens through a real sidecar: `FetchServiceToken` hands the application the
//! token of the identity the sidecar is configured for, valid at another sidecar and at
//! the issuer; at 80 % of its life the sidecar renews it, and once the successor is
//! installed the predecessor is revoked — at the issuer and at the other sidecar (which
//! had it cached) within 1 s. Polling FetchServiceToken every 100 ms across the renewal,
//! the application never receives a token at or past its expiry.

use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;
use tonic::Code;

use super::harness::{
    Family, PROPAGATION_LIMIT, SERVICE_IDENTITY_FLAG, SERVICE_TENANT_FLAG, Standing, Verdict,
    now_unix_seconds, poll_for, public_id, refused_opaque, unix_seconds, verdict,
};
use crate::support::wait::patience;

/// The shortest token lifetime an identity may have; renewal comes at 80 %: 48 s.
const TTL_SECONDS: u32 = 60;
const FETCH_INTERVAL: Duration = Duration::from_millis(100);

#[test]
fn fetch_service_token_hands_out_a_renewed_token_and_the_predecessor_dies() {
    let stack = Standing::start(&[]);
    let identity = stack.create_identity("acme", "billing", TTL_SECONDS);
    assert_eq!(identity.token_ttl_seconds, TTL_SECONDS, "{identity:?}");
    let holder = stack
        .sidecar("holder")
        .args([
            SERVICE_IDENTITY_FLAG,
            "billing",
            SERVICE_TENANT_FLAG,
            "acme",
        ])
        .start();
    let other = stack.sidecar("other").start();
    let mut holder_client = stack.validator(&holder);
    let mut other_client = stack.validator(&other);

    // A sidecar without an identity has nothing to hand out.
    let status = stack
        .runtime
        .block_on(other_client.fetch_service_token(pb::FetchServiceTokenRequest {}))
        .expect_err("no identity configured");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // The holder may need a moment to obtain its first token (UNAVAILABLE until then).
    let fetch =
        |client: &mut tessera_proto::v1::validator_service_client::ValidatorServiceClient<
            tonic::transport::Channel,
        >| {
            stack
                .runtime
                .block_on(client.fetch_service_token(pb::FetchServiceTokenRequest {}))
        };
    let deadline = Instant::now() + patience(Duration::from_secs(10));
    let first = loop {
        match fetch(&mut holder_client) {
            Ok(response) => break response.into_inner(),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                std::thread::sleep(FETCH_INTERVAL);
            }
            Err(status) => panic!("FetchServiceToken: {status:?}; log:\n{}", holder.log()),
        }
    };
    assert!(first.token.starts_with("tbs_"), "{}", first.token_id);
    assert_eq!(public_id(&first.token), first.token_id);
    assert_eq!(
        (first.tenant_id.as_str(), first.service.as_str()),
        ("acme", "billing")
    );
    let expires_at = unix_seconds!(first.expires_at);
    let renew_at = unix_seconds!(first.renew_at);
    let issued_at = expires_at - f64::from(TTL_SECONDS);
    assert!(
        (renew_at - (issued_at + 0.8 * f64::from(TTL_SECONDS))).abs() < 1.5,
        "renew_at is 80 % of the life: renew {renew_at}, expires {expires_at}"
    );

    // Valid at the other sidecar (first sight, then cached) and at the issuer.
    for _ in 0..2 {
        let answer = stack
            .runtime
            .block_on(
                other_client.validate_opaque_token(pb::ValidateOpaqueTokenRequest {
                    token: first.token.clone(),
                    required_subject: "billing".into(),
                    ..Default::default()
                }),
            )
            .expect("ValidateOpaqueToken")
            .into_inner();
        assert!(answer.valid, "{answer:?}");
        let info = answer.info.expect("info of a valid token");
        assert_eq!(
            (
                info.kind.as_str(),
                info.tenant_id.as_str(),
                info.subject.as_str()
            ),
            ("service", "acme", "billing")
        );
        assert_eq!(info.permissions, ["orders:write"]);
    }
    assert!(stack.validate_opaque_at_issuer(&first.token).valid);
    // Another subject is refused.
    let wrong_subject = stack
        .runtime
        .block_on(
            other_client.validate_opaque_token(pb::ValidateOpaqueTokenRequest {
                token: first.token.clone(),
                required_subject: "mailer".into(),
                ..Default::default()
            }),
        )
        .unwrap()
        .into_inner();
    assert_eq!(
        wrong_subject.refusal(),
        pb::OpaqueTokenRefusal::InsufficientPermissions
    );

    // Poll across the renewal: never an expired token, and the token changes by renew_at
    // (plus slack for the round trip to the issuer).
    let renewal_limit = renew_at + 5.0;
    let mut fetches = 0u32;
    let (second, changed) = loop {
        let now = now_unix_seconds();
        assert!(
            now < renewal_limit,
            "no renewed token {:.1} s after renew_at; holder log:\n{}",
            now - renew_at,
            holder.log()
        );
        let response = fetch(&mut holder_client)
            .unwrap_or_else(|status| panic!("FetchServiceToken during the life: {status:?}"))
            .into_inner();
        fetches += 1;
        let received = now_unix_seconds();
        assert!(
            unix_seconds!(response.expires_at) > received,
            "handed an expired token at {received}: {}",
            response.token_id
        );
        if response.token_id != first.token_id {
            break (response, Instant::now());
        }
        std::thread::sleep(FETCH_INTERVAL);
    };
    let renewed_at = now_unix_seconds();
    eprintln!(
        "renewed {:.2} s after renew_at ({:.2} s before the first expired), {fetches} fetches",
        renewed_at - renew_at,
        expires_at - renewed_at
    );
    assert_ne!(second.token, first.token);
    assert!(
        renewed_at < expires_at,
        "the renewal came after the first token expired"
    );
    assert!(
        unix_seconds!(second.expires_at) > expires_at,
        "the successor lives longer: {second:?}"
    );

    // The predecessor dies at the other sidecar (cached there) and at the issuer.
    let poll = stack.runtime.spawn(poll_for(
        other.socket.clone(),
        Family::Opaque,
        first.token.clone(),
        refused_opaque(pb::OpaqueTokenRefusal::Revoked),
        patience(Duration::from_secs(5)),
    ));
    let arrival = stack.runtime.block_on(poll).expect("poll task");
    let millis = arrival.millis_since(changed).unwrap_or_else(|| {
        panic!(
            "the predecessor never REVOKED at the other sidecar: {:?}; log:\n{}",
            arrival.last,
            other.log()
        )
    });
    eprintln!("predecessor REVOKED at the other sidecar {millis:.0} ms after the switch");
    assert!(
        millis <= PROPAGATION_LIMIT.as_secs_f64() * 1000.0,
        "predecessor still accepted {millis:.0} ms after the successor was handed out"
    );
    let at_issuer = stack.validate_opaque_at_issuer(&first.token);
    assert_eq!(at_issuer.refusal(), pb::OpaqueTokenRefusal::Revoked);
    // The successor works everywhere.
    assert_eq!(
        stack
            .runtime
            .block_on(verdict(&mut other_client, Family::Opaque, &second.token)),
        Verdict::Valid
    );
    assert!(stack.validate_opaque_at_issuer(&second.token).valid);
    assert!(
        !holder.log().contains(&second.token[21..]) && !holder.log().contains(&first.token[21..]),
        "the holder logged a token"
    );
}

//! Emergency tenant revocation reaches standing credentials: tenant `acme`'s API key,
//! service token and webhook token, each cached at a real sidecar, are refused there
//! within 1 s of `EmergencyRevoke{tenant}` returning, and at the issuer; tenant
//! `globex`'s key keeps working at both.

use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;

use super::harness::{
    Family, GENEROUS, PROPAGATION_LIMIT, Standing, Verdict, poll_for, refused_key, refused_opaque,
    verdict,
};
use crate::support::grpc::with_bearer;
use crate::support::wait::patience;

#[test]
fn emergency_tenant_revocation_deactivates_api_keys_service_and_webhook_tokens_at_the_sidecar_within_one_second()
 {
    let stack = Standing::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let mut client = stack.validator(&sidecar);

    let key = stack.create_key("acme", Some(GENEROUS)).key;
    let bystander = stack.create_key("globex", Some(GENEROUS)).key;
    stack.create_identity("acme", "billing", 0);
    let service = stack.issue_service_token("acme", "billing").token;
    let webhook = stack.issue_webhook_token("acme", "orders-callback").token;
    let credentials = [
        ("API key", Family::ApiKey, key.as_str()),
        ("service token", Family::Opaque, service.as_str()),
        ("webhook token", Family::Opaque, webhook.as_str()),
    ];
    // Validated twice each: the second answer comes from the sidecar's cache.
    for (name, family, credential) in
        credentials
            .iter()
            .copied()
            .chain([("globex key", Family::ApiKey, bystander.as_str())])
    {
        for _ in 0..2 {
            assert_eq!(
                stack
                    .runtime
                    .block_on(verdict(&mut client, family, credential)),
                Verdict::Valid,
                "{name} before the emergency"
            );
        }
    }

    let mut tokens = stack.tokens();
    let sent = Instant::now();
    let response = stack
        .runtime
        .block_on(tokens.emergency_revoke(with_bearer(
            pb::EmergencyRevokeRequest {
                scope: Some(pb::emergency_revoke_request::Scope::TenantId("acme".into())),
                incident_id: "inc-e2e-standing".into(),
                reason: "tenant compromised".into(),
            },
            &stack.admin,
        )))
        .expect("EmergencyRevoke")
        .into_inner();
    let returned = Instant::now();
    assert!(!response.replayed, "{response:?}");
    let polls: Vec<_> = credentials
        .iter()
        .map(|(_, family, credential)| {
            let wanted = match family {
                Family::ApiKey => refused_key(pb::ApiKeyRefusal::Revoked),
                Family::Opaque => refused_opaque(pb::OpaqueTokenRefusal::Revoked),
            };
            stack.runtime.spawn(poll_for(
                sidecar.socket.clone(),
                *family,
                (*credential).to_owned(),
                wanted,
                patience(Duration::from_secs(5)),
            ))
        })
        .collect();
    for ((name, _, _), poll) in credentials.iter().zip(polls) {
        let arrival = stack.runtime.block_on(poll).expect("poll task");
        let millis = arrival.millis_since(returned);
        eprintln!(
            "{name} refused at the sidecar {millis:?} ms after EmergencyRevoke returned \
             (the call took {:?}); {} calls",
            returned.duration_since(sent),
            arrival.calls
        );
        let millis = millis.unwrap_or_else(|| {
            panic!(
                "{name} never REVOKED at the sidecar: last {:?}; log:\n{}",
                arrival.last,
                sidecar.log()
            )
        });
        assert!(
            millis <= PROPAGATION_LIMIT.as_secs_f64() * 1000.0,
            "{name} accepted {millis:.0} ms after the emergency"
        );
    }

    // The issuer agrees.
    assert_eq!(
        stack.validate_at_issuer(&key).refusal(),
        pb::ApiKeyRefusal::Revoked
    );
    for token in [&service, &webhook] {
        assert_eq!(
            stack.validate_opaque_at_issuer(token).refusal(),
            pb::OpaqueTokenRefusal::Revoked
        );
    }
    // The other tenant is untouched, at the sidecar and at the issuer.
    assert_eq!(
        stack
            .runtime
            .block_on(verdict(&mut client, Family::ApiKey, &bystander)),
        Verdict::Valid
    );
    assert!(stack.validate_at_issuer(&bystander).valid);
    // A key created after the emergency works: the tenant is not closed for good.
    let fresh = stack.create_key("acme", Some(GENEROUS)).key;
    assert_eq!(
        stack
            .runtime
            .block_on(verdict(&mut client, Family::ApiKey, &fresh)),
        Verdict::Valid,
        "a key created after the emergency"
    );
}

//! The issuer's `grpc.health.v1` service: every service it answers reports SERVING. The
//! list comes from the contract itself (the embedded descriptor set), so a service that
//! is added to the proto and served but not registered with health fails here.

use prost::Message as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::TestIssuer;

/// The sidecar's service: in the shared contract, never served by the issuer.
const SIDECAR_SERVICE: &str = "tessera.v1.ValidatorService";

/// Returns every `tessera.v1` service of the contract that the issuer serves.
fn issuer_services_of_the_contract() -> Vec<String> {
    let descriptors = prost_types::FileDescriptorSet::decode(tessera_proto::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(|service| format!("{}.{}", file.package(), service.name()))
        })
        .filter(|name| name != SIDECAR_SERVICE)
        .collect()
}

#[tokio::test]
async fn health_reports_serving_for_every_service_admin_service_included() {
    let issuer = TestIssuer::start().await;
    let mut health = HealthClient::new(issuer.channel().await);
    let contract = issuer_services_of_the_contract();
    assert!(
        contract
            .iter()
            .any(|name| name == "tessera.v1.AdminService"),
        "{contract:?}"
    );
    let infrastructure = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    for name in contract.iter().map(String::as_str).chain(infrastructure) {
        let status = health
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("health of {name}: {status:?}"))
            .into_inner()
            .status;
        assert_eq!(
            ServingStatus::try_from(status),
            Ok(ServingStatus::Serving),
            "{name}"
        );
    }
    issuer.stop().await;
}

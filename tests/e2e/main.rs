//! End-to-end tests: the real `tessera-issuer` binary, driven as a user would drive it
//! (CLI, gRPC, HTTP, grpcurl, PyJWT). One test binary; shared machinery in `support/`.

mod support;

mod apikeys;
mod attack;
mod auth_scopes;
mod cli_keys;
mod compose;
mod config_errors;
mod deploy;
mod examples;
mod grpcurl;
mod jwks_pyjwt;
mod key_secrecy;
mod onetime;
mod postgres_replicas;
mod readme_journeys;
mod scan;
mod secret_reads;
mod secrets;
mod shutdown;
mod sidecar;
mod standing;
mod traces;
mod uds_clients;
mod webhooks;

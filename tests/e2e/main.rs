//! End-to-end tests: the real `tessera-issuer` binary, driven as a user would drive it
//! (CLI, gRPC, HTTP, grpcurl, PyJWT). One test binary; shared machinery in `support/`.

mod support;

mod attack;
mod auth_scopes;
mod cli_keys;
mod config_errors;
mod deploy;
mod grpcurl;
mod jwks_pyjwt;
mod key_secrecy;
mod postgres_replicas;
mod shutdown;
mod sidecar;

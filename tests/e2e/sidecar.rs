//! End-to-end tests of the real `tessera-sidecar` binary against the real issuer: tokens
//! issued with the issuer's CLI and validated over the sidecar's Unix socket from Rust
//! (tonic), Python grpcio and grpcurl; rotation with prepublish, emergency rotation, and an
//! issuer outage survived from the persisted bundle. Machinery in `sidecar/harness.rs`.

pub(crate) mod harness;

mod clients;
mod outage;
mod rotation;
mod sessions;
mod validate;

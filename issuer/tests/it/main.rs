//! Integration tests of the issuer library: the storage conformance suite on both
//! backends, and in-process servers on real sockets.

mod abuse;
mod audit;
mod harness;
mod health;
mod keyring;
mod legacy_audit;
mod postgres_replicas;
mod server;
mod sessions;
mod store_suite;
mod tenancy;
mod tls;
mod verification;
mod webhook_keys;

//! Integration tests of the issuer library: the storage conformance suite on both
//! backends, and in-process servers on real sockets. `test_database` decides whether the
//! PostgreSQL cases run (and reports the ones skipped).

mod abuse;
mod actions;
mod api_keys;
mod audit;
mod bootstrap_clients;
mod challenges;
mod harness;
mod health;
mod keyring;
mod leaked;
mod legacy_audit;
mod postgres_replicas;
mod rate_limits;
mod secrets;
mod server;
mod service_tokens;
mod sessions;
mod store_suite;
mod tenancy;
mod test_database;
mod tls;
mod verification;
mod webhook_keys;
mod webhooks;

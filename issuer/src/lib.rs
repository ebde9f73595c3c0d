//! Tessera issuer: holds every private key and all token state, signs tokens, rotates
//! keys on schedule and streams the trust bundle to verifiers.

pub mod abuse;
pub mod actions;
pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod challenges;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod delivery;
pub mod emergency;
pub mod files;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod kek;
pub mod keyring;
pub mod keys;
pub mod metrics;
pub mod one_time_limits;
pub mod opaque_tokens;
pub mod scan;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod service_tokens;
pub mod sessions;
pub mod store;
pub mod tokens;
pub mod webhooks;

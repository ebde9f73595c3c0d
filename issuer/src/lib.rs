//! Tessera issuer: holds every private key and all token state, signs tokens, rotates
//! keys on schedule and streams the trust bundle to verifiers.

pub mod audit;
pub mod store;
pub mod files;
pub mod kek;
pub mod keys;

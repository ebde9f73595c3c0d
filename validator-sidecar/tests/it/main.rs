//! Integration tests of the sidecar library: a fake issuer streams a bundle the test
//! controls, the real sidecar runs in-process on a Unix socket, and tonic clients talk to
//! it over that socket.

mod fake_credentials;
mod fake_issuer;
mod fake_secrets;
mod harness;
mod keys;

mod apikeys;
mod bounds;
mod lifecycle;
mod opaque;
mod revocation;
mod secrets;
mod service_token;
mod stream;
mod tls;
mod types;
mod validate;

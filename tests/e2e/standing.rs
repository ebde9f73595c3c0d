//! End-to-end tests of the standing credentials at real sidecars (issue 10): API keys
//! validated at several `tessera-sidecar` processes and purged by pushed events within
//! 1 s, typos refused locally, rate limits shared by four sidecars within the documented
//! bound, service tokens handed out and renewed by `FetchServiceToken`, and an emergency
//! tenant revocation reaching every kind. Machinery in `standing/harness.rs`.

pub(crate) mod harness;

mod apikeys;
mod cli;
mod emergency;
mod ratelimit;
mod service_tokens;

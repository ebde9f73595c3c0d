//! Domain types shared by the Tessera issuer and the validator sidecar.
//!
//! Nothing in this crate does I/O (telemetry initialisation aside) or reads the clock on
//! its own: every function that depends on time takes `now` as an argument.

pub mod bundle;
pub mod claims;
pub mod clock;
pub mod credential;
pub mod ids;
pub mod jwk;
pub mod keys;
pub mod limits;
#[cfg(test)]
mod proptests;
pub mod revocation;
pub mod scan;
pub mod telemetry;
pub mod trace_context;
pub mod verify;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};

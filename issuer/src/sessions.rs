//! Sessions and rotating refresh tokens (DESIGN §4), and token revocation (DESIGN §5).
//!
//! A refresh token's successor is derived from the token itself (HMAC under a KEK-derived
//! key of the presented id and secret), so every concurrent exchange of one token computes
//! the same successor: the store's conditional write lets exactly one of them record it,
//! and the others — within the grace window — hand back that very same successor without
//! any secret being stored in clear.

pub mod decision;
pub mod service;

pub use decision::{RefreshDecision, RefreshRejection, SessionPolicy, decide};
pub use service::{SessionError, SessionService, SessionTokens};

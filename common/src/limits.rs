//! Hard size limits on untrusted input, shared so the issuer and the sidecar agree.

/// Largest token either program will parse (DESIGN §7).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest identifier (subject, tenant, session, role, audience, kid, client name).
pub const MAX_ID_BYTES: usize = 256;
/// Most entries in a list claim (permissions, features).
pub const MAX_LIST_ENTRIES: usize = 128;
/// Largest entry of a list claim.
pub const MAX_LIST_ENTRY_BYTES: usize = 128;
/// Largest free-text reason (audit log).
pub const MAX_REASON_BYTES: usize = 1024;

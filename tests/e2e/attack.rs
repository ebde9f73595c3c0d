//! The attack suite: attacker cases against the real binaries, each named after what it
//! tries and asserting the typed refusal it must get. Every new RPC adds its cases here:
//! as a caller confined to another tenant, and forged, replayed, oversized and
//! out-of-bounds input.

mod abuse;
mod apikeys;
mod challenges;
mod emergency;
mod onetime;
mod scan;
mod secret_reads;
mod secrets;
mod sessions;
mod standing;
mod tenant;
mod tokens;
mod webhooks;

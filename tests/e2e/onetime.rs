//! End-to-end tests of single-use tokens (issue 11) that need the real binaries: exactly
//! one of 100 concurrent consumers of one action link wins across two issuer replicas on
//! PostgreSQL, and a sidecar refuses forged, mismatched and expired action tokens locally
//! while forwarding the rest to the issuer; the `action-links` CLI; an OTP e-mail delivered
//! to a real third-party SMTP server (aiosmtpd).

mod actions;
mod cli;
mod smtp;

//! Attack cases: tokens (filled in by the security round).

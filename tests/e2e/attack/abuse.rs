//! Attack cases: abuse (filled in by the security round).

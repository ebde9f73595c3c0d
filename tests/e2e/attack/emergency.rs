//! Attack cases: emergency (filled in by the security round).

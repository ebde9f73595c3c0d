//! Attack cases: sessions (filled in by the security round).

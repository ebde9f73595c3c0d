//! Attack cases: tenant (filled in by the security round).

//! End-to-end test crate: the tests live in `e2e/` (one test binary, `e2e`), helpers in
//! `e2e/support/`; this library is intentionally empty.

//! Shared machinery of the end-to-end tests: building and locating the real binaries,
//! running issuer processes, small HTTP and gRPC clients, the Python venv, polling, and
//! whether the test database answers.

pub mod binaries;
pub mod grpc;
pub mod http;
pub mod issuer;
pub mod process;
pub mod python;
pub mod readme;
pub mod scratch_database;
/// Whether the PostgreSQL cases run: the issuer's `it` helper, one file for both binaries.
#[path = "../../../issuer/tests/it/test_database.rs"]
pub mod test_database;
pub mod wait;

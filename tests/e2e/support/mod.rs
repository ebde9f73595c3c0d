//! Shared machinery of the end-to-end tests: building and locating the real binaries,
//! running issuer processes, small HTTP and gRPC clients, the Python venv, and polling.

pub mod binaries;
pub mod grpc;
pub mod http;
pub mod issuer;
pub mod process;
pub mod python;
pub mod wait;

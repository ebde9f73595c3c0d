//! Generated code for the `tessera.v1` gRPC protocol (see `proto/tessera/v1/*.proto`).
//!
//! Only the gRPC layers of the issuer and the sidecar use these types; the domain code
//! works with its own types and converts at that edge.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

/// Encoded `FileDescriptorSet` of every tessera.v1 file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor.bin"));

//! Signing and MAC keys: generation, signing with parsed key pairs, MACs with HMAC keys,
//! the key ring (which key signs and which are published at an instant) and rotation
//! planning. Everything here except `manager` is pure: no I/O, time passed in.

pub mod mac;
pub mod manager;
pub mod material;
pub mod rotation;
pub mod signer;

pub use manager::KeyManager;

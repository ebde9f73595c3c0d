//! Signing keys: generation, signing with parsed key pairs, the key ring (which key signs
//! and which are published at an instant) and rotation planning. Everything here except
//! `manager` is pure: no I/O, time passed in.

pub mod manager;
pub mod material;
pub mod rotation;
pub mod signer;

pub use manager::KeyManager;

//! The audit log's hash chain: each event's hash covers the previous event's hash and
//! every field of the event, so a deleted, reordered or edited row breaks the chain.

use aws_lc_rs::digest;

use crate::store::AuditEntry;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Returns the hash of the event at `seq` following `prev_hash`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, entry: &AuditEntry) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"tessera-audit-v1");
    context.update(prev_hash);
    context.update(&seq.to_be_bytes());
    context.update(&entry.at.0.to_be_bytes());
    // Length-prefix every field so no two different events encode to the same bytes.
    for field in [
        &entry.actor,
        &entry.action,
        &entry.target,
        &entry.request_id,
        &entry.reason,
        &entry.outcome,
    ] {
        context.update(&(field.len() as u64).to_be_bytes());
        context.update(field.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use tessera_common::UnixMillis;

    use super::*;

    fn entry(reason: &str) -> AuditEntry {
        AuditEntry {
            at: UnixMillis(1),
            actor: "system".into(),
            action: "key.rotate".into(),
            target: "access".into(),
            request_id: "r".into(),
            reason: reason.into(),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn hash_depends_on_every_input() {
        let base = chain_hash(&GENESIS_HASH, 1, &entry("a"));
        assert_ne!(base, chain_hash(&GENESIS_HASH, 2, &entry("a")));
        assert_ne!(base, chain_hash(&[1; 32], 1, &entry("a")));
        assert_ne!(base, chain_hash(&GENESIS_HASH, 1, &entry("b")));
    }
}

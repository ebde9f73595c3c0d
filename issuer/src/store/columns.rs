//! How domain values are written in database columns, shared by both backends (the row
//! readers differ by driver; these encodings must not). A value the code does not know
//! is a corrupt row, reported as [`StoreError::Corrupt`] naming it.

use tessera_common::UnixMillis;
use tessera_common::bundle::Revision;
use tessera_common::credential::{CredentialKind, PepperVersion};
use tessera_common::revocation::RevocationKind;

use super::{RefreshState, StoreError, WrappedKey};
use crate::audit::ChainHead;
use crate::kek::KekVersion;

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(message)
}

/// `(state, state_at, successor_id)` of a refresh token.
pub(crate) fn refresh_state_to_columns(
    state: &RefreshState,
) -> (&'static str, Option<i64>, Option<&str>) {
    match state {
        RefreshState::Active => ("active", None, None),
        RefreshState::Rotated { at, successor_id } => {
            ("rotated", Some(at.0), Some(successor_id.as_str()))
        }
        RefreshState::Revoked { at } => ("revoked", Some(at.0), None),
    }
}

/// The inverse of [`refresh_state_to_columns`].
pub(crate) fn refresh_state_from_columns(
    state: &str,
    state_at: Option<i64>,
    successor_id: Option<String>,
) -> Result<RefreshState, StoreError> {
    match (state, state_at, successor_id) {
        ("active", _, _) => Ok(RefreshState::Active),
        ("rotated", Some(at), Some(successor_id)) => Ok(RefreshState::Rotated {
            at: UnixMillis(at),
            successor_id,
        }),
        ("revoked", Some(at), _) => Ok(RefreshState::Revoked { at: UnixMillis(at) }),
        (state, _, _) => Err(corrupt(format!("refresh token state `{state}` incomplete"))),
    }
}

pub(crate) fn revocation_kind_to_column(kind: RevocationKind) -> &'static str {
    kind.as_str()
}

/// The inverse of [`revocation_kind_to_column`].
pub(crate) fn revocation_kind_from_column(kind: &str) -> Result<RevocationKind, StoreError> {
    RevocationKind::from_name(kind)
        .ok_or_else(|| corrupt(format!("unknown revocation kind `{kind}`")))
}

/// Returns a row limit as stored, clamped to `i64::MAX`.
pub(crate) fn limit_to_column(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn revision_from_column(value: i64) -> Result<Revision, StoreError> {
    u64::try_from(value)
        .map(Revision)
        .map_err(|_| corrupt(format!("negative revision {value}")))
}

pub(crate) fn hash_from_column(value: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(value.as_slice())
        .map_err(|_| corrupt(format!("audit hash of {} bytes", value.len())))
}

pub(crate) fn audit_seq_from_column(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative audit seq {value}")))
}

/// The newest audit row's `(seq, hash)`, as the next append chains to it.
pub(crate) fn chain_head_from_columns(seq: i64, hash: Vec<u8>) -> Result<ChainHead, StoreError> {
    Ok(ChainHead {
        seq: audit_seq_from_column(seq)?,
        hash: hash_from_column(hash)?,
    })
}

pub(crate) fn pepper_version_from_column(value: i32) -> Result<PepperVersion, StoreError> {
    PepperVersion::new(value).ok_or_else(|| corrupt(format!("pepper version {value}")))
}

/// `(kek_version, wrapped_private)` of a key row. A key with no wrapped private key
/// stores version 1 (the column is `NOT NULL`); nothing reads it.
pub(crate) fn wrapped_key_to_columns(wrapped: Option<&WrappedKey>) -> (i32, Option<&[u8]>) {
    match wrapped {
        Some(wrapped) => (wrapped.kek_version.get(), Some(wrapped.sealed.as_slice())),
        None => (KekVersion::FIRST.get(), None),
    }
}

/// The inverse of [`wrapped_key_to_columns`].
pub(crate) fn wrapped_key_from_columns(
    kek_version: i32,
    sealed: Option<Vec<u8>>,
) -> Result<Option<WrappedKey>, StoreError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let kek_version = KekVersion::new(kek_version)
        .ok_or_else(|| corrupt(format!("KEK version {kek_version}")))?;
    Ok(Some(WrappedKey {
        kek_version,
        sealed,
    }))
}

/// The prefix a client's credential was issued with.
pub(crate) fn credential_kind_to_column(kind: CredentialKind) -> &'static str {
    kind.prefix()
}

/// The inverse of [`credential_kind_to_column`]; only caller-credential kinds are valid.
pub(crate) fn credential_kind_from_column(prefix: &str) -> Result<CredentialKind, StoreError> {
    match CredentialKind::from_prefix(prefix) {
        Some(kind @ (CredentialKind::IssuerCaller | CredentialKind::ApiKey)) => Ok(kind),
        _ => Err(corrupt(format!("client credential prefix `{prefix}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_unknown_values_are_corrupt() {
        for state in [
            RefreshState::Active,
            RefreshState::Rotated {
                at: UnixMillis(5),
                successor_id: "t1".into(),
            },
            RefreshState::Revoked { at: UnixMillis(7) },
        ] {
            let (name, at, successor) = refresh_state_to_columns(&state);
            let back = refresh_state_from_columns(name, at, successor.map(str::to_owned));
            assert_eq!(back.unwrap(), state);
        }
        assert!(refresh_state_from_columns("rotated", Some(1), None).is_err());
        for kind in RevocationKind::ALL {
            let column = revocation_kind_to_column(kind);
            assert_eq!(revocation_kind_from_column(column).unwrap(), kind);
        }
        assert!(revocation_kind_from_column("nobody").is_err());
        assert!(revision_from_column(-1).is_err());
        assert!(hash_from_column(vec![0; 31]).is_err());
        assert!(chain_head_from_columns(-1, vec![0; 32]).is_err());
        assert!(chain_head_from_columns(1, vec![0; 33]).is_err());
        assert_eq!(limit_to_column(usize::MAX), i64::MAX);
        assert!(pepper_version_from_column(0).is_err());
        assert!(wrapped_key_from_columns(0, Some(vec![1])).is_err());
        assert_eq!(wrapped_key_from_columns(0, None).unwrap(), None);
        assert!(credential_kind_from_column("tbf_").is_err());
    }

    #[test]
    fn wrapped_keys_and_client_prefixes_round_trip() {
        let wrapped = WrappedKey {
            kek_version: KekVersion::new(3).unwrap(),
            sealed: vec![1, 2, 3],
        };
        let (version, sealed) = wrapped_key_to_columns(Some(&wrapped));
        let back = wrapped_key_from_columns(version, sealed.map(<[u8]>::to_vec));
        assert_eq!(back.unwrap(), Some(wrapped));
        for kind in [CredentialKind::IssuerCaller, CredentialKind::ApiKey] {
            let column = credential_kind_to_column(kind);
            assert_eq!(credential_kind_from_column(column).unwrap(), kind);
        }
    }
}

//! The issuer's one model of an opaque credential (DESIGN §4). A kind is declared once in
//! `tessera_common::credential::CredentialKind` (prefix, id and secret shape); its stored
//! record implements [`CredentialRecord`] (found by the id the credential carries; which
//! prefixes it answers to; its secret as an HMAC under a recorded pepper version; its
//! own state, which only the kind can judge). [`Credentials`] does the rest for every
//! kind alike: parse with the kind's prefix, issue a fresh credential and its hash under
//! the current pepper, and verify a presented secret in constant time under the pepper
//! version its record names.
//!
//! Today the issuer's caller credentials (`auth.rs`) and refresh tokens (`sessions/`)
//! use it; API keys, service and webhook tokens are meant to, by adding a kind and a
//! record.

use std::sync::Arc;

use tessera_common::credential::{Credential, CredentialKind, PepperVersion};
use tracing::{error, warn};

use crate::keyring::{self, HashedSecret, Keyring, KeyringError};
use crate::store::Store;

/// A stored opaque credential, looked up by the id its credential carries.
pub trait CredentialRecord {
    /// Returns true when a credential of `kind` may authenticate as this record (a
    /// record answers to one prefix, or to a legacy one as well).
    fn accepts(&self, kind: CredentialKind) -> bool;

    /// Returns the pepper version that hashed the secret.
    fn pepper_version(&self) -> PepperVersion;

    /// Returns HMAC-SHA256(pepper, secret).
    fn secret_hash(&self) -> &[u8];
}

/// Issues and verifies opaque credentials with the keyring's peppers.
pub struct Credentials {
    keyring: Arc<Keyring>,
    /// Where later pepper versions are stored, to load one another replica introduced.
    store: Arc<dyn Store>,
}

impl Credentials {
    /// Builds the model over `keyring`, loading peppers it lacks from `store`.
    pub fn new(keyring: Arc<Keyring>, store: Arc<dyn Store>) -> Credentials {
        Credentials { keyring, store }
    }

    /// Returns the keyring (for the refresh-successor key of a pepper version).
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Parses `text` as a credential of one of `kinds`; anything else (malformed, bad
    /// checksum, another kind) is `None`, with no hint of which.
    pub fn parse(text: &str, kinds: &[CredentialKind]) -> Option<Credential> {
        Credential::parse(text.trim())
            .ok()
            .filter(|credential| kinds.contains(&credential.kind))
    }

    /// Generates a credential of `kind` and the hash to store, under the current pepper.
    pub fn issue(&self, kind: CredentialKind) -> Result<(Credential, HashedSecret), KeyringError> {
        let credential = Credential::generate(kind);
        let hashed = self.keyring.hash_secret(&credential.secret)?;
        Ok((credential, hashed))
    }

    /// Hashes the secret of `credential` (made elsewhere, e.g. derived) for storage.
    pub fn hash(&self, credential: &Credential) -> Result<HashedSecret, KeyringError> {
        self.keyring.hash_secret(&credential.secret)
    }

    /// Returns true when `presented` authenticates as `record`: its prefix is one the
    /// record answers to and its secret matches, in constant time, under the record's
    /// pepper version. A version this replica does not hold yet (introduced by another)
    /// is loaded from the store first; one that cannot be loaded refuses the credential.
    pub async fn verify(&self, presented: &Credential, record: &impl CredentialRecord) -> bool {
        if !record.accepts(presented.kind) {
            return false;
        }
        let version = record.pepper_version();
        let result =
            match self
                .keyring
                .secret_matches(&presented.secret, version, record.secret_hash())
            {
                Err(KeyringError::UnknownPepper(_)) => {
                    if let Err(load_error) =
                        keyring::load_stored_peppers(&self.keyring, self.store.as_ref()).await
                    {
                        warn!(error = %load_error, "cannot load stored pepper versions");
                    }
                    self.keyring
                        .secret_matches(&presented.secret, version, record.secret_hash())
                }
                other => other,
            };
        result.unwrap_or_else(|keyring_error| {
            error!(error = %keyring_error, pepper = %version, "credential refused: its pepper is unavailable");
            false
        })
    }
}

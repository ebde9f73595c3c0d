//! Opaque credentials: `<prefix><id>_<secret><checksum>` (DESIGN §4).
//!
//! The id and secret are base62, so the single `_` after the id splits them without
//! ambiguity; the checksum is CRC32 of everything before it, base62 in 6 characters, so a
//! secret scanner can tell a real Tessera credential from noise offline. The secret has
//! 256 bits of entropy, so it is stored as HMAC-SHA256(pepper, secret), never slow-hashed.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters in a credential id (~95 bits).
pub const ID_CHARS: usize = 16;
/// Characters in a secret: 43 base62 characters carry 256 bits.
pub const SECRET_CHARS: usize = 43;
/// Characters in the checksum.
pub const CHECKSUM_CHARS: usize = 6;
/// Longest credential accepted by the parser.
pub const MAX_CREDENTIAL_BYTES: usize = 128;

/// The kinds of opaque credential (DESIGN §4), each declared once here: its prefix and
/// the shape of its id and secret. The JWS-carrying kinds (`tba_`, `tbr_`, `tbe_`) are
/// tokens, not opaque credentials, and are not parsed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// `tbk_`: tenant API keys. Issuer caller credentials created before `tbc_` existed
    /// also carry it; their client records say so (see the issuer's `auth.rs`).
    ApiKey,
    /// `tbc_`: the issuer's own caller credentials (API clients of the issuer).
    IssuerCaller,
    /// `tbf_`: refresh tokens.
    Refresh,
    /// `tbs_`: service tokens.
    Service,
    /// `tbw_`: webhook tokens.
    Webhook,
}

impl CredentialKind {
    /// Every kind, in prefix-table order.
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::ApiKey,
        CredentialKind::IssuerCaller,
        CredentialKind::Refresh,
        CredentialKind::Service,
        CredentialKind::Webhook,
    ];

    /// Returns the prefix, underscore included.
    pub const fn prefix(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "tbk_",
            CredentialKind::IssuerCaller => "tbc_",
            CredentialKind::Refresh => "tbf_",
            CredentialKind::Service => "tbs_",
            CredentialKind::Webhook => "tbw_",
        }
    }

    /// Returns the kind's name in reports and JSON (`api_key`, `issuer_caller`, …).
    pub const fn name(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::IssuerCaller => "issuer_caller",
            CredentialKind::Refresh => "refresh",
            CredentialKind::Service => "service",
            CredentialKind::Webhook => "webhook",
        }
    }

    /// Returns the kind whose prefix is exactly `prefix` (as stored in a record).
    pub fn from_prefix(prefix: &str) -> Option<CredentialKind> {
        CredentialKind::ALL
            .into_iter()
            .find(|kind| kind.prefix() == prefix)
    }

    /// Returns how many base62 characters a generated id of this kind has. Every kind
    /// uses the same shape today; a kind that needs another declares it here.
    pub const fn id_chars(self) -> usize {
        ID_CHARS
    }

    /// Returns how many base62 characters a secret of this kind has (256 bits for every
    /// kind: the reason HMAC, not a slow hash, is enough).
    pub const fn secret_chars(self) -> usize {
        SECRET_CHARS
    }
}

/// Which version of the credential pepper hashed a stored secret (DESIGN §4: "records
/// remember which pepper version hashed them"). Versions start at 1 and only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PepperVersion(i32);

impl PepperVersion {
    /// The pepper derived from the KEK, used by every record written before versions
    /// could be added.
    pub const FIRST: PepperVersion = PepperVersion(1);

    /// Returns the version numbered `number`, or `None` when it is not positive.
    pub const fn new(number: i32) -> Option<PepperVersion> {
        if number >= 1 {
            Some(PepperVersion(number))
        } else {
            None
        }
    }

    /// Returns the version number (as stored).
    pub const fn get(self) -> i32 {
        self.0
    }

    /// Returns the version after this one.
    pub const fn next(self) -> PepperVersion {
        PepperVersion(self.0 + 1)
    }
}

impl std::fmt::Display for PepperVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Why a string is not a well-formed credential. Deliberately coarse: callers learn
/// nothing about how close a guess came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("credential is malformed")]
    Malformed,
    #[error("credential checksum does not match")]
    BadChecksum,
}

/// A credential secret. Its `Debug` is redacted and its memory is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(String);

impl Secret {
    /// Returns the secret characters; never log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A parsed (or freshly generated) credential.
#[derive(Clone, Debug)]
pub struct Credential {
    pub kind: CredentialKind,
    /// The public id: safe to log, index and show.
    pub id: String,
    pub secret: Secret,
}

impl Credential {
    /// Generates a credential of `kind` with a fresh id and a 256-bit secret.
    pub fn generate(kind: CredentialKind) -> Credential {
        Credential {
            kind,
            id: random_base62(kind.id_chars()),
            secret: Secret(random_base62(kind.secret_chars())),
        }
    }

    /// Builds a credential from an id and a secret made elsewhere (e.g. derived).
    pub fn from_parts(kind: CredentialKind, id: String, secret: String) -> Credential {
        Credential {
            kind,
            id,
            secret: Secret(secret),
        }
    }

    /// Parses `text`, checking the prefix, shape and checksum.
    pub fn parse(text: &str) -> Result<Credential, CredentialError> {
        let shape = check(text)?;
        let kind = shape.kind;
        let id = &text[kind.prefix().len()..kind.prefix().len() + shape.id_len];
        let secret_start = kind.prefix().len() + shape.id_len + 1;
        let secret = &text[secret_start..secret_start + kind.secret_chars()];
        Ok(Credential {
            kind,
            id: id.to_owned(),
            secret: Secret(secret.to_owned()),
        })
    }

    /// Returns the full credential text; hand it to its owner once, never log it.
    pub fn expose(&self) -> String {
        let mut text = format!("{}{}_{}", self.kind.prefix(), self.id, self.secret.expose());
        let checksum = checksum_of(&text);
        text.push_str(&checksum);
        text
    }
}

/// What [`check`] learnt about a well-formed credential: its kind and how long its id
/// is (the id starts right after the prefix). Holds nothing secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialShape {
    pub kind: CredentialKind,
    pub id_len: usize,
}

/// Checks the prefix, shape and checksum of `text` without allocating: the one check
/// behind [`Credential::parse`], and what a leaked-credential scanner calls on every
/// candidate it finds (`scan.rs`).
pub fn check(text: &str) -> Result<CredentialShape, CredentialError> {
    if text.len() > MAX_CREDENTIAL_BYTES || !text.is_ascii() {
        return Err(CredentialError::Malformed);
    }
    let kind = CredentialKind::ALL
        .into_iter()
        .find(|kind| text.starts_with(kind.prefix()))
        .ok_or(CredentialError::Malformed)?;
    let body = &text[kind.prefix().len()..];
    let (id, rest) = body.split_once('_').ok_or(CredentialError::Malformed)?;
    if id.is_empty()
        || rest.len() != kind.secret_chars() + CHECKSUM_CHARS
        || !is_base62(id)
        || !is_base62(rest)
    {
        return Err(CredentialError::Malformed);
    }
    let checksum = &rest[kind.secret_chars()..];
    let expected = checksum_bytes(&text[..text.len() - CHECKSUM_CHARS]);
    if checksum.as_bytes().ct_eq(&expected).unwrap_u8() != 1 {
        return Err(CredentialError::BadChecksum);
    }
    Ok(CredentialShape {
        kind,
        id_len: id.len(),
    })
}

/// Returns HMAC-SHA256(pepper, secret): what is stored in place of the secret.
pub fn hash_secret(pepper: &[u8], secret: &Secret) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, pepper);
    let tag = hmac::sign(&key, secret.expose().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(pepper: &[u8], secret: &Secret, stored_hash: &[u8]) -> bool {
    hash_secret(pepper, secret).ct_eq(stored_hash).into()
}

fn is_base62(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

fn checksum_of(text: &str) -> String {
    checksum_bytes(text)
        .iter()
        .map(|&byte| byte as char)
        .collect()
}

fn checksum_bytes(text: &str) -> [u8; CHECKSUM_CHARS] {
    let mut value = u64::from(crc32fast::hash(text.as_bytes()));
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    // Six base62 characters hold 62^6 > 2^32, so nothing is lost.
    out
}

/// Returns `n` uniformly random base62 characters.
pub fn random_base62(n: usize) -> String {
    let rng = SystemRandom::new();
    base62_from_blocks(n, |buffer| {
        // SystemRandom only fails if the OS entropy source is gone, which is fatal for
        // any credential service; there is no safe fallback.
        rng.fill(buffer)
            .expect("operating system random source failed");
    })
}

/// Returns `n` base62 characters drawn from the blocks `next_block` fills, in turn
/// (random bytes, or a keyed derivation's output). The one base62 encoder of the
/// workspace: rejection sampling (bytes ≥ 248 are skipped) keeps every character
/// uniform, where `byte % 62` alone would favour the first eight.
pub fn base62_from_blocks(n: usize, mut next_block: impl FnMut(&mut [u8; 32])) -> String {
    let mut out = String::with_capacity(n);
    let mut block = zeroize::Zeroizing::new([0u8; 32]);
    while out.len() < n {
        next_block(&mut block);
        for &byte in block.iter() {
            if byte < 248 && out.len() < n {
                out.push(BASE62[usize::from(byte % 62)] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_parse_back() {
        for kind in CredentialKind::ALL {
            let credential = Credential::generate(kind);
            let text = credential.expose();
            assert!(text.starts_with(kind.prefix()));
            let parsed = Credential::parse(&text).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.id, credential.id);
            assert_eq!(parsed.secret.expose(), credential.secret.expose());
        }
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let text = Credential::generate(CredentialKind::ApiKey).expose();
        let mut bytes = text.into_bytes();
        let position = 4 + ID_CHARS + 5;
        bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            Credential::parse(&tampered).unwrap_err(),
            CredentialError::BadChecksum
        );
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for text in [
            "",
            "tbk_",
            "tbx_abc_def",
            "tbk_abc",
            "tbk_a-b_c",
            &"tbk_".repeat(100),
        ] {
            assert_eq!(
                Credential::parse(text).unwrap_err(),
                CredentialError::Malformed,
                "{text}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credential = Credential::generate(CredentialKind::Refresh);
        let debug = format!("{credential:?}");
        assert!(!debug.contains(credential.secret.expose()));
    }

    #[test]
    fn hashed_secret_matches_only_the_same_secret_and_pepper() {
        let credential = Credential::generate(CredentialKind::ApiKey);
        let hash = hash_secret(b"pepper", &credential.secret);
        assert!(secret_matches(b"pepper", &credential.secret, &hash));
        assert!(!secret_matches(b"other", &credential.secret, &hash));
        let other = Credential::generate(CredentialKind::ApiKey);
        assert!(!secret_matches(b"pepper", &other.secret, &hash));
    }
}

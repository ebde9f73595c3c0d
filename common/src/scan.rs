//! The leaked-credential scanner's core: finds Tessera opaque credentials (every prefix of
//! [`CredentialKind::ALL`]) in a byte buffer, by prefix, shape and checksum. No I/O: the
//! issuer's `scan` subcommand walks files and git history and hands the bytes here.
//!
//! How a credential is recognised, fast and without false positives:
//! - candidates are the occurrences of `tb` (a SIMD substring search, `memchr::memmem`)
//!   followed by a known prefix letter and `_`, not preceded by a base62 character (so
//!   `xtbk_…` is not one);
//! - the candidate must then have the credential's shape — a base62 id, `_`, exactly the
//!   kind's secret length plus the checksum length of base62 characters — and must not be
//!   followed by a base62 character;
//! - finally [`credential::check`] (the one parser) verifies the CRC32 checksum, so random
//!   text that happens to have the shape passes with probability 62⁻⁶ ≈ 2·10⁻¹¹.
//!
//! A finding carries the kind, the credential id (the public lookup key, safe to show:
//! DESIGN §4) and a fingerprint, never the secret.

use aws_lc_rs::digest;

use crate::credential::{self, CHECKSUM_CHARS, CredentialKind, MAX_CREDENTIAL_BYTES};

/// A credential found in a buffer. Its `Debug` holds nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: CredentialKind,
    /// The credential id: the public lookup key, not secret.
    pub id: String,
    /// [`fingerprint`] of the whole credential.
    pub fingerprint: String,
    /// Byte offset of the credential's first character in the buffer.
    pub start: usize,
    /// Byte offset just past its last character: `&buffer[start..end]` is the credential
    /// (needed to revoke it; never print it).
    pub end: usize,
    /// 1-based line number (lines end at `\n`; a `\r` before it is part of no credential).
    pub line: usize,
    /// 1-based column, in bytes from the start of the line.
    pub column: usize,
}

/// Returns the fingerprint of a credential: `sha256:` and the first 16 hex digits of the
/// SHA-256 of its full text. It tells two findings apart (is this the same leaked
/// credential?) without revealing anything usable: the secret has 256 bits of entropy.
pub fn fingerprint(credential_text: &str) -> String {
    let hash = digest::digest(&digest::SHA256, credential_text.as_bytes());
    let mut out = String::with_capacity(7 + 16);
    out.push_str("sha256:");
    for byte in &hash.as_ref()[..8] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Finds every credential in `text`, in order. Lines and columns count from the start of
/// `text`.
pub fn find_credentials(text: &[u8]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut lines = LineCounter::default();
    let finder = memchr::memmem::Finder::new(b"tb");
    let mut position = 0;
    while let Some(relative) = finder.find(&text[position..]) {
        let start = position + relative;
        match credential_at(text, start) {
            Some((kind, id_len, end)) => {
                // `credential_at` only accepts ASCII, so this slice is valid UTF-8.
                let credential_text = std::str::from_utf8(&text[start..end]).unwrap_or("");
                let (line, column) = lines.position_of(text, start);
                let id_start = start + kind.prefix().len();
                found.push(Found {
                    kind,
                    id: credential_text[id_start - start..id_start - start + id_len].to_owned(),
                    fingerprint: fingerprint(credential_text),
                    start,
                    end,
                    line,
                    column,
                });
                position = end;
            }
            None => position = start + 1,
        }
    }
    found
}

/// Returns the kind, id length and end of the credential starting at `start` (where `tb`
/// was found), if there is one.
fn credential_at(text: &[u8], start: usize) -> Option<(CredentialKind, usize, usize)> {
    if start > 0 && text[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    let prefix = text.get(start..start + 4)?;
    let kind = CredentialKind::ALL
        .into_iter()
        .find(|kind| kind.prefix().as_bytes() == prefix)?;
    let id_start = start + 4;
    let id_end = base62_run_end(text, id_start, MAX_CREDENTIAL_BYTES);
    if id_end == id_start || text.get(id_end) != Some(&b'_') {
        return None;
    }
    let tail_chars = kind.secret_chars() + CHECKSUM_CHARS;
    let tail_start = id_end + 1;
    let tail_end = base62_run_end(text, tail_start, tail_chars + 1);
    if tail_end - tail_start != tail_chars || tail_end - start > MAX_CREDENTIAL_BYTES {
        return None;
    }
    let candidate = std::str::from_utf8(&text[start..tail_end]).ok()?;
    let shape = credential::check(candidate).ok()?;
    Some((shape.kind, shape.id_len, tail_end))
}

/// Returns where the run of base62 characters starting at `from` ends, looking at no more
/// than `limit` characters.
fn base62_run_end(text: &[u8], from: usize, limit: usize) -> usize {
    let stop = text.len().min(from.saturating_add(limit));
    let mut at = from;
    while at < stop && text[at].is_ascii_alphanumeric() {
        at += 1;
    }
    at
}

/// Turns byte offsets into line and column, counting newlines only between findings (so
/// a buffer without credentials costs no line counting at all).
#[derive(Default)]
struct LineCounter {
    /// Offset up to which newlines were counted.
    counted_to: usize,
    /// Newlines before `counted_to`.
    newlines: usize,
    /// Offset of the first byte of the line holding `counted_to`.
    line_start: usize,
}

impl LineCounter {
    fn position_of(&mut self, text: &[u8], offset: usize) -> (usize, usize) {
        let span = &text[self.counted_to..offset];
        self.newlines += memchr::memchr_iter(b'\n', span).count();
        if let Some(last) = memchr::memrchr(b'\n', span) {
            self.line_start = self.counted_to + last + 1;
        }
        self.counted_to = offset;
        (self.newlines + 1, offset - self.line_start + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Credential;

    /// A deterministic xorshift generator: the tests need lots of cheap, repeatable noise.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn base62(&mut self, n: usize, out: &mut Vec<u8>) {
            const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            for _ in 0..n {
                out.push(BASE62[(self.next() % 62) as usize]);
            }
        }
    }

    fn planted(kind: CredentialKind) -> String {
        Credential::generate(kind).expose()
    }

    #[test]
    fn no_false_positive_in_50_mb_of_random_base62_with_separators() {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        let mut text = Vec::with_capacity(50 << 20);
        while text.len() < 50 << 20 {
            let word = 1 + (noise.next() % 80) as usize;
            noise.base62(word, &mut text);
            // Separators that a credential may sit next to, `_` included, so runs of
            // random base62 form many id/secret-shaped pieces.
            text.push(b" _\n_=\"_"[(noise.next() % 7) as usize]);
        }
        assert!(find_credentials(&text).is_empty());
    }

    #[test]
    fn no_false_positive_on_credential_shaped_text_with_wrong_checksums() {
        let mut noise = Noise(42);
        let mut text = Vec::new();
        let mut n_candidates = 0;
        for round in 0..200_000 {
            let kind = CredentialKind::ALL[round % 5];
            text.extend_from_slice(kind.prefix().as_bytes());
            noise.base62(16, &mut text);
            text.push(b'_');
            noise.base62(43 + 6, &mut text);
            text.push(if round % 2 == 0 { b'\n' } else { b' ' });
            n_candidates += 1;
        }
        assert_eq!(n_candidates, 200_000);
        assert!(find_credentials(&text).is_empty());
    }

    #[test]
    fn a_credential_with_one_changed_character_is_not_found() {
        for kind in CredentialKind::ALL {
            let text = planted(kind);
            for position in 4..text.len() {
                if text.as_bytes()[position] == b'_' {
                    continue;
                }
                let mut bytes = text.clone().into_bytes();
                bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
                assert!(
                    find_credentials(&bytes).is_empty(),
                    "{kind:?} at {position}"
                );
            }
        }
    }

    #[test]
    fn every_planted_credential_of_every_kind_is_found_at_its_line_and_column() {
        let mut noise = Noise(7);
        let mut text = Vec::new();
        let mut expected = Vec::new();
        for (line, round) in (1..).zip(0..5_000) {
            let kind = CredentialKind::ALL[round % 5];
            let mut before = Vec::new();
            let n_noise = (noise.next() % 40) as usize;
            noise.base62(n_noise, &mut before);
            before.extend_from_slice(["=", " \"", ": ", "(", "'"][round % 5].as_bytes());
            text.extend_from_slice(&before);
            let credential = planted(kind);
            expected.push((kind, line, before.len() + 1, credential.clone()));
            text.extend_from_slice(credential.as_bytes());
            text.extend_from_slice(["\n", "\r\n", "\"\n", "',\r\n", ";\n"][round % 5].as_bytes());
        }
        let found = find_credentials(&text);
        assert_eq!(found.len(), expected.len());
        for (found, (kind, line, column, credential)) in found.iter().zip(&expected) {
            assert_eq!(found.kind, *kind);
            assert_eq!((found.line, found.column), (*line, *column));
            assert_eq!(&text[found.start..found.end], credential.as_bytes());
            assert_eq!(found.fingerprint, fingerprint(credential));
            assert_eq!(
                found.id,
                Credential::parse(credential).unwrap().id,
                "the id is reported"
            );
        }
    }

    #[test]
    fn credentials_at_the_start_and_end_of_the_buffer_are_found() {
        let credential = planted(CredentialKind::IssuerCaller);
        let found = find_credentials(credential.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column), (1, 1));
        assert_eq!(found[0].end, credential.len());

        let text = format!("first line\r\nsecond {credential}");
        let found = find_credentials(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column), (2, 8));
    }

    #[test]
    fn a_credential_glued_to_base62_text_is_not_found() {
        let credential = planted(CredentialKind::Refresh);
        for text in [
            format!("x{credential}"),
            format!("{credential}x"),
            format!("0{credential}9"),
        ] {
            assert!(find_credentials(text.as_bytes()).is_empty(), "{text}");
        }
        for text in [
            format!("API_KEY={credential}"),
            format!("_{credential}_"),
            format!("\"{credential}\""),
            format!("-{credential}-"),
            format!("é{credential}é"),
        ] {
            assert_eq!(find_credentials(text.as_bytes()).len(), 1, "{text}");
        }
    }

    #[test]
    fn several_credentials_on_one_line_and_adjacent_ones_are_all_found() {
        let first = planted(CredentialKind::ApiKey);
        let second = planted(CredentialKind::Webhook);
        let third = planted(CredentialKind::Service);
        let text = format!("{first} {second},{third}");
        let found = find_credentials(text.as_bytes());
        let columns: Vec<_> = found.iter().map(|found| found.column).collect();
        assert_eq!(
            columns,
            [1, first.len() + 2, first.len() + second.len() + 3]
        );
    }

    #[test]
    fn ids_of_other_lengths_are_found_and_over_long_ones_are_not() {
        let short = Credential::from_parts(
            CredentialKind::ApiKey,
            "abc".to_owned(),
            crate::credential::random_base62(43),
        )
        .expose();
        assert_eq!(find_credentials(short.as_bytes())[0].id, "abc");
        let too_long = Credential::from_parts(
            CredentialKind::ApiKey,
            crate::credential::random_base62(80),
            crate::credential::random_base62(43),
        )
        .expose();
        assert!(Credential::parse(&too_long).is_err());
        assert!(find_credentials(too_long.as_bytes()).is_empty());
    }

    #[test]
    fn a_finding_never_holds_the_secret() {
        let credential = Credential::generate(CredentialKind::Refresh);
        let text = format!("token = \"{}\"\n", credential.expose());
        let found = find_credentials(text.as_bytes());
        let debug = format!("{found:?}");
        assert!(!debug.contains(credential.secret.expose()));
        assert!(debug.contains(&credential.id));
    }
}

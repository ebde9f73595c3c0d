//! One-time codes: generation from the operating system's CSPRNG, the input hashed for
//! storage, and the shape checks of presented codes. Pure but for the random source.
//!
//! An OTP is 6 decimal digits drawn uniformly: a 32-bit draw at or above
//! `OTP_REJECT_FROM` (the largest multiple of 10^6 that fits) is thrown away and drawn
//! again, so `draw % 10^6` favours no code (plain `% 10^6` over 2^32 would favour the
//! first 967,296 codes by one part in 4,294). A magic-link token is 32 random bytes,
//! written as 64 lowercase hex characters.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::ChallengeMethod;

/// Digits of an OTP.
pub const OTP_DIGITS: usize = 6;
/// Random bytes of a magic-link token.
pub const MAGIC_LINK_BYTES: usize = 32;
/// The number of distinct OTPs.
const OTP_SPACE: u32 = 1_000_000;
/// Draws at or above this are rejected: 4,294 × 10^6, the largest multiple of 10^6
/// below 2^32.
const OTP_REJECT_FROM: u32 = (u32::MAX / OTP_SPACE) * OTP_SPACE;
/// Versioned context of the hashed input, so no other HMAC under the pepper (credential
/// secrets) ever takes the same bytes.
const HASH_LABEL: &str = "tessera-challenge-v1";

/// A one-time code or link token. Its `Debug` is redacted and its memory wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(Zeroizing<String>);

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

impl Code {
    /// Wraps a presented code (shape not checked; see [`well_formed`]).
    pub fn presented(text: &str) -> Code {
        Code(Zeroizing::new(text.to_owned()))
    }

    /// Returns the code's characters; hand them to their owner, never log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Generates a fresh code for `method`.
pub fn generate(method: ChallengeMethod) -> Code {
    let rng = SystemRandom::new();
    let fill = |buffer: &mut [u8]| {
        // SystemRandom only fails if the OS entropy source is gone, which is fatal for
        // any credential service; there is no safe fallback.
        rng.fill(buffer)
            .expect("operating system random source failed");
    };
    match method {
        ChallengeMethod::OtpEmail | ChallengeMethod::OtpSms => Code(otp_from(|| {
            let mut bytes = [0u8; 4];
            fill(&mut bytes);
            u32::from_be_bytes(bytes)
        })),
        ChallengeMethod::MagicLink => {
            let mut bytes = Zeroizing::new([0u8; MAGIC_LINK_BYTES]);
            fill(bytes.as_mut());
            Code(Zeroizing::new(hex(bytes.as_ref())))
        }
    }
}

/// Returns the 6-digit code from the first draw of `next_draw` below the rejection bound.
fn otp_from(mut next_draw: impl FnMut() -> u32) -> Zeroizing<String> {
    loop {
        let draw = next_draw();
        if draw < OTP_REJECT_FROM {
            return Zeroizing::new(format!("{:06}", draw % OTP_SPACE));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Returns true when `code` has the shape of `method`'s codes (6 ASCII digits, or 64
/// lowercase hex characters). A malformed code is still counted as an attempt: shape is
/// no secret, but skipping the count would let a caller probe without cost.
pub fn well_formed(method: ChallengeMethod, code: &str) -> bool {
    match method {
        ChallengeMethod::OtpEmail | ChallengeMethod::OtpSms => {
            code.len() == OTP_DIGITS && code.bytes().all(|byte| byte.is_ascii_digit())
        }
        ChallengeMethod::MagicLink => {
            code.len() == MAGIC_LINK_BYTES * 2
                && code
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        }
    }
}

/// Returns the bytes hashed for storage: the label, the challenge id and the code, so a
/// stored hash is bound to its challenge (equal codes of two challenges hash apart).
pub fn hash_input(challenge_id: &str, code: &Code) -> Zeroizing<String> {
    Zeroizing::new(format!("{HASH_LABEL}\0{challenge_id}\0{}", code.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otps_are_six_digits_and_magic_links_64_hex() {
        for _ in 0..200 {
            let otp = generate(ChallengeMethod::OtpSms);
            assert!(well_formed(ChallengeMethod::OtpSms, otp.expose()));
            let link = generate(ChallengeMethod::MagicLink);
            assert!(well_formed(ChallengeMethod::MagicLink, link.expose()));
        }
        assert!(!well_formed(ChallengeMethod::OtpEmail, "12345"));
        assert!(!well_formed(ChallengeMethod::OtpEmail, "12345a"));
        assert!(!well_formed(ChallengeMethod::MagicLink, &"A".repeat(64)));
    }

    #[test]
    fn draws_at_or_above_the_bound_are_rejected_not_reduced() {
        // The first draw is the bound itself (would be 000000 by modulo), then the last
        // draw below it (999999).
        let mut draws = [OTP_REJECT_FROM, u32::MAX, OTP_REJECT_FROM - 1].into_iter();
        let code = otp_from(|| draws.next().unwrap());
        assert_eq!(code.as_str(), "999999");
        assert_eq!(OTP_REJECT_FROM % OTP_SPACE, 0);
        assert!(u64::from(OTP_REJECT_FROM) + u64::from(OTP_SPACE) > u64::from(u32::MAX));
    }

    #[test]
    fn codes_are_roughly_uniform() {
        // 100,000 codes: each leading digit appears about 10,000 times.
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let code = generate(ChallengeMethod::OtpEmail);
            counts[usize::from(code.expose().as_bytes()[0] - b'0')] += 1;
        }
        for count in counts {
            assert!((9_400..10_600).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = Code::presented("123456");
        assert_eq!(format!("{code:?}"), "Code(<redacted>)");
        assert!(hash_input("chl_a", &code).contains("chl_a\u{0}123456"));
    }
}

//! Hard size limits on untrusted input, shared so the issuer and the sidecar agree.

/// Largest token either program will parse (DESIGN §7).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest identifier (subject, tenant, session, role, audience, kid, client name).
pub const MAX_ID_BYTES: usize = 256;
/// Most entries in a list claim (permissions, features).
pub const MAX_LIST_ENTRIES: usize = 128;
/// Largest entry of a list claim.
pub const MAX_LIST_ENTRY_BYTES: usize = 128;
/// Largest free-text reason (audit log).
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a free-text field (a reason, a name, an incident id) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field}: longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field}: contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("{field}: contains a bidirectional-text control character")]
    BidiControl { field: &'static str },
}

/// Checks text that ends up in the audit log or in logs: at most `max_bytes`, and no
/// character that could forge or disguise a line there. Control characters (newline, NUL,
/// escape …) and the Unicode line and paragraph separators could start a fake entry in a
/// line-oriented export; bidirectional overrides and isolates (and the invisible marks
/// LRM, RLM, ALM) make a terminal show text in another order than it is stored ("Trojan
/// Source"), so a reviewer would read a different reason than the one recorded. Emptiness
/// is the caller's rule: some fields are optional.
pub fn check_text(field: &'static str, value: &str, max_bytes: usize) -> Result<(), TextError> {
    if value.len() > max_bytes {
        return Err(TextError::TooLong {
            field,
            max: max_bytes,
        });
    }
    if value.chars().any(is_line_breaking) {
        return Err(TextError::ControlCharacter { field });
    }
    if value.chars().any(is_bidi_control) {
        return Err(TextError::BidiControl { field });
    }
    Ok(())
}

/// Returns true for characters that end or alter a line: Unicode controls (C0, DEL, C1)
/// and the line and paragraph separators U+2028, U+2029.
pub fn is_line_breaking(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Returns true for the characters that change the displayed order of text: embeddings
/// and overrides (U+202A–U+202E), isolates (U+2066–U+2069) and the directional marks
/// LRM (U+200E), RLM (U+200F) and ALM (U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_text_accepts_ordinary_text_in_any_script() {
        assert_eq!(check_text("reason", "", MAX_REASON_BYTES), Ok(()));
        assert_eq!(
            check_text(
                "reason",
                "key leaked — rotating (ticket #42), مفتاح, 鍵",
                256
            ),
            Ok(())
        );
    }

    #[test]
    fn check_text_refuses_newlines_nul_escape_and_line_separators() {
        for value in [
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{1b}[31mb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\tb",
        ] {
            assert_eq!(
                check_text("reason", value, MAX_REASON_BYTES),
                Err(TextError::ControlCharacter { field: "reason" }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn check_text_refuses_every_bidi_override_isolate_and_mark() {
        let bidi = [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ];
        for c in bidi {
            let value = format!("rotate{c}key");
            assert_eq!(
                check_text("name", &value, 128),
                Err(TextError::BidiControl { field: "name" }),
                "U+{:04X}",
                c as u32
            );
        }
        // Neighbours of the ranges are ordinary (zero-width space, word joiner).
        assert_eq!(check_text("name", "a\u{200B}b\u{2060}c", 128), Ok(()));
    }

    #[test]
    fn check_text_refuses_too_long_text_and_names_the_field() {
        let error = check_text("incident_id", &"x".repeat(257), 256).unwrap_err();
        assert_eq!(
            error,
            TextError::TooLong {
                field: "incident_id",
                max: 256
            }
        );
        assert_eq!(error.to_string(), "incident_id: longer than 256 bytes");
    }
}

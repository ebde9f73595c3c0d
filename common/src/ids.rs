//! Identifier newtypes. Each is validated once, at the edge, so domain code never handles
//! an unchecked string.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_ID_BYTES, is_bidi_control, is_line_breaking};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{field} is required")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("{field} contains a bidirectional-text control character")]
    BidiControl { field: &'static str },
}

/// Checks the rules every identifier shares: non-empty, at most `MAX_ID_BYTES`, printable
/// and free of bidirectional controls (identifiers reach the audit log too; see
/// `limits::check_text`).
pub fn check_identifier(field: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { field });
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            field,
            max: MAX_ID_BYTES,
        });
    }
    if value.chars().any(is_line_breaking) {
        return Err(IdError::ControlCharacter { field });
    }
    if value.chars().any(is_bidi_control) {
        return Err(IdError::BidiControl { field });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_identifier($field, &value)?;
                Ok($name(value))
            }

            /// Returns the identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Returns the inner string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A signing key's id, as carried in the JWS `kid` header.
    KeyId,
    "kid"
);
identifier!(
    /// A tenant of the platform; every tenant-scoped record carries one.
    TenantId,
    "tenant_id"
);
identifier!(
    /// The subject (`sub`) a token speaks for.
    Subject,
    "subject"
);
identifier!(
    /// A login session.
    SessionId,
    "session_id"
);
identifier!(
    /// An API client (caller of the issuer).
    ClientId,
    "client_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_empty_long_and_control_characters() {
        assert_eq!(
            TenantId::new(""),
            Err(IdError::Empty { field: "tenant_id" })
        );
        assert!(matches!(
            Subject::new("x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong {
                field: "subject",
                ..
            })
        ));
        assert!(matches!(
            KeyId::new("a\nb"),
            Err(IdError::ControlCharacter { field: "kid" })
        ));
        assert!(matches!(
            TenantId::new("acme\u{202E}emca"),
            Err(IdError::BidiControl { field: "tenant_id" })
        ));
        assert_eq!(
            TenantId::new("acme").map(|t| t.to_string()),
            Ok("acme".into())
        );
    }
}

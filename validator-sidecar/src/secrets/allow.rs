//! Which secrets this sidecar's application may read: the `--secret NAME` and
//! `--secret PREFIX*` list, and the shape of a secret name (the issuer's
//! `[a-z0-9][a-z0-9._/-]{0,127}`), both checked locally before anything reaches the
//! issuer.

/// Longest secret name (the issuer's bound).
pub const MAX_NAME_LEN: usize = 128;
/// Most `--secret` entries.
pub const MAX_ENTRIES: usize = 256;

/// The configured allow list. Empty: no secret may be read through this sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl AllowList {
    /// Parses the `--secret` entries: a full name, or a prefix followed by `*`
    /// (`payments/*`; a lone `*` allows every name the sidecar's credential may read).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} entries"));
        }
        let mut list = AllowList::default();
        for entry in entries.iter().map(|entry| entry.trim()) {
            if entry.is_empty() {
                continue;
            }
            match entry.strip_suffix('*') {
                Some(prefix) => {
                    if !prefix.is_empty() && !is_prefix(prefix) {
                        return Err(format!(
                            "`{entry}` is not a secret name prefix followed by `*`"
                        ));
                    }
                    list.prefixes.push(prefix.to_owned());
                }
                None => {
                    if !is_name(entry) {
                        return Err(format!(
                            "`{entry}` is not a secret name ([a-z0-9][a-z0-9._/-]{{0,127}}) or a prefix ending in `*`"
                        ));
                    }
                    list.names.push(entry.to_owned());
                }
            }
        }
        list.names.sort();
        list.names.dedup();
        Ok(list)
    }

    /// Returns whether `name` (already checked by [`is_name`]) may be read.
    pub fn allows(&self, name: &str) -> bool {
        self.names.iter().any(|allowed| allowed == name)
            || self
                .prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
    }

    /// Returns whether no secret may be read.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.prefixes.is_empty()
    }
}

/// Returns whether `name` is a well-formed secret name.
pub fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..].iter().all(|&byte| is_name_byte(byte))
}

/// A prefix is the start of a well-formed name (it may end in `/`, `-`, `.`...).
fn is_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    bytes.len() < MAX_NAME_LEN
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..].iter().all(|&byte| is_name_byte(byte))
}

fn is_name_byte(byte: u8) -> bool {
    matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<AllowList, String> {
        AllowList::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn names_and_prefixes_allow_exactly_what_they_say() {
        let allow = list(&["db/main", "payments/*", " "]).unwrap();
        assert!(allow.allows("db/main"));
        assert!(!allow.allows("db/main2"));
        assert!(!allow.allows("db"));
        assert!(allow.allows("payments/stripe"));
        assert!(!allow.allows("payments"));
        assert!(!allow.allows("other"));
        assert!(list(&[]).unwrap().is_empty());
        assert!(list(&["*"]).unwrap().allows("anything"));
    }

    #[test]
    fn malformed_entries_and_names_are_refused() {
        for bad in ["DB", "a b", "-x", "x**", "a*b", "/x*", "é"] {
            assert!(list(&[bad]).is_err(), "{bad} accepted");
        }
        assert!(is_name("a"));
        assert!(is_name(&"a".repeat(128)));
        assert!(!is_name(&"a".repeat(129)));
        assert!(!is_name(""));
        assert!(!is_name("a\0b"));
        assert!(!is_name("../etc"));
        assert!(is_name("a/../etc"));
        assert!(list(&vec!["a"; MAX_ENTRIES + 1]).is_err());
    }
}

//! Checks shared by `ValidateApiKey` and `ValidateOpaqueToken` at the sidecar: the hard
//! bounds of a request (the issuer's, so a request the issuer would refuse as
//! INVALID_ARGUMENT is refused here the same way, before anything is looked up), the
//! local shape and checksum check, and the permission and role check of a cached answer.

use tessera_common::credential::{self, CredentialError, CredentialKind, MAX_CREDENTIAL_BYTES};
use tonic::Status;

/// Most required permissions in one request.
pub const MAX_REQUIRED_PERMISSIONS: usize = 128;
/// Longest permission, role or subject, in bytes.
pub const MAX_TEXT_BYTES: usize = 128;

/// Refuses a request out of bounds with INVALID_ARGUMENT naming the field.
pub fn check_bounds(
    credential: &str,
    required_permissions: &[String],
    texts: &[(&'static str, &str)],
) -> Result<(), Status> {
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(Status::invalid_argument(format!(
            "credential: at most {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    if required_permissions.len() > MAX_REQUIRED_PERMISSIONS {
        return Err(Status::invalid_argument(format!(
            "required_permissions: at most {MAX_REQUIRED_PERMISSIONS} entries"
        )));
    }
    for permission in required_permissions {
        if permission.is_empty() {
            return Err(Status::invalid_argument(
                "required_permissions: entries must not be empty",
            ));
        }
        check_text("required_permissions", permission)?;
    }
    for (field, text) in texts {
        check_text(field, text)?;
    }
    Ok(())
}

/// The issuer's own text check (length, no line breaks or bidi controls).
fn check_text(field: &'static str, text: &str) -> Result<(), Status> {
    tessera_common::limits::check_text(field, text, MAX_TEXT_BYTES)
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

/// What the local check of a presented credential found.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// Well formed, of an expected kind, with this public id.
    Ok {
        kind: CredentialKind,
        id: &'a str,
    },
    Malformed,
    BadChecksum,
}

/// Checks the prefix, shape and checksum of `text` (trimmed, as the issuer does)
/// against the kinds `expected`; another kind of credential is malformed here. Touches
/// no cache and no issuer: a typo never leaves the pod.
pub fn shape<'a>(text: &'a str, expected: &[CredentialKind]) -> Shape<'a> {
    match credential::check(text) {
        Ok(shape) if expected.contains(&shape.kind) => {
            let start = shape.kind.prefix().len();
            Shape::Ok {
                kind: shape.kind,
                id: &text[start..start + shape.id_len],
            }
        }
        Ok(_) | Err(CredentialError::Malformed) => Shape::Malformed,
        Err(CredentialError::BadChecksum) => Shape::BadChecksum,
    }
}

/// Returns whether a credential granting `permissions` and `role` satisfies the
/// requirements (every required permission; the role when one is required).
pub fn satisfies(
    permissions: &[String],
    role: &str,
    required_permissions: &[String],
    required_role: &str,
) -> bool {
    required_permissions
        .iter()
        .all(|required| permissions.contains(required))
        && (required_role.is_empty() || required_role == role)
}

#[cfg(test)]
mod tests {
    use tessera_common::credential::Credential;

    use super::*;

    #[test]
    fn bounds_are_the_issuers() {
        let key = "k".repeat(MAX_CREDENTIAL_BYTES);
        assert!(check_bounds(&key, &[], &[]).is_ok());
        let long = format!("{key}k");
        let code = |result: Result<(), Status>| result.unwrap_err().code();
        assert_eq!(
            code(check_bounds(&long, &[], &[])),
            tonic::Code::InvalidArgument
        );
        let many = vec!["p".to_owned(); MAX_REQUIRED_PERMISSIONS + 1];
        assert_eq!(
            code(check_bounds("", &many, &[])),
            tonic::Code::InvalidArgument
        );
        let wide = vec!["p".repeat(MAX_TEXT_BYTES + 1)];
        assert_eq!(
            code(check_bounds("", &wide, &[])),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(check_bounds("", &[String::new()], &[])),
            tonic::Code::InvalidArgument
        );
        let role = "r".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            code(check_bounds("", &[], &[("required_role", &role)])),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn shape_tells_kinds_typos_and_forgeries_apart() {
        let key = Credential::generate(CredentialKind::ApiKey).expose();
        let api = [CredentialKind::ApiKey];
        assert!(matches!(shape(&key, &api), Shape::Ok { id, .. } if key[4..].starts_with(id)));
        // One character changed in the secret: the checksum no longer matches.
        let mut typo = key.clone().into_bytes();
        typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(shape(&typo, &api), Shape::BadChecksum);
        // A well-formed credential of another kind is malformed here.
        let service = Credential::generate(CredentialKind::Service).expose();
        assert_eq!(shape(&service, &api), Shape::Malformed);
        assert_eq!(shape("tbk_nope", &api), Shape::Malformed);
    }

    #[test]
    fn satisfies_needs_every_permission_and_the_role() {
        let granted = vec!["read".to_owned(), "write".to_owned()];
        assert!(satisfies(&granted, "admin", &[], ""));
        assert!(satisfies(&granted, "admin", &["read".into()], "admin"));
        assert!(!satisfies(&granted, "admin", &["delete".into()], ""));
        assert!(!satisfies(&granted, "admin", &[], "owner"));
    }
}

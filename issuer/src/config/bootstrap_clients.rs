//! Declared API clients (`--bootstrap-clients`, `TESSERA_BOOTSTRAP_CLIENTS`,
//! `bootstrap_clients = [...]`): credentials the issuer creates on start and writes to a
//! file, so that a deployment (docker compose, a pod with a shared volume) needs no manual
//! `clients create` step between starting the issuer and starting its sidecars.
//!
//! Each entry is one line of comma-separated `key=value` pairs, in the style of
//! `docker run --mount`:
//! `name=sidecar,scope=bundle:read,file=/run/tessera-credentials/sidecar.token`;
//! `scope` and `tenant` may repeat (no `tenant`: every tenant). Entries are separated by
//! `;` in the flag and the variable, or given as separate flags or list items. A value
//! cannot hold `,` `;` or `=`. Creating them is `bootstrap.rs`; this file only parses.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{ConfigError, invalid};
use crate::auth::Scope;

/// The setting's name, which every refusal names.
const FIELD: &str = "bootstrap_clients";

/// One client to create on start unless `file` already holds its valid credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapClient {
    /// The client's name (shown by `clients list` and in the audit log).
    pub name: String,
    /// Its scopes, at least one.
    pub scopes: Vec<Scope>,
    /// Tenants it may act on; empty means every tenant.
    pub tenants: Vec<String>,
    /// Where its credential is written, mode 0600.
    pub file: PathBuf,
}

/// Parses every entry; names and files must be unique.
pub(super) fn parse_all(entries: &[String]) -> Result<Vec<BootstrapClient>, ConfigError> {
    let mut clients = Vec::new();
    let mut names = BTreeSet::new();
    let mut files = BTreeSet::new();
    for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
        let client = parse(entry)?;
        if !names.insert(client.name.clone()) {
            return Err(invalid(
                FIELD,
                format!("client name `{}` declared twice", client.name),
            ));
        }
        if !files.insert(client.file.clone()) {
            return Err(invalid(
                FIELD,
                format!("file {} declared twice", client.file.display()),
            ));
        }
        clients.push(client);
    }
    Ok(clients)
}

/// Parses `name=N,scope=S[,scope=…][,tenant=T…],file=F`.
fn parse(entry: &str) -> Result<BootstrapClient, ConfigError> {
    let mut name = None;
    let mut file = None;
    let mut scopes = Vec::new();
    let mut tenants = Vec::new();
    for pair in entry.split(',').map(str::trim) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(
                FIELD,
                format!("`{pair}` in `{entry}` is not key=value"),
            ));
        };
        let value = value.trim();
        if value.is_empty() || value.contains('=') {
            return Err(invalid(FIELD, format!("`{pair}` in `{entry}`: bad value")));
        }
        match key.trim() {
            "name" if name.is_none() => name = Some(value.to_owned()),
            "file" if file.is_none() => file = Some(PathBuf::from(value)),
            "scope" => scopes.push(Scope::parse(value).ok_or_else(|| {
                invalid(
                    FIELD,
                    format!(
                        "unknown scope `{value}` in `{entry}` (admin, issue, introspect, \
                         bundle:read)"
                    ),
                )
            })?),
            "tenant" => tenants.push(value.to_owned()),
            "name" | "file" => {
                return Err(invalid(FIELD, format!("`{key}` given twice in `{entry}`")));
            }
            other => {
                return Err(invalid(
                    FIELD,
                    format!("unknown key `{other}` in `{entry}` (name, scope, tenant, file)"),
                ));
            }
        }
    }
    let missing = |what: &str| invalid(FIELD, format!("`{entry}` has no {what}="));
    let name = name.ok_or_else(|| missing("name"))?;
    let file = file.ok_or_else(|| missing("file"))?;
    if scopes.is_empty() {
        return Err(missing("scope"));
    }
    scopes.dedup();
    Ok(BootstrapClient {
        name,
        scopes,
        tenants,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &[&str]) -> Vec<String> {
        text.iter().map(|entry| (*entry).to_owned()).collect()
    }

    #[test]
    fn parses_names_scopes_tenants_and_files() {
        let clients = parse_all(&entries(&[
            "name=sidecar,scope=bundle:read,file=/run/creds/sidecar.token",
            " name=demo , scope=issue, scope=introspect, tenant=demo, tenant=acme, file=demo.token ",
        ]))
        .unwrap();
        assert_eq!(
            clients,
            [
                BootstrapClient {
                    name: "sidecar".into(),
                    scopes: vec![Scope::BundleRead],
                    tenants: vec![],
                    file: "/run/creds/sidecar.token".into(),
                },
                BootstrapClient {
                    name: "demo".into(),
                    scopes: vec![Scope::Issue, Scope::Introspect],
                    tenants: vec!["demo".into(), "acme".into()],
                    file: "demo.token".into(),
                },
            ]
        );
        assert!(parse_all(&entries(&["", "  "])).unwrap().is_empty());
    }

    #[test]
    fn refusals_name_the_setting_and_the_problem() {
        let cases = [
            ("name=a,file=f", "no scope="),
            ("scope=issue,file=f", "no name="),
            ("name=a,scope=issue", "no file="),
            ("name=a,scope=write,file=f", "unknown scope `write`"),
            ("name=a,scope=issue,file=f,owner=me", "unknown key `owner`"),
            ("name=a,scope=issue,file=f,name=b", "`name` given twice"),
            ("name=a,scope=issue,file=", "bad value"),
            ("name=a,scope=issue,file", "not key=value"),
        ];
        for (entry, expected) in cases {
            let error = parse_all(&entries(&[entry])).unwrap_err();
            assert_eq!(error.field, FIELD, "{entry}");
            assert!(error.message.contains(expected), "{entry}: {error}");
        }
        let twice = parse_all(&entries(&[
            "name=a,scope=issue,file=f",
            "name=a,scope=issue,file=g",
        ]));
        assert!(twice.unwrap_err().message.contains("declared twice"));
        let same_file = parse_all(&entries(&[
            "name=a,scope=issue,file=f",
            "name=b,scope=issue,file=f",
        ]));
        assert!(same_file.unwrap_err().message.contains("declared twice"));
    }
}

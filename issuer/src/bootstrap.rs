//! Declared API clients (`--bootstrap-clients`), created on start: a deployment declares
//! the credentials its other parts need (a sidecar's `bundle:read`, a demo application's
//! `issue`) and where to put them, and the issuer writes each one, mode 0600, before it
//! binds a port. Once the issuer is ready the files exist, so nothing has to be run by
//! hand between starting the issuer and starting what uses them.
//!
//! Idempotent: a file that already holds a working credential of a client with the
//! declared name, scopes and tenants is left as it is (a restart changes nothing). A
//! missing, unreadable or no longer valid credential (disabled client, another issuer's
//! database) gets a new client; when the file held a working credential whose client no
//! longer matches the declaration, that client is disabled once its replacement is
//! written, so a narrowed declaration leaves no wider credential behind.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tessera_common::ids::ClientId;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::{info, warn};

use crate::audit::{Actor, AuditAction};
use crate::auth::{Authenticator, Caller};
use crate::config::BootstrapClient;
use crate::store::{ClientRecord, Store};

/// What to do about one declared client, given what its file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The file holds a working credential matching the declaration.
    Keep,
    /// Create a client and write its credential; then disable `replaces`, the working
    /// client the file held that no longer matches the declaration.
    Create { replaces: Option<ClientId> },
}

/// Decides from the declaration and the client whose working credential the file holds
/// (`None`: no file, or not a credential this issuer accepts).
pub fn decide(declared: &BootstrapClient, held: Option<&ClientRecord>) -> Decision {
    let Some(record) = held else {
        return Decision::Create { replaces: None };
    };
    let mut declared_scopes: Vec<&str> =
        declared.scopes.iter().map(|scope| scope.as_str()).collect();
    let mut held_scopes: Vec<&str> = record.scopes.iter().map(String::as_str).collect();
    declared_scopes.sort_unstable();
    held_scopes.sort_unstable();
    let mut declared_tenants = declared.tenants.clone();
    let mut held_tenants = record.tenants.clone();
    declared_tenants.sort_unstable();
    held_tenants.sort_unstable();
    if record.name == declared.name
        && declared_scopes == held_scopes
        && declared_tenants == held_tenants
    {
        Decision::Keep
    } else {
        Decision::Create {
            replaces: Some(record.client_id.clone()),
        }
    }
}

/// Ensures every declared client's file holds a working credential (see the module
/// comment).
pub async fn ensure_clients(
    auth: &Authenticator,
    store: &Arc<dyn Store>,
    clients: &[BootstrapClient],
) -> anyhow::Result<()> {
    for declared in clients {
        let held = held_client(auth, store, &declared.file).await?;
        match decide(declared, held.as_ref()) {
            Decision::Keep => {
                info!(name = %declared.name, path = %declared.file.display(), "bootstrap client credential is valid; kept");
            }
            Decision::Create { replaces } => {
                create(auth, declared).await?;
                if let Some(old) = replaces {
                    disable(auth, store, &old, &declared.name).await?;
                }
            }
        }
    }
    Ok(())
}

/// The record of the client whose credential `path` holds, if the file exists and the
/// credential authenticates (right secret, client enabled).
async fn held_client(
    auth: &Authenticator,
    store: &Arc<dyn Store>,
    path: &Path,
) -> anyhow::Result<Option<ClientRecord>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let Ok(header) = MetadataValue::try_from(format!("Bearer {}", text.trim())) else {
        return Ok(None);
    };
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", header);
    let Ok(Caller { client_id, .. }) = auth.authenticate(&metadata).await else {
        return Ok(None);
    };
    Ok(store.client(&client_id).await?)
}

async fn create(auth: &Authenticator, declared: &BootstrapClient) -> anyhow::Result<()> {
    let audit = Actor::system(
        uuid::Uuid::now_v7().to_string(),
        "bootstrap client credential",
    )
    .entry(auth.now(), AuditAction::ClientCreate, String::new());
    let (record, credential) = auth
        .create_client(
            declared.name.clone(),
            declared.scopes.clone(),
            declared.tenants.clone(),
            audit,
        )
        .await
        .with_context(|| format!("creating bootstrap client {}", declared.name))?;
    let text = zeroize::Zeroizing::new(credential.expose());
    crate::files::write_private(&declared.file, text.as_bytes()).with_context(|| {
        format!(
            "writing the credential of bootstrap client {} to {}",
            declared.name,
            declared.file.display()
        )
    })?;
    info!(
        name = %declared.name,
        client_id = %record.client_id,
        path = %declared.file.display(),
        "created a bootstrap client credential (mode 0600)"
    );
    Ok(())
}

async fn disable(
    auth: &Authenticator,
    store: &Arc<dyn Store>,
    client_id: &ClientId,
    name: &str,
) -> anyhow::Result<()> {
    let audit = Actor::system(
        uuid::Uuid::now_v7().to_string(),
        "bootstrap client declaration changed",
    )
    .entry(
        auth.now(),
        AuditAction::ClientDisable,
        client_id.to_string(),
    );
    store
        .disable_client(client_id, auth.now(), audit)
        .await
        .with_context(|| format!("disabling the replaced bootstrap client {client_id}"))?;
    auth.forget(client_id).await;
    warn!(%name, %client_id, "bootstrap client declaration changed; disabled the client it replaced");
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_common::credential::{CredentialKind, PepperVersion};

    use super::*;
    use crate::auth::Scope;

    fn declared() -> BootstrapClient {
        BootstrapClient {
            name: "sidecar".into(),
            scopes: vec![Scope::BundleRead],
            tenants: vec!["b".into(), "a".into()],
            file: "/creds/sidecar.token".into(),
        }
    }

    fn record(name: &str, scopes: &[&str], tenants: &[&str]) -> ClientRecord {
        ClientRecord {
            client_id: ClientId::new("abcdefghijklmnop").unwrap(),
            name: name.into(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
            credential_kind: CredentialKind::IssuerCaller,
            secret_hash: Vec::new(),
            pepper_version: PepperVersion::FIRST,
            created_at: tessera_common::UnixMillis(0),
            disabled_at: None,
        }
    }

    #[test]
    fn a_matching_working_credential_is_kept_and_anything_else_replaced() {
        let declared = declared();
        assert_eq!(decide(&declared, None), Decision::Create { replaces: None });
        assert_eq!(
            decide(
                &declared,
                Some(&record("sidecar", &["bundle:read"], &["a", "b"]))
            ),
            Decision::Keep
        );
        let replaced = Decision::Create {
            replaces: Some(ClientId::new("abcdefghijklmnop").unwrap()),
        };
        for held in [
            record("other", &["bundle:read"], &["a", "b"]),
            record("sidecar", &["bundle:read", "issue"], &["a", "b"]),
            record("sidecar", &["bundle:read"], &[]),
        ] {
            assert_eq!(decide(&declared, Some(&held)), replaced, "{}", held.name);
        }
    }
}

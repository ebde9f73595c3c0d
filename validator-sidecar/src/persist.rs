//! The bundle cache file: the last bundle and when the issuer was last heard from,
//! written atomically (temporary file in the same directory, mode 0600, fsync, rename) so
//! a restarted sidecar can validate before the issuer is reachable.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_common::UnixMillis;
use tessera_common::bundle::TrustBundle;
use tokio::sync::watch;

use crate::state::BundleState;

/// Version of the file layout; a file of another version is ignored.
const FORMAT_VERSION: u32 = 1;
/// Quiet period after a change before the file is written, so a burst of deltas costs
/// one write.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest interval between writes while only heartbeats arrive, so the recorded
/// last-contact instant (and thus the staleness after a restart) stays accurate.
pub const CONTACT_REFRESH: Duration = Duration::from_secs(30);

/// What the cache file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct CachedBundle {
    pub format: u32,
    /// Last message from the issuer, milliseconds since the epoch.
    pub last_contact: Option<UnixMillis>,
    pub bundle: TrustBundle,
}

/// A cache file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a bundle cache: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unsupported format version {version}")]
    Version { path: PathBuf, version: u32 },
}

/// Loads the cache file at `path`; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<CachedBundle>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let cached: CachedBundle =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Format {
            path: path.to_owned(),
            source,
        })?;
    if cached.format != FORMAT_VERSION {
        return Err(PersistError::Version {
            path: path.to_owned(),
            version: cached.format,
        });
    }
    Ok(Some(cached))
}

/// Writes `cached` to `path` atomically with mode 0600.
pub fn save(path: &Path, cached: &CachedBundle) -> Result<(), PersistError> {
    let io_error = |source| PersistError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec(cached).map_err(|source| PersistError::Format {
        path: path.to_owned(),
        source,
    })?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(source) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io_error(source));
    }
    Ok(())
}

/// Returns the last-contact instant to trust from a file read at `loaded_at`: the file's
/// value, but never later than the load. The file is not authenticated, and a value in
/// the future would hold staleness at zero (`touch` keeps the latest instant) and so
/// disable fail-closed serving; a past value is kept, so a restart does not make an old
/// bundle look fresh.
pub fn trusted_last_contact(recorded: UnixMillis, loaded_at: UnixMillis) -> UnixMillis {
    recorded.min(loaded_at)
}

/// Loads the cache file into `state` at `now`; logs and carries on when it is unusable.
pub fn restore(path: &Path, state: &BundleState, now: UnixMillis) {
    match load(path) {
        Ok(Some(cached)) => {
            let revision = cached.bundle.revision.0;
            // Contact first, bundle second, so that no readiness check sees the bundle
            // without its last contact (see `Subscription::apply`).
            if let Some(recorded) = cached.last_contact {
                if recorded > now {
                    tracing::warn!(
                        path = %path.display(),
                        "persisted last contact lies in the future; using the load time"
                    );
                }
                state.touch(trusted_last_contact(recorded, now));
            }
            state.replace(cached.bundle);
            tracing::info!(path = %path.display(), revision, "loaded the persisted bundle");
        }
        Ok(None) => tracing::info!(path = %path.display(), "no persisted bundle yet"),
        Err(error) => tracing::warn!(%error, "ignoring the persisted bundle"),
    }
}

/// Writes the bundle after each change (debounced) and at least every
/// [`CONTACT_REFRESH`] while the issuer keeps in touch, until `shutdown` fires; then
/// writes once more.
pub async fn run_writer(
    path: PathBuf,
    state: Arc<BundleState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = state.subscribe();
    // A bundle that arrived before `subscribe` counts as already seen by `changes`, so
    // without this first write it would wait for the next change or CONTACT_REFRESH.
    let mut written = write_if_changed(&path, &state, None).await;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
            () = tokio::time::sleep(CONTACT_REFRESH) => {}
            _ = shutdown.changed() => break,
        }
        written = write_if_changed(&path, &state, written).await;
    }
    write_if_changed(&path, &state, written).await;
}

/// Writes the current bundle unless `written` (revision, last contact) is current.
async fn write_if_changed(
    path: &Path,
    state: &BundleState,
    written: Option<(u64, Option<UnixMillis>)>,
) -> Option<(u64, Option<UnixMillis>)> {
    let view = state.view()?;
    let current = (view.bundle.revision.0, state.last_contact());
    if written == Some(current) {
        return written;
    }
    let cached = CachedBundle {
        format: FORMAT_VERSION,
        last_contact: current.1,
        bundle: view.bundle.clone(),
    };
    let path_owned = path.to_owned();
    match tokio::task::spawn_blocking(move || save(&path_owned, &cached)).await {
        Ok(Ok(())) => Some(current),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not persist the bundle");
            written
        }
        Err(error) => {
            tracing::warn!(%error, "bundle writer task failed");
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tessera_common::bundle::ValidationPolicy;

    use super::*;

    #[test]
    fn saved_bundle_loads_back_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        assert!(load(&path).unwrap().is_none());
        let mut bundle = TrustBundle::empty(ValidationPolicy {
            issuer: "tessera".into(),
            audiences: vec!["tessera-api".into()],
            leeway_seconds: 30,
            max_token_ttl_seconds: 900,
            token_lifetimes: Default::default(),
        });
        bundle.revision = tessera_common::bundle::Revision(7);
        let cached = CachedBundle {
            format: FORMAT_VERSION,
            last_contact: Some(UnixMillis(42)),
            bundle: bundle.clone(),
        };
        save(&path, &cached).unwrap();
        save(&path, &cached).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.bundle, bundle);
        assert_eq!(loaded.last_contact, Some(UnixMillis(42)));
        // Only the cache file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(load(&path), Err(PersistError::Format { .. })));
    }

    #[test]
    fn a_future_last_contact_in_the_file_counts_from_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        let loaded_at = UnixMillis(1_000_000);
        let year = 365 * 24 * 3600 * 1000;
        let cached = CachedBundle {
            format: FORMAT_VERSION,
            last_contact: Some(UnixMillis(loaded_at.0 + year)),
            bundle: TrustBundle::empty(ValidationPolicy {
                issuer: "tessera".into(),
                audiences: vec![],
                leeway_seconds: 30,
                max_token_ttl_seconds: 900,
                token_lifetimes: Default::default(),
            }),
        };
        save(&path, &cached).unwrap();
        let state = BundleState::new(Vec::new());
        restore(&path, &state, loaded_at);
        assert_eq!(state.last_contact(), Some(loaded_at));
        let later = UnixMillis(loaded_at.0 + 11_000);
        assert_eq!(
            state.readiness(
                later,
                Duration::from_secs(10),
                crate::config::StalePolicy::FailClosed
            ),
            crate::state::Readiness::Stale
        );
        // A past instant is kept as it was.
        assert_eq!(
            trusted_last_contact(UnixMillis(5), loaded_at),
            UnixMillis(5)
        );
    }
}

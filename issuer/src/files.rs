//! Small file helpers for secrets on disk (KEK, admin token, credentials the CLI writes
//! with `--out`, the data directory and the SQLite files): secret files are created with
//! mode 0600 before any byte is written and replaced atomically; the data directory is
//! 0700 so nobody else can even list what it holds.

use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a file holding a secret: read and write for the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of a directory holding secrets: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Writes `contents` to `path` with mode 0600 (temp file + rename, so a reader sees the old
/// or the new contents, never half, and an existing file's looser mode is not inherited).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let temp = temp_path(path);
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Creates the directory `path` with mode 0700, or tightens an existing one to 0700.
/// Returns the mode it had when it was changed (for the caller to warn about), `None` when
/// it was created or already private.
pub fn ensure_private_dir(path: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::metadata(path) {
        Ok(metadata) => tighten(path, metadata.permissions().mode(), PRIVATE_DIR_MODE),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR_MODE)
                .create(path)?;
            // The umask may have cleared bits, never added any; set the mode exactly anyway.
            std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_DIR_MODE))?;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Creates the empty file `path` with mode 0600 when it is missing, or tightens an
/// existing one to 0600. Returns the mode it had when it was changed. Used before SQLite
/// opens its database, because SQLite creates the file (and its `-wal` and `-shm`, which
/// copy the database file's mode) with 0644 less the umask.
pub fn ensure_private_file(path: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            tighten(path, mode, PRIVATE_FILE_MODE)
        }
        Err(error) => Err(error),
    }
}

/// Tightens an existing file's mode to 0600 if it exists; `Ok(None)` when it is missing or
/// already private.
pub fn tighten_if_present(path: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::metadata(path) {
        Ok(metadata) => tighten(path, metadata.permissions().mode(), PRIVATE_FILE_MODE),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn tighten(path: &Path, mode: u32, wanted: u32) -> std::io::Result<Option<u32>> {
    let permission_bits = mode & 0o7777;
    if permission_bits == wanted {
        return Ok(None);
    }
    std::fs::set_permissions(path, Permissions::from_mode(wanted))?;
    Ok(Some(permission_bits))
}

/// `<path>.tmp`: beside the target (so the rename stays on one file system) and distinct
/// per target name (`a.token` and `a.session` must not share `a.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_private_replaces_a_world_readable_file_with_a_0600_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn ensure_private_dir_creates_0700_and_tightens_an_open_one() {
        let root = tempfile::tempdir().unwrap();
        let created = root.path().join("a/data");
        assert_eq!(ensure_private_dir(&created).unwrap(), None);
        assert_eq!(mode(&created), 0o700);

        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&open).unwrap(), Some(0o755));
        assert_eq!(mode(&open), 0o700);
        assert_eq!(ensure_private_dir(&open).unwrap(), None);
    }

    #[test]
    fn ensure_private_file_creates_0600_and_tightens_an_open_one() {
        let root = tempfile::tempdir().unwrap();
        let created = root.path().join("tessera.db");
        assert_eq!(ensure_private_file(&created).unwrap(), None);
        assert_eq!(mode(&created), 0o600);
        assert_eq!(std::fs::metadata(&created).unwrap().len(), 0);

        let open = root.path().join("old.db");
        std::fs::write(&open, "data").unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ensure_private_file(&open).unwrap(), Some(0o644));
        assert_eq!(mode(&open), 0o600);
        assert_eq!(std::fs::read(&open).unwrap(), b"data");

        assert_eq!(
            tighten_if_present(&root.path().join("absent")).unwrap(),
            None
        );
    }
}

//! Keys at rest: while issuing and rotating with debug logging, every private key is
//! unwrapped from the SQLite file with the KEK, and neither those PKCS#8 bytes (raw,
//! base64, base64url, hex, 32-byte windows) nor the KEK nor the admin credential appear in
//! the database files or the captured log. A whole journey (clients, sessions, refresh,
//! emergency) leaves no credential, token or key in the issuer's and the sidecar's logs,
//! the database or the sidecar's bundle cache; the data directory and every secret file in
//! it are private to the issuer's user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use tessera_common::keys::KeySetName;
use tessera_issuer::kek::{Kek, KekVersion};
use tessera_issuer::store::WrappedKey;

use crate::sidecar::harness::{Sidecar, bundle_reader_credential, issue};
use crate::support::issuer::{Issuer, read_trimmed};

#[test]
fn private_keys_never_appear_in_clear_in_db_or_logs() {
    let root = tempfile::tempdir().unwrap();
    let mut issuer = Issuer::builder(root.path(), "issuer")
        .env("RUST_LOG", "debug")
        .start();
    for subject in ["alice", "bob"] {
        issuer.cli_json(&["token", "issue", "--subject", subject, "--tenant", "acme"]);
    }
    // A replaced key may lose its wrapped private key, so take the first ones while the
    // issuer runs (WAL lets a reader in beside the writer).
    let mut private_keys = unwrap_all_private_keys(&issuer.data_dir);
    issuer.cli_json(&["keys", "rotate", "--reason", "test"]);
    issuer.cli_json(&["token", "issue", "--subject", "carol", "--tenant", "acme"]);
    let status = issuer.terminate(Duration::from_secs(15));
    assert!(status.success(), "issuer exited with {status}");

    let data_dir = issuer.data_dir.clone();
    let kek_text = read_trimmed(&data_dir.join("kek"));
    let kek_raw = STANDARD.decode(&kek_text).expect("the KEK file is base64");
    let admin_token = read_trimmed(&data_dir.join("admin.token"));
    for (kid, pkcs8) in unwrap_all_private_keys(&data_dir) {
        if !private_keys.iter().any(|(known, _)| *known == kid) {
            private_keys.push((kid, pkcs8));
        }
    }
    assert!(
        private_keys.len() >= 3,
        "expected the first access key, its successor and the action key, found {:?}",
        private_keys.iter().map(|(kid, _)| kid).collect::<Vec<_>>()
    );

    let database = database_bytes(&data_dir);
    let log = std::fs::read(&issuer.log_path).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("DEBUG"),
        "RUST_LOG=debug produced no debug lines, so the log proves little"
    );

    for (kid, pkcs8) in &private_keys {
        for (encoding, needle) in encodings_of(pkcs8) {
            assert!(
                find(&database, &needle).is_none(),
                "private key {kid} ({encoding}) found in the database files"
            );
            assert!(
                find(&log, &needle).is_none(),
                "private key {kid} ({encoding}) found in the log"
            );
        }
    }
    for (what, needle) in [
        ("KEK (base64)", kek_text.as_bytes().to_vec()),
        ("KEK (raw)", kek_raw),
        ("admin credential", admin_token.as_bytes().to_vec()),
    ] {
        assert!(find(&log, &needle).is_none(), "{what} found in the log");
        assert!(
            find(&database, &needle).is_none(),
            "{what} found in the database files"
        );
    }
}

#[test]
fn data_dir_database_kek_and_admin_token_are_private_even_when_they_were_not() {
    let root = tempfile::tempdir().unwrap();
    let mut issuer = Issuer::start(root.path());
    let data_dir = issuer.data_dir.clone();
    assert_private(&data_dir);
    issuer.cli_json(&["keys", "rotate", "--reason", "write to the WAL"]);
    let status = issuer.terminate(Duration::from_secs(15));
    assert!(status.success(), "issuer exited with {status}");

    // An older version (or an operator's `cp`) left everything world-readable.
    for path in private_paths(&data_dir) {
        if path.exists() {
            set_mode(&path, if path.is_dir() { 0o755 } else { 0o644 });
        }
    }
    let issuer = Issuer::start(root.path());
    assert_private(&data_dir);
    let log = issuer.log();
    for what in ["data directory", "database file", "secret file"] {
        assert!(
            log.contains(&format!("{what} was")),
            "no warning about the {what} in:\n{log}"
        );
    }
}

#[test]
fn no_secret_of_a_journey_reaches_logs_database_or_bundle_cache() {
    let root = tempfile::tempdir().unwrap();
    let mut issuer = Issuer::builder(root.path(), "issuer")
        .env("RUST_LOG", "debug")
        .start();
    let sidecar_credential = bundle_reader_credential(&issuer, root.path());
    let bundle_cache = root.path().join("sidecar.bundle.json");
    let mut sidecar = Sidecar::builder(
        root.path(),
        "sidecar",
        &issuer.grpc_url(),
        &sidecar_credential,
    )
    .bundle_cache(&bundle_cache)
    .start();
    let client = sidecar.client();

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut remember = |what: &str, secret: &str| {
        assert!(!secret.is_empty(), "{what} is empty");
        secrets.push((what.to_owned(), secret.as_bytes().to_vec()));
        // The secret half of an opaque credential alone, too: `tbc_<id>_<secret><crc>`.
        let opaque = secret.starts_with("tb");
        if let Some((_, secret_part)) = secret
            .split_once('_')
            .and_then(|(_, rest)| rest.split_once('_'))
            .filter(|_| opaque)
        {
            secrets.push((
                format!("{what} (secret part)"),
                secret_part.as_bytes().to_vec(),
            ));
        }
    };
    remember("admin credential", &issuer.admin_token());
    remember("sidecar credential", &read_trimmed(&sidecar_credential));

    let issuer_client_file = root.path().join("issuer-client.credential");
    issuer.cli_json(&[
        "clients",
        "create",
        "--name",
        "journey",
        "--scope",
        "issue",
        "--out",
        issuer_client_file.to_str().unwrap(),
    ]);
    remember(
        "issue client credential",
        &read_trimmed(&issuer_client_file),
    );
    let session_file = root.path().join("alice.session");
    let session_path = session_file.to_str().unwrap();
    issuer.cli_json(&[
        "session",
        "create",
        "--subject",
        "alice",
        "--tenant",
        "acme",
        "--out",
        session_path,
    ]);
    let first = session_tokens(&session_file);
    issuer.cli_json(&[
        "session",
        "refresh",
        &format!("@{session_path}"),
        "--out",
        session_path,
    ]);
    let second = session_tokens(&session_file);
    for (what, token) in [
        ("first access token", &first.0),
        ("first refresh token", &first.1),
        ("second access token", &second.0),
        ("second refresh token", &second.1),
    ] {
        remember(what, token);
    }
    let issued = issue(&issuer, "bob", 600, &[]);
    remember("issued access token", &issued.token);
    // Validations fill the sidecar's verified-token cache (in memory; never on disk).
    for token in [&issued.token, &second.0] {
        assert!(
            client.validate(token).valid,
            "a journey token did not validate"
        );
    }
    issuer.cli_json(&["keys", "rotate", "--reason", "journey"]);
    let mut private_keys = unwrap_all_private_keys(&issuer.data_dir);
    issuer.cli_json(&[
        "emergency",
        "--global",
        "--incident",
        "journey",
        "--reason",
        "journey",
    ]);
    let after = issue(&issuer, "carol", 600, &[]);
    remember("post-emergency access token", &after.token);
    let accepted = crate::support::wait::poll_until(
        crate::support::wait::patience(Duration::from_secs(10)),
        Duration::from_millis(20),
        || client.validate(&after.token).valid.then_some(()),
    );
    assert!(
        accepted.is_some(),
        "the sidecar never learnt the emergency successor"
    );
    private_keys.extend(unwrap_all_private_keys(&issuer.data_dir));

    drop(client);
    sidecar.stop(Duration::from_secs(15));
    let status = issuer.terminate(Duration::from_secs(15));
    assert!(status.success(), "issuer exited with {status}");

    let kek_text = read_trimmed(&issuer.data_dir.join("kek"));
    secrets.push(("KEK (base64)".into(), kek_text.as_bytes().to_vec()));
    secrets.push((
        "KEK (raw)".into(),
        STANDARD.decode(&kek_text).expect("base64 KEK"),
    ));
    for (kid, pkcs8) in &private_keys {
        for (encoding, needle) in encodings_of(pkcs8) {
            secrets.push((format!("private key {kid} ({encoding})"), needle));
        }
    }
    let places = [
        ("issuer log", std::fs::read(&issuer.log_path).unwrap()),
        ("sidecar log", std::fs::read(&sidecar.log_path).unwrap()),
        ("database files", database_bytes(&issuer.data_dir)),
        (
            "bundle cache",
            std::fs::read(&bundle_cache).expect("the sidecar wrote its cache"),
        ),
    ];
    assert!(
        String::from_utf8_lossy(&places[0].1).contains("DEBUG"),
        "RUST_LOG=debug produced no debug lines, so the log proves little"
    );
    for (place, bytes) in &places {
        for (what, needle) in &secrets {
            assert!(find(bytes, needle).is_none(), "{what} found in the {place}");
        }
    }
}

/// `(access_token, refresh_token)` from a session file written by `--out`, which must be
/// mode 0600.
fn session_tokens(path: &Path) -> (String, String) {
    assert_eq!(mode(path), 0o600, "{}", path.display());
    let session: serde_json::Value =
        serde_json::from_str(&read_trimmed(path)).expect("a JSON session file");
    let field = |name: &str| session[name].as_str().unwrap_or_default().to_owned();
    (field("access_token"), field("refresh_token"))
}

/// The data directory and the files in it that hold secrets.
fn private_paths(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths = vec![data_dir.to_path_buf()];
    for name in [
        "tessera.db",
        "tessera.db-wal",
        "tessera.db-shm",
        "kek",
        "admin.token",
    ] {
        paths.push(data_dir.join(name));
    }
    paths
}

/// Asserts the data directory is 0700 and every secret file in it that exists is 0600
/// (the database, KEK and admin token must exist).
fn assert_private(data_dir: &Path) {
    for path in private_paths(data_dir) {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let required = !name.contains('-');
        if !required && !path.exists() {
            continue;
        }
        let wanted = if path == data_dir { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), wanted, "mode of {}", path.display());
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The bytes of every SQLite file in `data_dir` (database, WAL, shared memory, journal):
/// everything a copy of the directory would leak.
pub(crate) fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if let Ok(bytes) = std::fs::read(data_dir.join(format!("tessera.db{suffix}"))) {
            database.extend_from_slice(&bytes);
        }
    }
    database
}

/// A wrapped private key as stored in `signing_keys`.
pub(crate) struct StoredWrappedKey {
    pub kid: String,
    pub key_set: KeySetName,
    /// `nonce ‖ ciphertext ‖ tag`, exactly as in the column.
    pub wrapped: Vec<u8>,
}

/// Every `(kid, PKCS#8 DER)` from `signing_keys`, unwrapped with `<data-dir>/kek`.
pub(crate) fn unwrap_all_private_keys(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let kek = Kek::from_file(&data_dir.join("kek")).expect("KEK file");
    wrapped_private_keys(data_dir)
        .into_iter()
        .map(|stored| {
            let pkcs8 = kek
                .unwrap(
                    stored.key_set,
                    &stored.kid,
                    &WrappedKey {
                        kek_version: KekVersion::FIRST,
                        sealed: stored.wrapped,
                    },
                )
                .unwrap_or_else(|error| {
                    panic!("cannot unwrap {} with the KEK file: {error}", stored.kid)
                });
            // JWS sets hold PKCS#8 DER; the webhook (HMAC) set a raw 32-byte secret.
            let expected_form = if stored.key_set.is_published() {
                pkcs8.len() >= 48 && pkcs8[0] == 0x30
            } else {
                pkcs8.len() == 32
            };
            assert!(expected_form, "unwrapped {} is not DER", stored.kid);
            (stored.kid, pkcs8.to_vec())
        })
        .collect()
}

/// Every wrapped private key still stored in `<data-dir>/tessera.db`, oldest first. Opens
/// the file read-only, beside a running issuer (WAL lets a reader in beside the writer).
pub(crate) fn wrapped_private_keys(data_dir: &Path) -> Vec<StoredWrappedKey> {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("tessera.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open tessera.db");
    let mut statement = db
        .prepare(
            "SELECT kid, key_set, wrapped_private FROM signing_keys \
             WHERE wrapped_private IS NOT NULL ORDER BY created_at",
        )
        .expect("signing_keys has kid, key_set, wrapped_private");
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap();
    rows.map(|row| {
        let (kid, key_set, wrapped) = row.unwrap();
        let key_set: KeySetName = key_set
            .parse()
            .unwrap_or_else(|_| panic!("unknown key set {key_set}"));
        StoredWrappedKey {
            kid,
            key_set,
            wrapped,
        }
    })
    .collect()
}

/// The encodings of a private key a leak could take, labelled.
pub(crate) fn encodings_of(pkcs8: &[u8]) -> Vec<(String, Vec<u8>)> {
    let hex: String = pkcs8.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut needles = vec![
        ("raw DER".to_owned(), pkcs8.to_vec()),
        ("base64".to_owned(), STANDARD.encode(pkcs8).into_bytes()),
        (
            "base64 (no padding)".to_owned(),
            STANDARD_NO_PAD.encode(pkcs8).into_bytes(),
        ),
        ("base64url".to_owned(), URL_SAFE.encode(pkcs8).into_bytes()),
        (
            "base64url (no padding)".to_owned(),
            URL_SAFE_NO_PAD.encode(pkcs8).into_bytes(),
        ),
        // The first line of a PEM body.
        (
            "PEM line".to_owned(),
            STANDARD.encode(pkcs8).bytes().take(64).collect(),
        ),
        ("hex".to_owned(), hex.clone().into_bytes()),
        ("HEX".to_owned(), hex.to_uppercase().into_bytes()),
    ];
    // Long (RSA) keys: 32-byte windows from the private half, so a partial leak (say, one
    // prime) is caught too.
    if pkcs8.len() >= 256 {
        for offset in [
            pkcs8.len() / 2,
            pkcs8.len() * 2 / 3,
            pkcs8.len() * 5 / 6,
            pkcs8.len() - 32,
        ] {
            let window = &pkcs8[offset..offset + 32];
            needles.push((format!("32 bytes at offset {offset}"), window.to_vec()));
            let window_hex: String = window.iter().map(|byte| format!("{byte:02x}")).collect();
            needles.push((
                format!("hex of 32 bytes at offset {offset}"),
                window_hex.into_bytes(),
            ));
        }
    }
    needles
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

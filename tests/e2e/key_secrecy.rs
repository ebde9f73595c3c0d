//! Keys at rest: while issuing and rotating with debug logging, every private key is
//! unwrapped from the SQLite file with the KEK, and neither those PKCS#8 bytes (raw,
//! base64, base64url, hex, 32-byte windows) nor the KEK nor the admin credential appear in
//! the database files or the captured log.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use tessera_common::keys::KeySetName;
use tessera_issuer::kek::Kek;
use tessera_issuer::store::WrappedKey;

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

    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if let Ok(bytes) = std::fs::read(data_dir.join(format!("tessera.db{suffix}"))) {
            database.extend_from_slice(&bytes);
        }
    }
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

/// Every `(kid, PKCS#8 DER)` from `signing_keys`, unwrapped with `<data-dir>/kek`.
fn unwrap_all_private_keys(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let kek = Kek::from_file(&data_dir.join("kek")).expect("KEK file");
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
        let pkcs8 = kek
            .unwrap(key_set, &kid, &WrappedKey(wrapped))
            .unwrap_or_else(|error| panic!("cannot unwrap {kid} with the KEK file: {error}"));
        assert!(
            pkcs8.len() >= 48 && pkcs8[0] == 0x30,
            "unwrapped {kid} is not DER"
        );
        (kid, pkcs8.to_vec())
    })
    .collect()
}

/// The encodings of a private key a leak could take, labelled.
fn encodings_of(pkcs8: &[u8]) -> Vec<(String, Vec<u8>)> {
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
            STANDARD.encode(pkcs8).as_bytes()[..64].to_vec(),
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

//! Attacks on `GetSecret` at a real sidecar (issue 12): a name outside the sidecar's
//! `--secret` allow list (refused locally, even when the sidecar's credential could read
//! it), a sidecar credential without the secret's scope (the issuer refuses, the sidecar
//! answers PERMISSION_DENIED and caches nothing), oversized and garbage names, and the
//! value kept out of the sidecar's log and its persisted bundle file.

use std::time::Duration;

use tonic::Code;

use crate::secret_reads::{
    FETCHES, get_secret, reader_credential, register, rotate, sidecar_client,
};
use crate::standing::harness::Standing;

fn fetches(sidecar: &crate::sidecar::harness::Sidecar, outcome: &str) -> f64 {
    sidecar.metric(&format!("{FETCHES}{{outcome=\"{outcome}\"}}"))
}

#[test]
fn get_secret_outside_the_allow_list_is_refused_without_asking_the_issuer() {
    let standing = Standing::start(&[]);
    register(&standing, "team-a/db");
    register(&standing, "team-b/db");
    // The credential could read both (a shared issuer credential); the sidecar allows one.
    let credential = reader_credential(
        &standing,
        "shared",
        &["secrets:read:team-a/*", "secrets:read:team-b/*"],
    );
    let sidecar = standing
        .sidecar_with("team-a", &credential)
        .args(["--secret", "team-a/*"])
        .start();
    let mut client = sidecar_client(&standing, &sidecar);
    get_secret(&standing, &mut client, "team-a/db", false).expect("its own secret");
    for name in ["team-b/db", "team-a", "team-ab/db"] {
        let status = get_secret(&standing, &mut client, name, false).unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
    }
    assert_eq!(
        fetches(&sidecar, "ok"),
        1.0,
        "only the allowed read reached the issuer"
    );
    assert_eq!(
        fetches(&sidecar, "refused") + fetches(&sidecar, "not_found"),
        0.0
    );
}

#[test]
fn get_secret_with_a_credential_lacking_the_scope_is_permission_denied_and_caches_nothing() {
    let standing = Standing::start(&[]);
    register(&standing, "app/db");
    // The allow list names it, but the credential holds another secret's scope only.
    let credential = reader_credential(&standing, "unscoped", &["secrets:read:app/other"]);
    let sidecar = standing
        .sidecar_with("unscoped", &credential)
        .args(["--secret", "app/*"])
        .start();
    let mut client = sidecar_client(&standing, &sidecar);
    for _ in 0..3 {
        let status = get_secret(&standing, &mut client, "app/db", true).unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().len() < 200);
    }
    // Nothing was cached: every read went to the issuer and was refused there.
    assert_eq!(fetches(&sidecar, "refused"), 3.0);
    assert_eq!(fetches(&sidecar, "ok"), 0.0);
}

#[test]
fn get_secret_refuses_oversized_and_garbage_names_and_keeps_serving() {
    let standing = Standing::start(&[]);
    register(&standing, "app/db");
    let credential = reader_credential(&standing, "reader", &["secrets:read:app/*"]);
    let sidecar = standing
        .sidecar_with("garbage", &credential)
        .args(["--secret", "app/*"])
        .start();
    let mut client = sidecar_client(&standing, &sidecar);
    let long = format!("app/{}", "x".repeat(125));
    let big = "a".repeat(200_000);
    for name in [
        "",
        "app/DB",
        "app/db\0",
        "app/db\n",
        "../app/db",
        "app/db ",
        "app/ü",
        &long,
        &big,
    ] {
        let status = get_secret(&standing, &mut client, name, false).unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{:?}",
            &name[..name.len().min(40)]
        );
        assert!(status.message().len() < 200, "the name is not echoed back");
    }
    // Beyond the sidecar's request bound: refused before decoding.
    let huge = "a".repeat(300 * 1024);
    let status = get_secret(&standing, &mut client, &huge, false).unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(
        fetches(&sidecar, "ok") + fetches(&sidecar, "not_found"),
        0.0
    );
    // Still serving, and an unknown allowed name is NOT_FOUND.
    get_secret(&standing, &mut client, "app/db", false).expect("still serving");
    let status = get_secret(&standing, &mut client, "app/none", false).unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[test]
fn secret_values_never_reach_the_sidecar_log_or_its_bundle_file() {
    let standing = Standing::start(&[]);
    register(&standing, "app/db");
    let credential = reader_credential(&standing, "reader", &["secrets:read:app/db"]);
    let mut sidecar = standing
        .sidecar_with("secrecy", &credential)
        .args(["--secret", "app/db"])
        .start();
    let mut client = sidecar_client(&standing, &sidecar);
    let first = get_secret(&standing, &mut client, "app/db", true).unwrap();
    rotate(&standing, "app/db", false);
    let second =
        crate::support::wait::poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
            get_secret(&standing, &mut client, "app/db", true)
                .ok()
                .filter(|answer| answer.version != first.version)
        })
        .expect("the rotation reached the sidecar");
    sidecar.stop(Duration::from_secs(10));
    let bundle =
        std::fs::read(standing.root.path().join("secrecy.bundle.json")).unwrap_or_default();
    assert!(!bundle.is_empty(), "the bundle was persisted");
    let log = sidecar.log();
    for value in [&first.value, &second.value] {
        let text = String::from_utf8_lossy(value).into_owned();
        assert!(!log.contains(&text), "a value in the sidecar log");
        assert!(
            !bundle
                .windows(value.len())
                .any(|window| window == value.as_slice())
        );
    }
}

//! The binary's start-up: bad flags and unusable certificates exit 64 with a message in
//! the issuer's style, before anything is bound.

use std::process::Output;

use crate::support::{command, make_pki};

fn run(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_flags_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "cli");
    let cert = format!("--tls-cert-file={}", pki.cert_file.display());
    let key = format!("--tls-key-file={}", pki.key_file.display());
    let good = [
        cert.as_str(),
        key.as_str(),
        "--sidecar-image=tessera:0.1.0",
        "--issuer-addr=http://issuer:50051",
        "--listen=127.0.0.1:0",
    ];
    let cases: [(&[&str], &str); 5] = [
        (&[], "--tls-cert-file"),
        (&["--socket-path=sidecar.sock"], "socket_path"),
        (&["--stale-policy=sometimes"], "sometimes"),
        (&["--issuer-addr=issuer:50051"], "issuer_addr"),
        (&["--memory-limit=lots"], "memory_limit"),
    ];
    for (extra, expected) in cases {
        // The good flags, less those `extra` gives again (a repeated flag is an error of
        // its own).
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        let mut args: Vec<&str> = match extra {
            [] => Vec::new(),
            _ => good
                .iter()
                .copied()
                .filter(|g| !extra.iter().any(|e| flag(e) == flag(g)))
                .collect(),
        };
        args.extend_from_slice(extra);
        let output = run(&args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{extra:?}: {message}");
        assert!(
            message.starts_with("tessera-injector: error: "),
            "{message}"
        );
        assert!(message.contains(expected), "{extra:?}: {message}");
    }
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--sidecar-image"));
}

#[test]
fn an_unusable_certificate_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let other = make_pki(dir.path(), "b");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.crt");
    let cases = [
        (&missing, &pki.key_file, missing.display().to_string()),
        (&garbage, &pki.key_file, garbage.display().to_string()),
        // A key that does not belong to the certificate.
        (
            &pki.cert_file,
            &other.key_file,
            other.key_file.display().to_string(),
        ),
    ];
    for (cert, key, expected) in cases {
        let output = run(&[
            &format!("--tls-cert-file={}", cert.display()),
            &format!("--tls-key-file={}", key.display()),
            "--sidecar-image=tessera:0.1.0",
            "--issuer-addr=http://issuer:50051",
            "--listen=127.0.0.1:0",
        ]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{message}");
        assert!(
            message.starts_with("tessera-injector: error: "),
            "{message}"
        );
        assert!(message.contains(&expected), "{message}");
    }
}

//! The injected environment is a configuration the real sidecar accepts, with the meaning
//! intended: the sidecar's own parser (`tessera_sidecar::SidecarConfig`) reads it. The
//! parser reads the process environment, so it runs in a child process — this test binary
//! again, running only [`child_parses_its_environment`] with the injected variables.

use std::process::Command;

use serde_json::{Value, json};
use tessera_injector::InjectorConfig;
use tessera_injector::mutate::{Decision, mutate};

use crate::json_patch;

/// Set in the child's environment; without it the child test does nothing.
const CHILD_MARKER: &str = "TESSERA_INJECTOR_TEST_SIDECAR_CHILD";

/// Returns the injected sidecar's environment for `annotations`, with paths under the
/// pod's volumes moved into `root` (the child has no /var/run/secrets/tessera).
fn injected_env(annotations: Value, root: &std::path::Path) -> Vec<(String, String)> {
    let config = InjectorConfig::parse_from([
        "tessera-injector",
        "--tls-cert-file=/unused",
        "--tls-key-file=/unused",
        "--sidecar-image=tessera:0.1.0",
        "--issuer-addr=https://tessera-issuer.identity.svc:50051",
    ])
    .unwrap();
    let pod = json!({
        "metadata": { "annotations": annotations },
        "spec": { "containers": [{ "name": "app" }] },
    });
    let Decision::Patch(ops) = mutate(&pod, &config.sidecar) else {
        panic!("not injected");
    };
    let mut injected = pod.clone();
    json_patch::apply(&mut injected, &serde_json::to_value(&ops).unwrap()).unwrap();
    let sidecar = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tessera-sidecar")
        .unwrap()
        .clone();
    let mounts: Vec<String> = sidecar["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .collect();
    for mount in &mounts {
        std::fs::create_dir_all(root.join(mount.trim_start_matches('/'))).unwrap();
    }
    sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let name = var["name"].as_str().unwrap().to_owned();
            let mut value = var["value"].as_str().unwrap().to_owned();
            if mounts.iter().any(|m| value.starts_with(m.as_str())) {
                value = root
                    .join(value.trim_start_matches('/'))
                    .display()
                    .to_string();
            }
            (name, value)
        })
        .collect()
}

/// Runs the child with `env` and returns its report of the parsed configuration.
fn parse_in_child(env: &[(String, String)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "sidecar_config::child_parses_its_environment",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESSERA_") || name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(CHILD_MARKER, "1");
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the sidecar refused the injected environment:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_injected_environment_is_a_valid_sidecar_configuration() {
    let root = tempfile::tempdir().unwrap();
    let env = injected_env(
        json!({
            "tessera.dev/inject": "true",
            "tessera.dev/stale-policy": "serve",
            "tessera.dev/max-staleness-seconds": "900",
            "tessera.dev/audiences": "billing-api,ledger",
            "tessera.dev/socket-path": "/var/run/tv/validator.sock",
        }),
        root.path(),
    );
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not injected"))
    };
    // The Secret's files, as the credential Secret would provide them.
    std::fs::write(value("TESSERA_SIDECAR_TOKEN_FILE"), "tbk_test_credential\n").unwrap();
    std::fs::write(
        value("TESSERA_SIDECAR_ISSUER_CA_FILE"),
        "-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    let report = parse_in_child(&env);
    for expected in [
        "addr: \"https://tessera-issuer.identity.svc:50051\"",
        &format!(
            "socket: {:?}",
            root.path().join("var/run/tv/validator.sock")
        ),
        // No fsGroup on this pod: the socket is opened to the pod's other users.
        &format!("socket_mode: {}", 0o666),
        "grpc_addr: Some(0.0.0.0:9091)",
        "http_addr: Some(0.0.0.0:9090)",
        "audiences: [\"billing-api\", \"ledger\"]",
        "max_staleness: 900s",
        "stale_policy: Serve",
        &format!(
            "bundle_cache: Some({:?})",
            root.path().join("var/lib/tessera-sidecar/bundle.json")
        ),
        &format!(
            "File({:?})",
            root.path().join("var/run/secrets/tessera/token")
        ),
    ] {
        assert!(report.contains(expected), "missing {expected} in\n{report}");
    }
}

/// The child half: parses the environment with the sidecar's own parser and prints it.
#[test]
fn child_parses_its_environment() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    match tessera_sidecar::SidecarConfig::parse_from(["tessera-sidecar"]) {
        Ok(config) => println!("{config:?}"),
        Err(error) => panic!("the sidecar refused its configuration: {error}"),
    }
}

//! The deployment examples (`docker-compose.yml`, `deploy/`): every YAML file parses with
//! PyYAML, the alert rules have the shape Prometheus loads, and every `tessera_*` metric
//! they use is one the issuer or the sidecar exports, so the rules cannot drift silently
//! from the code.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::binaries::workspace_root;
use crate::support::process::run_with_timeout;
use crate::support::python::tools;
use crate::support::wait::patience;

const YAML_FILES: &[&str] = &[
    "docker-compose.yml",
    "deploy/prometheus/alerts.yml",
    "deploy/prometheus/prometheus.yml",
    "deploy/k8s/sidecar-pod.yaml",
    "deploy/otel-collector.yaml",
];

/// Loads every document of the file; for alert files also checks each rule's shape.
const CHECK_SCRIPT: &str = r#"
import sys, yaml
path = sys.argv[1]
documents = [d for d in yaml.safe_load_all(open(path)) if d is not None]
assert documents, f"{path}: empty"
if path.endswith("alerts.yml"):
    (rules,) = documents
    for group in rules["groups"]:
        assert group["name"] and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] and rule["expr"].strip(), rule
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule
print("ok")
"#;

#[test]
fn deployment_yaml_parses_and_alert_rules_use_exported_metrics() {
    let root = workspace_root();
    for file in YAML_FILES {
        let mut command = Command::new(&tools().python);
        command.args(["-c", CHECK_SCRIPT]).arg(root.join(file));
        run_with_timeout(command, patience(Duration::from_secs(60)))
            .assert_success(&format!("PyYAML check of {file}"));
    }

    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let exported = source_text(&[
        &root.join("issuer/src"),
        &root.join("validator-sidecar/src"),
    ]);
    let used = metric_names(&alerts);
    assert!(used.len() >= 8, "the rules use only {used:?}");
    for name in &used {
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "deploy/prometheus/alerts.yml uses {name}, which neither program exports"
        );
    }
}

/// Every `tessera_…` identifier in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tessera_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if end > "tessera_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// The concatenated text of every `.rs` file below `dirs`.
fn source_text(dirs: &[&Path]) -> String {
    let mut text = String::new();
    let mut pending: Vec<std::path::PathBuf> = dirs.iter().map(|dir| dir.to_path_buf()).collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}

#[test]
fn metric_names_are_extracted_whole() {
    let names = metric_names("rate(tessera_a_total{x=\"y\"}[5m]) / tessera_b_seconds > tessera_*");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["tessera_a_total", "tessera_b_seconds"]
    );
}

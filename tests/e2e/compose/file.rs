//! Reading `docker-compose.yml` (and the other deployment YAML) through PyYAML, and the
//! parts of a service definition the compose test runs: `environment`, `depends_on`,
//! `volumes`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::binaries::workspace_root;
use crate::support::process::run_with_timeout;
use crate::support::python::tools;
use crate::support::wait::patience;

/// `docker-compose.yml` as JSON, through PyYAML.
pub(super) fn compose_file() -> Value {
    yaml_as_json(&workspace_root().join("docker-compose.yml"))
}

pub(super) fn yaml_as_json(path: &Path) -> Value {
    let mut command = Command::new(&tools().python);
    command
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    output.assert_success(&format!("PyYAML on {}", path.display()));
    serde_json::from_str(&output.stdout).expect("PyYAML printed JSON")
}

pub(super) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `environment` as pairs (map or `K=V` list form).
pub(super) fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect(),
        Value::Array(_) => strings(&service["environment"])
            .into_iter()
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("K=V");
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `depends_on` names (list or map form) and whether each must be healthy.
pub(super) fn dependencies(service: &Value) -> Vec<(String, bool)> {
    match &service["depends_on"] {
        Value::Object(map) => map
            .iter()
            .map(|(name, spec)| (name.clone(), spec["condition"] == "service_healthy"))
            .collect(),
        Value::Array(_) => strings(&service["depends_on"])
            .into_iter()
            .map(|name| (name, false))
            .collect(),
        _ => Vec::new(),
    }
}

/// Services in an order where each comes after what it depends on.
pub(super) fn start_order(services: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < services.len() {
        let before = order.len();
        for (name, service) in services {
            if !order.contains(name)
                && dependencies(service)
                    .iter()
                    .all(|(dependency, _)| order.contains(dependency))
            {
                order.push(name.clone());
            }
        }
        assert!(order.len() > before, "depends_on has a cycle: {order:?}");
    }
    order
}

/// A volume entry `SOURCE:TARGET[:MODE]`: (source, target).
pub(super) fn mount(entry: &str) -> (String, String) {
    let mut parts = entry.splitn(3, ':');
    let source = parts.next().expect("source").to_owned();
    let target = parts
        .next()
        .unwrap_or_else(|| panic!("volume `{entry}` names no target"))
        .to_owned();
    (source, target)
}

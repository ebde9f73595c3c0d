//! deploy/k8s: the injector's manifests agree with each other and with the binary — the
//! webhook calls the Service's name, namespace and port and the route the binary serves;
//! the Service reaches the Deployment's container port, which the binary listens on; the
//! Deployment's flags are ones the binary accepts; the certificate names the Service;
//! the injector cannot inject itself; and the example application is injected as it
//! should be by the injector so configured.

use std::path::PathBuf;

use serde_json::{Value, json};
use tessera_injector::InjectorConfig;
use tessera_injector::mutate::{Decision, mutate};
use tessera_injector::server::{HEALTH_PATH, MUTATE_PATH, REQUEST_TIMEOUT};
use yaml_rust2::{Yaml, YamlLoader};

use crate::json_patch;

fn k8s_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// Parses every document of a multi-document YAML file into JSON values.
fn load(file: &str) -> Vec<Value> {
    let path = k8s_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .iter()
        .map(|doc| to_json(doc, file))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn to_json(yaml: &Yaml, file: &str) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => json!(b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
        Yaml::String(s) => json!(s),
        Yaml::Array(items) => Value::Array(items.iter().map(|i| to_json(i, file)).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k
                        .as_str()
                        .unwrap_or_else(|| panic!("{file}: non-string key {k:?}"));
                    (key.to_owned(), to_json(v, file))
                })
                .collect(),
        ),
        other => panic!("{file}: unsupported YAML node {other:?}"),
    }
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

/// Evaluates a Kubernetes label selector (matchLabels and matchExpressions).
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let labels_ok = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let expressions_ok = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|expr| {
            let key = expr["key"].as_str().unwrap();
            let values: Vec<&str> = expr["values"]
                .as_array()
                .map(|v| v.iter().map(|v| v.as_str().unwrap()).collect())
                .unwrap_or_default();
            match expr["operator"].as_str().unwrap() {
                "In" => label(key).is_some_and(|l| values.contains(&l)),
                "NotIn" => label(key).is_none_or(|l| !values.contains(&l)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                other => panic!("unknown operator {other}"),
            }
        })
    });
    labels_ok && expressions_ok
}

/// The injector's configuration as its Deployment gives it (args, then env), parsed by
/// the binary's own parser.
fn deployment_config(deployment: &Value) -> Result<InjectorConfig, String> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    if container["command"] != json!(["tessera-injector"]) {
        return Err(format!("command is {}", container["command"]));
    }
    let mut args = vec!["tessera-injector".to_owned()];
    for arg in container["args"].as_array().into_iter().flatten() {
        args.push(arg.as_str().ok_or("a non-string arg")?.to_owned());
    }
    // Every variable the Deployment sets must be one the binary reads.
    for var in container["env"].as_array().into_iter().flatten() {
        let value = var["value"]
            .as_str()
            .ok_or("an env value that is not a string")?;
        match var["name"].as_str() {
            Some("TESSERA_LOG_JSON") => args.push(format!("--log-json={value}")),
            other => {
                return Err(format!(
                    "the Deployment sets {other:?}, unknown to this test"
                ));
            }
        }
    }
    InjectorConfig::parse_from(args).map_err(|e| format!("the Deployment's flags: {e}"))
}

/// Returns every disagreement between the webhook registration, the Service, the
/// Deployment, the certificate and the binary.
fn wiring_problems(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    let deployment = only(docs, "Deployment");
    let service = only(docs, "Service");
    let webhook_config = only(docs, "MutatingWebhookConfiguration");
    let certificate = only(docs, "Certificate");
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    check(
        webhook_config["apiVersion"] == "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration apiVersion",
    );
    check(
        webhook_config["webhooks"].as_array().map(Vec::len) == Some(1),
        "one webhook",
    );

    // clientConfig → Service.
    let target = &webhook_config["webhooks"][0]["clientConfig"]["service"];
    check(
        target["name"] == service["metadata"]["name"],
        "webhook service name",
    );
    check(
        target["namespace"] == service["metadata"]["namespace"],
        "webhook service namespace",
    );
    check(
        target["path"] == MUTATE_PATH,
        "webhook path is not the binary's route",
    );
    let service_ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let service_port = service_ports.iter().find(|p| p["port"] == target["port"]);
    check(
        service_port.is_some(),
        "webhook port is no port of the Service",
    );

    // Service → the Deployment's pods and container port.
    let labels = &template["metadata"]["labels"];
    check(
        deployment["metadata"]["namespace"] == service["metadata"]["namespace"],
        "Deployment and Service namespaces",
    );
    check(
        selects(
            &json!({ "matchLabels": service["spec"]["selector"] }),
            labels,
        ),
        "Service selector misses the pods",
    );
    check(
        selects(&deployment["spec"]["selector"], labels),
        "Deployment selector",
    );
    let container_ports = container["ports"].as_array().cloned().unwrap_or_default();
    let container_port = service_port.and_then(|sp| {
        container_ports
            .iter()
            .find(|p| p["name"] == sp["targetPort"] || p["containerPort"] == sp["targetPort"])
    });
    check(
        container_port.is_some(),
        "Service targetPort is no port of the container",
    );

    // Container port → what the binary listens on, by its own parser.
    let config = match deployment_config(deployment) {
        Ok(config) => config,
        Err(error) => {
            problems.push(error);
            return problems;
        }
    };
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    if let Some(port) = container_port {
        check(
            json!(config.serve.listen.port()) == port["containerPort"],
            "--listen is not the containerPort",
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            check(
                get["path"] == HEALTH_PATH,
                "probe path is not the binary's health route",
            );
            check(
                get["scheme"] == "HTTPS",
                "probe scheme: the binary serves TLS only",
            );
            check(
                get["port"] == port["name"] || get["port"] == port["containerPort"],
                "probe port",
            );
        }
    }

    // TLS files → the mounted Secret → the Certificate, which names the Service.
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mount = mounts.iter().find(|m| {
        config
            .serve
            .tls_cert_file
            .starts_with(m["mountPath"].as_str().unwrap_or("-"))
    });
    check(
        mount.is_some(),
        "the certificate file is on no mounted volume",
    );
    let volumes = template["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tls_volume = mount.and_then(|m| volumes.iter().find(|v| v["name"] == m["name"]));
    check(
        tls_volume.is_some_and(|v| v["secret"]["secretName"] == certificate["spec"]["secretName"]),
        "the TLS volume is not the Certificate's Secret",
    );
    check(
        config
            .serve
            .tls_cert_file
            .file_name()
            .is_some_and(|f| f == "tls.crt")
            && config
                .serve
                .tls_key_file
                .file_name()
                .is_some_and(|f| f == "tls.key")
            && mount.is_some_and(|m| {
                config
                    .serve
                    .tls_key_file
                    .starts_with(m["mountPath"].as_str().unwrap_or("-"))
            }),
        "the TLS files are not the Secret's tls.crt and tls.key",
    );
    let dns = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap_or_default(),
        service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    );
    check(
        certificate["spec"]["dnsNames"]
            .as_array()
            .is_some_and(|names| names.contains(&json!(dns))),
        "the Certificate does not name the Service",
    );
    check(
        certificate["metadata"]["namespace"] == service["metadata"]["namespace"],
        "Certificate namespace",
    );
    check(
        certificate["spec"]["issuerRef"]["name"] == only(docs, "Issuer")["metadata"]["name"],
        "Certificate issuerRef",
    );
    check(
        webhook_config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == json!(format!(
                "{}/{}",
                certificate["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
                certificate["metadata"]["name"].as_str().unwrap_or_default()
            )),
        "inject-ca-from does not name the Certificate",
    );
    check(
        template["spec"]["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"],
        "serviceAccountName",
    );
    check(
        selects(
            &only(docs, "PodDisruptionBudget")["spec"]["selector"],
            labels,
        ),
        "PodDisruptionBudget selector",
    );
    problems
}

#[test]
fn the_webhook_reaches_the_binary_through_the_service() {
    let docs = load("injector.yaml");
    assert_eq!(wiring_problems(&docs), Vec::<String>::new());
    let service = only(&docs, "Service");
    let dns = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert_eq!(
        dns,
        crate::support::SERVICE_DNS,
        "the name the tests' certificates carry"
    );
}

#[test]
fn a_miswired_manifest_is_caught() {
    let docs = load("injector.yaml");
    let index = |kind: &str| docs.iter().position(|d| d["kind"] == kind).unwrap();
    let webhook = index("MutatingWebhookConfiguration");
    let deployment = index("Deployment");
    let cases: [(usize, &str, Value, &str); 8] = [
        (
            webhook,
            "/webhooks/0/clientConfig/service/path",
            json!("/inject"),
            "webhook path",
        ),
        (
            webhook,
            "/webhooks/0/clientConfig/service/port",
            json!(8443),
            "webhook port",
        ),
        (
            webhook,
            "/webhooks/0/clientConfig/service/name",
            json!("tessera-webhook"),
            "webhook service name",
        ),
        (
            index("Service"),
            "/spec/ports/0/targetPort",
            json!(9443),
            "targetPort",
        ),
        (
            deployment,
            "/spec/template/spec/containers/0/args/0",
            json!("--listen=0.0.0.0:9443"),
            "--listen",
        ),
        (
            deployment,
            "/spec/template/spec/containers/0/args/-",
            json!("--no-such-flag"),
            "flags",
        ),
        (
            index("Certificate"),
            "/spec/dnsNames",
            json!(["tessera-injector.default.svc"]),
            "does not name the Service",
        ),
        (
            deployment,
            "/spec/template/spec/containers/0/readinessProbe/httpGet/scheme",
            json!("HTTP"),
            "probe scheme",
        ),
    ];
    for (doc, path, value, expected) in cases {
        let mut broken = docs.clone();
        let patch = json!([{ "op": "add", "path": path, "value": value }]);
        json_patch::apply(&mut broken[doc], &patch).unwrap();
        let problems = wiring_problems(&broken);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{path} = {value}: expected a problem about {expected:?}, got {problems:?}"
        );
    }
}

#[test]
fn the_webhook_is_registered_as_its_users_expect() {
    let docs = load("injector.yaml");
    let webhook = &only(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert!(webhook["name"].as_str().unwrap().ends_with(".tessera.dev"));
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    let timeout = webhook["timeoutSeconds"].as_u64().unwrap();
    assert!(
        (1..=REQUEST_TIMEOUT.as_secs()).contains(&timeout),
        "the binary's own deadline is not shorter"
    );
    assert_eq!(
        webhook["rules"],
        json!([{
            "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
            "resources": ["pods"], "scope": "Namespaced",
        }])
    );
    // The injector's own pods and namespace are never sent to it (with Fail, or during a
    // roll-out, a webhook that intercepts its own pods can lock itself out).
    let deployment = only(&docs, "Deployment");
    let injector_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(!selects(&webhook["objectSelector"], injector_labels));
    let own_namespace =
        json!({ "kubernetes.io/metadata.name": deployment["metadata"]["namespace"] });
    assert!(!selects(&webhook["namespaceSelector"], &own_namespace));
    assert!(!selects(
        &webhook["namespaceSelector"],
        &json!({ "kubernetes.io/metadata.name": "kube-system" })
    ));
    assert!(!selects(
        &webhook["namespaceSelector"],
        &json!({ "kubernetes.io/metadata.name": "billing", "tessera.dev/injection": "disabled" })
    ));
    // An application namespace and pod are.
    assert!(selects(
        &webhook["namespaceSelector"],
        &json!({ "kubernetes.io/metadata.name": "billing" })
    ));
    assert!(selects(
        &webhook["objectSelector"],
        &json!({ "app": "billing-api" })
    ));
}

#[test]
fn the_example_application_is_injected_by_the_deployed_configuration() {
    let docs = load("injector.yaml");
    let config = deployment_config(only(&docs, "Deployment")).unwrap();
    let app = load("app-injected.yaml");
    let app = only(&app, "Deployment");
    let pod = json!({
        "metadata": app["spec"]["template"]["metadata"],
        "spec": app["spec"]["template"]["spec"],
    });
    let Decision::Patch(ops) = mutate(&pod, &config.sidecar) else {
        panic!(
            "the example is not injected: {:?}",
            mutate(&pod, &config.sidecar)
        );
    };
    let mut injected = pod.clone();
    json_patch::apply(&mut injected, &serde_json::to_value(&ops).unwrap()).unwrap();
    let containers = injected["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 3);
    for container in &containers[..2] {
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "tessera-socket")
        );
    }

    // The credential Secret example is the one the configuration names, in the app's
    // namespace, with the keys the sidecar reads.
    let secret = load("sidecar-credential-secret.yaml");
    let secret = only(&secret, "Secret");
    assert_eq!(
        secret["metadata"]["name"],
        json!(config.sidecar.credential_secret)
    );
    assert_eq!(
        secret["metadata"]["namespace"],
        app["metadata"]["namespace"]
    );
    assert!(secret["stringData"]["token"].is_string());
    assert!(
        !config.sidecar.issuer_addr.starts_with("https://")
            || secret["stringData"]["ca.pem"].is_string(),
        "an https issuer needs ca.pem"
    );
    assert_eq!(
        injected["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tessera-credentials")
            .unwrap()["secret"]["secretName"],
        secret["metadata"]["name"]
    );
}

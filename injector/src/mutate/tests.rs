//! Tests of the injection decision: the exact operations for the shapes a pod can have,
//! and the pod that results from applying them (with an independent RFC 6902 applier).

use serde_json::{Value, json};

use super::*;
use crate::annotations::SidecarMode;
use crate::config::Resources;

#[path = "../../tests/it/json_patch.rs"]
mod json_patch;

fn defaults() -> SidecarDefaults {
    SidecarDefaults {
        image: "registry.example.com/tessera:0.1.0".to_owned(),
        issuer_addr: "https://tessera-issuer.tessera.svc:50051".to_owned(),
        credential_secret: "tessera-sidecar-credential".to_owned(),
        socket_path: "/run/tessera/sidecar.sock".to_owned(),
        stale_policy: StalePolicy::FailClosed,
        sidecar_mode: SidecarMode::Container,
        readiness_probe: ReadinessProbe::Grpc,
        http_port: 9090,
        grpc_port: 9091,
        resources: Resources {
            cpu_request: "50m".to_owned(),
            memory_request: "24Mi".to_owned(),
            memory_limit: "64Mi".to_owned(),
            cpu_limit: None,
        },
        otlp_endpoint: None,
    }
}

/// A pod opted in, with one bare container: no volumes, mounts or env at all.
fn bare_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web", "annotations": { "tessera.dev/inject": "true" } },
        "spec": { "containers": [ { "name": "app", "image": "app:1" } ] },
    })
}

/// A pod opted in with two containers that already have volumes, mounts and env.
fn furnished_pod() -> Value {
    json!({
        "metadata": {
            "name": "web",
            "annotations": { "tessera.dev/inject": "true", "team": "billing" },
        },
        "spec": {
            "securityContext": { "fsGroup": 10001 },
            "volumes": [ { "name": "data", "emptyDir": {} } ],
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [ { "name": "data", "mountPath": "/data" } ],
                    "env": [ { "name": "MODE", "value": "prod" } ],
                    "ports": [ { "containerPort": 8080 } ],
                },
                {
                    "name": "worker",
                    "volumeMounts": [ { "name": "data", "mountPath": "/data" } ],
                    "env": [ { "name": "MODE", "value": "worker" } ],
                },
            ],
        },
    })
}

fn ops(decision: Decision) -> Vec<PatchOp> {
    match decision {
        Decision::Patch(ops) => ops,
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn paths(ops: &[PatchOp]) -> Vec<&str> {
    ops.iter().map(|op| op.path.as_str()).collect()
}

fn applied(mut pod: Value, ops: &[PatchOp]) -> Value {
    json_patch::apply(&mut pod, &serde_json::to_value(ops).unwrap()).unwrap();
    pod
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)
        .and_then(|var| var["value"].as_str())
}

#[test]
fn a_pod_that_does_not_opt_in_is_unchanged() {
    let mut pod = bare_pod();
    pod["metadata"]["annotations"] = json!({});
    assert_eq!(
        mutate(&pod, &defaults()),
        Decision::Unchanged {
            reason: "not opted in"
        }
    );
    pod["metadata"] = json!({ "name": "no-annotations" });
    assert!(matches!(
        mutate(&pod, &defaults()),
        Decision::Unchanged { .. }
    ));
}

#[test]
fn a_bare_pod_gets_whole_arrays_not_appends() {
    let ops = ops(mutate(&bare_pod(), &defaults()));
    assert_eq!(
        paths(&ops),
        [
            "/metadata/annotations/tessera.dev~1status",
            "/spec/volumes",
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/env",
            "/spec/containers/-",
        ]
    );
    assert!(ops.iter().all(|op| op.op == "add"));
    assert_eq!(ops[0].value, json!("injected"));
    assert_eq!(ops[1].value.as_array().unwrap().len(), 3);
}

#[test]
fn a_furnished_pod_gets_appends_in_every_app_container() {
    let ops = ops(mutate(&furnished_pod(), &defaults()));
    assert_eq!(
        paths(&ops),
        [
            "/metadata/annotations/tessera.dev~1status",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts/-",
            "/spec/containers/0/env/-",
            "/spec/containers/1/volumeMounts/-",
            "/spec/containers/1/env/-",
            "/spec/containers/-",
        ]
    );
}

#[test]
fn the_injected_pod_has_everything_and_keeps_what_it_had() {
    let pod = applied(furnished_pod(), &ops(mutate(&furnished_pod(), &defaults())));
    assert_eq!(
        pod["metadata"]["annotations"]["tessera.dev/status"],
        "injected"
    );
    assert_eq!(pod["metadata"]["annotations"]["team"], "billing");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["data", SOCKET_VOLUME, CACHE_VOLUME, CREDENTIALS_VOLUME]
    );
    assert_eq!(volumes[1]["emptyDir"], json!({}));
    assert_eq!(
        volumes[3]["secret"]["secretName"],
        "tessera-sidecar-credential"
    );
    for name in ["app", "worker"] {
        let app = container(&pod, name);
        assert_eq!(
            app["volumeMounts"][1],
            json!({ "name": SOCKET_VOLUME, "mountPath": "/run/tessera" })
        );
        assert_eq!(app["volumeMounts"][0]["name"], "data");
        assert_eq!(env(app, SOCKET_ENV), Some("/run/tessera/sidecar.sock"));
        assert_eq!(app["env"][0]["name"], "MODE");
    }
    let sidecar = container(&pod, SIDECAR_CONTAINER);
    assert_eq!(pod["spec"]["containers"][2]["name"], SIDECAR_CONTAINER);
    assert_eq!(sidecar["image"], "registry.example.com/tessera:0.1.0");
    assert_eq!(sidecar["command"], json!(["tessera-sidecar"]));
    assert_eq!(
        sidecar["readinessProbe"]["grpc"],
        json!({ "port": 9091, "service": "tessera.v1.ValidatorService" })
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_GRPC_ADDR"),
        Some("0.0.0.0:9091")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_HTTP_ADDR"),
        Some("0.0.0.0:9090")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_SOCKET"),
        Some("/run/tessera/sidecar.sock")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_TOKEN_FILE"),
        Some("/var/run/secrets/tessera/token")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_ISSUER_CA_FILE"),
        Some("/var/run/secrets/tessera/ca.pem")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_STALE_POLICY"),
        Some("fail-closed")
    );
    // The pod has an fsGroup: the sidecar's default 0660 socket is shared through it.
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_SOCKET_MODE"), None);
    assert_eq!(
        sidecar["resources"],
        json!({ "requests": { "cpu": "50m", "memory": "24Mi" }, "limits": { "memory": "64Mi" } })
    );
    assert_eq!(sidecar["securityContext"]["runAsUser"], SIDECAR_UID);
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn an_injected_pod_is_unchanged() {
    for pod in [bare_pod(), furnished_pod()] {
        let injected = applied(pod.clone(), &ops(mutate(&pod, &defaults())));
        assert_eq!(
            mutate(&injected, &defaults()),
            Decision::Unchanged {
                reason: "already injected"
            }
        );
    }
}

#[test]
fn a_container_added_after_injection_gets_the_socket_on_reinvocation() {
    let mut pod = applied(bare_pod(), &ops(mutate(&bare_pod(), &defaults())));
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "added-later", "image": "x:1" }));
    let ops = ops(mutate(&pod, &defaults()));
    assert_eq!(
        paths(&ops),
        ["/spec/containers/2/volumeMounts", "/spec/containers/2/env"]
    );
    let pod = applied(pod, &ops);
    assert_eq!(
        mutate(&pod, &defaults()),
        Decision::Unchanged {
            reason: "already injected"
        }
    );
}

#[test]
fn a_hand_written_sidecar_pod_is_left_alone() {
    let mut pod = bare_pod();
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": SIDECAR_CONTAINER, "image": "tessera:0.1.0" }));
    assert_eq!(
        mutate(&pod, &defaults()),
        Decision::Unchanged {
            reason: "the pod already has a tessera-sidecar container"
        }
    );
}

#[test]
fn init_containers_are_not_mounted() {
    let mut pod = bare_pod();
    pod["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "m:1" }]);
    let pod = applied(pod.clone(), &ops(mutate(&pod, &defaults())));
    assert_eq!(
        pod["spec"]["initContainers"],
        json!([{ "name": "migrate", "image": "m:1" }])
    );
}

#[test]
fn annotations_override_the_defaults() {
    let mut pod = bare_pod();
    pod["metadata"]["annotations"] = json!({
        "tessera.dev/inject": "true",
        "tessera.dev/image": "registry.example.com/tessera:0.2.0",
        "tessera.dev/socket-path": "/var/run/tv/validator.sock",
        "tessera.dev/stale-policy": "serve",
        "tessera.dev/max-staleness-seconds": "900",
        "tessera.dev/credential-secret": "billing-api-tessera",
        "tessera.dev/audiences": "billing-api,ledger",
    });
    let pod = applied(pod.clone(), &ops(mutate(&pod, &defaults())));
    let app = container(&pod, "app");
    assert_eq!(app["volumeMounts"][0]["mountPath"], "/var/run/tv");
    assert_eq!(env(app, SOCKET_ENV), Some("/var/run/tv/validator.sock"));
    let sidecar = container(&pod, SIDECAR_CONTAINER);
    assert_eq!(sidecar["image"], "registry.example.com/tessera:0.2.0");
    assert_eq!(sidecar["volumeMounts"][0]["mountPath"], "/var/run/tv");
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_SOCKET"),
        Some("/var/run/tv/validator.sock")
    );
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_STALE_POLICY"), Some("serve"));
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_MAX_STALENESS_SECONDS"),
        Some("900")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_AUDIENCES"),
        Some("billing-api,ledger")
    );
    assert_eq!(
        pod["spec"]["volumes"][2]["secret"]["secretName"],
        "billing-api-tessera"
    );
    // No fsGroup on this pod: the socket is opened to the pod's other users.
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_SOCKET_MODE"), Some("0666"));
}

#[test]
fn http_readiness_and_a_plain_issuer() {
    let mut defaults = defaults();
    defaults.readiness_probe = ReadinessProbe::Http;
    defaults.issuer_addr = "http://tessera-issuer.tessera.svc:50051".to_owned();
    defaults.resources.cpu_limit = Some("500m".to_owned());
    defaults.otlp_endpoint = Some("http://otel-collector:4317".to_owned());
    let pod = applied(bare_pod(), &ops(mutate(&bare_pod(), &defaults)));
    let sidecar = container(&pod, SIDECAR_CONTAINER);
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"],
        json!({ "path": "/readyz", "port": "tessera-http" })
    );
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_GRPC_ADDR"), None);
    assert_eq!(sidecar["ports"].as_array().unwrap().len(), 1);
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_ISSUER_CA_FILE"), None);
    assert_eq!(sidecar["resources"]["limits"]["cpu"], "500m");
    assert_eq!(
        env(sidecar, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector:4317")
    );
}

#[test]
fn an_app_that_sets_the_variable_keeps_its_value() {
    let mut pod = bare_pod();
    pod["spec"]["containers"][0]["env"] =
        json!([{ "name": SOCKET_ENV, "value": "/elsewhere.sock" }]);
    let ops = ops(mutate(&pod, &defaults()));
    assert!(!paths(&ops).iter().any(|p| p.contains("/env")));
}

#[test]
fn conflicts_are_refused_with_a_message() {
    let cases: [(&str, Value, &str); 5] = [
        (
            "/spec/volumes",
            json!([{ "name": "tessera-socket", "emptyDir": {} }]),
            "volume named \"tessera-socket\"",
        ),
        (
            "/spec/containers/0/volumeMounts",
            json!([{ "name": "runtime", "mountPath": "/run/tessera/" }]),
            "already mounts volume \"runtime\" at /run/tessera",
        ),
        (
            "/spec/containers/0/ports",
            json!([{ "containerPort": 9090 }]),
            "uses port 9090",
        ),
        (
            "/spec/containers/0/ports",
            json!([{ "containerPort": 9091 }]),
            "uses port 9091",
        ),
        (
            "/metadata/annotations/tessera.dev~1socket-path",
            json!("/var/run/secrets/tessera/s.sock"),
            "overlaps the sidecar's /var/run/secrets/tessera",
        ),
    ];
    for (path, value, expected) in cases {
        let mut pod = bare_pod();
        let patch = json!([{ "op": "add", "path": path, "value": value }]);
        json_patch::apply(&mut pod, &patch).unwrap();
        match mutate(&pod, &defaults()) {
            Decision::Refuse(message) => assert!(message.contains(expected), "{message}"),
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn malformed_pods_are_refused_not_panicked_on() {
    let opted_in = json!({ "tessera.dev/inject": "true" });
    let cases = [
        json!({ "metadata": { "annotations": opted_in } }),
        json!({ "metadata": { "annotations": opted_in }, "spec": { "containers": "app" } }),
        json!({ "metadata": { "annotations": opted_in }, "spec": { "containers": [ { "image": "no-name" } ] } }),
        json!({ "metadata": { "annotations": { "tessera.dev/inject": true } }, "spec": { "containers": [] } }),
        json!({ "metadata": { "annotations": { "tessera.dev/inject": "true", "x": 1 } }, "spec": { "containers": [] } }),
        json!({
            "metadata": { "annotations": opted_in },
            "spec": { "containers": [ { "name": "a", "ports": [ { "containerPort": 70000 } ] } ] },
        }),
        json!({
            "metadata": { "annotations": opted_in },
            "spec": { "containers": [ { "name": "a", "env": { "A": "b" } } ] },
        }),
    ];
    for pod in cases {
        assert!(
            matches!(mutate(&pod, &defaults()), Decision::Refuse(_)),
            "{pod}"
        );
    }
}

#[test]
fn a_pod_that_does_not_opt_in_is_never_refused() {
    // Shapes the decision would refuse if the pod had opted in.
    let cases = [
        json!({
            "metadata": { "annotations": { "tessera.dev/inject": "false", "tessera.dev/image": "" } },
            "spec": { "containers": "app" },
        }),
        json!(null),
        json!([]),
        json!({ "metadata": {} }),
        json!({ "metadata": { "annotations": ["x"] }, "spec": { "containers": "app" } }),
        json!({ "metadata": { "annotations": { "team": 7 } }, "spec": { "containers": [ { "image": "no-name" } ] } }),
        json!({
            "metadata": { "annotations": { "tessera.dev/image": "bad image" } },
            "spec": { "volumes": [ { "name": "tessera-socket" } ], "containers": [] },
        }),
    ];
    for pod in cases {
        assert_eq!(
            mutate(&pod, &defaults()),
            Decision::Unchanged {
                reason: "not opted in"
            },
            "{pod}"
        );
    }
}

#[test]
fn a_native_sidecar_is_the_first_init_container_and_init_containers_get_the_socket() {
    let mut pod = furnished_pod();
    pod["metadata"]["annotations"]["tessera.dev/sidecar-mode"] = json!("native");
    pod["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "m:1" }]);
    let first_ops = ops(mutate(&pod, &defaults()));
    let first_paths = paths(&first_ops);
    assert_eq!(
        first_paths[first_paths.len() - 3..],
        [
            "/spec/initContainers/0/volumeMounts",
            "/spec/initContainers/0/env",
            "/spec/initContainers/0",
        ]
    );
    let injected = applied(pod, &first_ops);
    let init = injected["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init[0]["name"], SIDECAR_CONTAINER);
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(init[0]["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(init[1]["name"], "migrate");
    assert_eq!(init[1]["volumeMounts"][0]["name"], SOCKET_VOLUME);
    assert_eq!(env(&init[1], SOCKET_ENV), Some("/run/tessera/sidecar.sock"));
    assert!(
        !injected["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == SIDECAR_CONTAINER)
    );
    for name in ["app", "worker"] {
        assert_eq!(
            env(container(&injected, name), SOCKET_ENV),
            Some("/run/tessera/sidecar.sock")
        );
    }
    assert_eq!(
        mutate(&injected, &defaults()),
        Decision::Unchanged {
            reason: "already injected"
        }
    );

    // Reinvocation: an init container added after the sidecar gets the socket, one
    // added before it (it would run before the sidecar starts) does not.
    let mut extended = injected.clone();
    let init = extended["spec"]["initContainers"].as_array_mut().unwrap();
    init.insert(0, json!({ "name": "before", "image": "b:1" }));
    init.push(json!({ "name": "after", "image": "a:1" }));
    let ops = ops(mutate(&extended, &defaults()));
    assert_eq!(
        paths(&ops),
        [
            "/spec/initContainers/3/volumeMounts",
            "/spec/initContainers/3/env"
        ]
    );
}

#[test]
fn a_native_sidecar_in_a_pod_without_init_containers_creates_the_list() {
    let mut defaults = defaults();
    defaults.sidecar_mode = SidecarMode::Native;
    let ops = ops(mutate(&bare_pod(), &defaults));
    assert_eq!(ops.last().unwrap().path, "/spec/initContainers");
    let injected = applied(bare_pod(), &ops);
    assert_eq!(
        injected["spec"]["initContainers"][0]["name"],
        SIDECAR_CONTAINER
    );
    assert_eq!(injected["spec"]["containers"].as_array().unwrap().len(), 1);
}

//! The real binary over HTTPS: AdmissionReview v1 in, JSON Patch out, applied to the pod
//! by the independent applier in `json_patch.rs`, and the resulting pod checked.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use tessera_injector::server::HEALTH_PATH;

use crate::json_patch;
use crate::support::{Client, Injector, admission_review, eventually, make_pki, patch_of};

/// A pod as the ReplicaSet controller creates it, after the ServiceAccount admission
/// plugin (which runs before webhooks) added the API token volume to every container.
fn controller_pod(annotations: Value) -> Value {
    let token_mount = json!({
        "name": "kube-api-access-7xk2p",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": true,
    });
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "billing-api-6d4cf56db6-",
            "namespace": "billing",
            "labels": { "app": "billing-api", "pod-template-hash": "6d4cf56db6" },
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "billing-api-6d4cf56db6",
                "uid": "4d3c1e5e-8f83-4f0e-9a0b-0d1b2c3d4e5f", "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001 },
            "initContainers": [{
                "name": "migrate",
                "image": "registry.example.com/billing-api:1.0.0",
                "volumeMounts": [token_mount],
            }],
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/billing-api:1.0.0",
                    "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                    "env": [{ "name": "RUST_LOG", "value": "info" }],
                    "volumeMounts": [token_mount],
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                },
                {
                    "name": "audit-shipper",
                    "image": "registry.example.com/audit-shipper:1.0.0",
                    "volumeMounts": [token_mount],
                },
            ],
            "volumes": [{
                "name": "kube-api-access-7xk2p",
                "projected": { "sources": [{ "serviceAccountToken": { "path": "token" } }] },
            }],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
    })
}

fn opted_in() -> Value {
    json!({ "tessera.dev/inject": "true" })
}

/// Posts a review of `pod`, checks the envelope, and returns the response body.
async fn review(client: &Client, uid: &str, pod: &Value) -> Value {
    let reply = client.review(&admission_review(uid, pod)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let response = reply.json();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], uid);
    response
}

/// Reviews `pod`, expects an allowed response with a patch, and returns the patched pod.
async fn inject(client: &Client, pod: &Value) -> Value {
    let response = review(client, "b0a8d1e2-0000-4000-8000-000000000001", pod).await;
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let patch = patch_of(&response).expect("a patch");
    let mut patched = pod.clone();
    json_patch::apply(&mut patched, &patch).unwrap_or_else(|error| panic!("{error}: {patch}"));
    patched
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod}"))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)?["value"]
        .as_str()
}

fn mount_of<'a>(container: &'a Value, volume: &str) -> Option<&'a Value> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[tokio::test]
async fn injects_a_controller_created_pod() {
    let injector = Injector::start(&[]);
    let pod = controller_pod(opted_in());
    let injected = inject(&injector.client(), &pod).await;

    assert_eq!(
        injected["metadata"]["annotations"],
        json!({ "tessera.dev/inject": "true", "tessera.dev/status": "injected" })
    );
    // Volumes: the pod's own, then the socket, the cache and the credential Secret.
    assert_eq!(
        volume(&injected, "kube-api-access-7xk2p"),
        &pod["spec"]["volumes"][0]
    );
    assert_eq!(volume(&injected, "tessera-socket")["emptyDir"], json!({}));
    assert_eq!(volume(&injected, "tessera-cache")["emptyDir"], json!({}));
    assert_eq!(
        volume(&injected, "tessera-credentials")["secret"],
        json!({ "secretName": "tessera-sidecar-credential", "defaultMode": 0o444 })
    );
    // Every application container, not just the first, mounts the socket directory and
    // is told the socket path; what it had is kept.
    for name in ["app", "audit-shipper"] {
        let app = container(&injected, name);
        assert_eq!(
            mount_of(app, "tessera-socket"),
            Some(&json!({ "name": "tessera-socket", "mountPath": "/run/tessera" })),
            "{name}"
        );
        assert!(mount_of(app, "kube-api-access-7xk2p").is_some(), "{name}");
        assert_eq!(
            env(app, "TESSERA_VALIDATOR_SOCKET"),
            Some("/run/tessera/sidecar.sock")
        );
        assert!(
            mount_of(app, "tessera-credentials").is_none(),
            "the credential is the sidecar's"
        );
    }
    assert_eq!(env(container(&injected, "app"), "RUST_LOG"), Some("info"));
    // Init containers run before the sidecar: untouched.
    assert_eq!(
        injected["spec"]["initContainers"],
        pod["spec"]["initContainers"]
    );

    let sidecar = container(&injected, "tessera-sidecar");
    assert_eq!(injected["spec"]["containers"].as_array().unwrap().len(), 3);
    assert_eq!(sidecar["image"], "registry.example.com/tessera:0.1.0");
    assert_eq!(sidecar["command"], json!(["tessera-sidecar"]));
    for (name, value) in [
        (
            "TESSERA_ISSUER_ADDR",
            "https://tessera-issuer.identity.svc:50051",
        ),
        ("TESSERA_SIDECAR_SOCKET", "/run/tessera/sidecar.sock"),
        (
            "TESSERA_SIDECAR_TOKEN_FILE",
            "/var/run/secrets/tessera/token",
        ),
        (
            "TESSERA_SIDECAR_ISSUER_CA_FILE",
            "/var/run/secrets/tessera/ca.pem",
        ),
        (
            "TESSERA_SIDECAR_BUNDLE_CACHE",
            "/var/lib/tessera-sidecar/bundle.json",
        ),
        ("TESSERA_SIDECAR_HTTP_ADDR", "0.0.0.0:9090"),
        ("TESSERA_SIDECAR_GRPC_ADDR", "0.0.0.0:9091"),
        ("TESSERA_SIDECAR_STALE_POLICY", "fail-closed"),
    ] {
        assert_eq!(env(sidecar, name), Some(value), "{name}");
    }
    // fsGroup is set: the sidecar's default 0660 socket mode is kept.
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_SOCKET_MODE"), None);
    assert_eq!(
        sidecar["readinessProbe"],
        json!({
            "grpc": { "port": 9091, "service": "tessera.v1.ValidatorService" },
            "periodSeconds": 5,
            "failureThreshold": 3,
        })
    );
    assert_eq!(
        sidecar["livenessProbe"]["httpGet"],
        json!({ "path": "/healthz", "port": "tessera-http" })
    );
    assert_eq!(
        sidecar["ports"],
        json!([
            { "name": "tessera-http", "containerPort": 9090 },
            { "name": "tessera-grpc", "containerPort": 9091 },
        ])
    );
    assert_eq!(
        sidecar["resources"],
        json!({ "requests": { "cpu": "50m", "memory": "24Mi" }, "limits": { "memory": "64Mi" } })
    );
    assert_eq!(
        sidecar["volumeMounts"],
        json!([
            { "name": "tessera-socket", "mountPath": "/run/tessera" },
            { "name": "tessera-cache", "mountPath": "/var/lib/tessera-sidecar" },
            { "name": "tessera-credentials", "mountPath": "/var/run/secrets/tessera", "readOnly": true },
        ])
    );
    assert_eq!(sidecar["securityContext"]["runAsUser"], 10001);
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
}

#[tokio::test]
async fn a_second_review_of_the_injected_pod_yields_no_patch() {
    let injector = Injector::start(&[]);
    let client = injector.client();
    let injected = inject(&client, &controller_pod(opted_in())).await;
    let again = review(&client, "b0a8d1e2-0000-4000-8000-000000000002", &injected).await;
    assert_eq!(again["response"]["allowed"], true);
    assert_eq!(patch_of(&again), None, "{again}");
    // A container another webhook added after injection (reinvocation) gets the socket.
    let mut extended = injected.clone();
    extended["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "added-by-another-webhook", "image": "proxy:1" }));
    let reinvoked = inject(&client, &extended).await;
    let added = container(&reinvoked, "added-by-another-webhook");
    assert!(mount_of(added, "tessera-socket").is_some());
    assert_eq!(reinvoked["spec"]["containers"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_pod_without_the_annotation_is_allowed_unchanged() {
    let injector = Injector::start(&[]);
    let client = injector.client();
    for annotations in [
        json!({}),
        json!({ "tessera.dev/inject": "false" }),
        json!(null),
    ] {
        let response = review(&client, "c1", &controller_pod(annotations)).await;
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(patch_of(&response), None);
    }
}

#[tokio::test]
async fn annotation_overrides_are_honoured() {
    let injector = Injector::start(&[
        "--stale-policy=serve",
        "--credential-secret=cluster-default-credential",
        "--readiness-probe=http",
        "--cpu-limit=250m",
    ]);
    let pod = controller_pod(json!({
        "tessera.dev/inject": "true",
        "tessera.dev/image": "registry.example.com/tessera:0.2.0-rc1",
        "tessera.dev/socket-path": "/var/run/validator/tv.sock",
        "tessera.dev/stale-policy": "fail-closed",
        "tessera.dev/max-staleness-seconds": "120",
        "tessera.dev/credential-secret": "billing-api-tessera",
        "tessera.dev/audiences": "billing-api",
    }));
    let injected = inject(&injector.client(), &pod).await;
    let sidecar = container(&injected, "tessera-sidecar");
    assert_eq!(sidecar["image"], "registry.example.com/tessera:0.2.0-rc1");
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_SOCKET"),
        Some("/var/run/validator/tv.sock")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_STALE_POLICY"),
        Some("fail-closed")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_MAX_STALENESS_SECONDS"),
        Some("120")
    );
    assert_eq!(
        env(sidecar, "TESSERA_SIDECAR_AUDIENCES"),
        Some("billing-api")
    );
    assert_eq!(
        volume(&injected, "tessera-credentials")["secret"]["secretName"],
        "billing-api-tessera"
    );
    for name in ["app", "audit-shipper", "tessera-sidecar"] {
        let c = container(&injected, name);
        assert_eq!(
            mount_of(c, "tessera-socket").unwrap()["mountPath"],
            "/var/run/validator"
        );
    }
    assert_eq!(
        env(container(&injected, "app"), "TESSERA_VALIDATOR_SOCKET"),
        Some("/var/run/validator/tv.sock")
    );
    // The injector's flags: HTTP readiness (no TCP gRPC port), a CPU limit.
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"],
        json!({ "path": "/readyz", "port": "tessera-http" })
    );
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_GRPC_ADDR"), None);
    assert_eq!(sidecar["resources"]["limits"]["cpu"], "250m");

    // Without overrides, the injector's defaults from its flags apply.
    let plain = inject(&injector.client(), &controller_pod(opted_in())).await;
    let sidecar = container(&plain, "tessera-sidecar");
    assert_eq!(env(sidecar, "TESSERA_SIDECAR_STALE_POLICY"), Some("serve"));
    assert_eq!(
        volume(&plain, "tessera-credentials")["secret"]["secretName"],
        "cluster-default-credential"
    );
}

#[tokio::test]
async fn a_bad_override_or_a_conflict_is_denied_with_a_reason() {
    let injector = Injector::start(&[]);
    let client = injector.client();
    let bad = controller_pod(json!({
        "tessera.dev/inject": "true",
        "tessera.dev/socket-path": "relative/sidecar.sock",
    }));
    let response = review(&client, "d1", &bad).await;
    assert_eq!(response["response"]["allowed"], false);
    assert_eq!(response["response"]["status"]["code"], 400);
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("tessera.dev/socket-path"), "{message}");
    assert_eq!(patch_of(&response), None);

    let mut conflict = controller_pod(opted_in());
    conflict["spec"]["containers"][0]["ports"] = json!([{ "containerPort": 9090 }]);
    let response = review(&client, "d2", &conflict).await;
    assert_eq!(response["response"]["allowed"], false);
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("port 9090"), "{message}");
}

#[tokio::test]
async fn hostile_bodies_are_refused_cleanly() {
    let injector = Injector::start(&["--max-body-bytes=65536"]);
    let client = injector.client();

    // Over the limit: 413, whatever the content.
    let mut big = controller_pod(opted_in());
    big["metadata"]["annotations"]["padding"] = json!("x".repeat(70_000));
    let reply = client
        .request(
            "POST",
            "/mutate",
            serde_json::to_vec(&admission_review("e1", &big)).unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413);
    // Just under it: served.
    big["metadata"]["annotations"]["padding"] = json!("x".repeat(50_000));
    let response = review(&client, "e2", &big).await;
    assert!(patch_of(&response).is_some());

    // Not an AdmissionReview we can answer: 400 with a plain message, never a 5xx.
    // Far deeper than serde_json's recursion limit (128), within the body limit.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let bodies: [(&str, Vec<u8>); 6] = [
        ("not json", b"{\"apiVersion\": ".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
        ("deep nesting", deep.into_bytes()),
        ("a bare pod", serde_json::to_vec(&big).unwrap()),
        (
            "v1beta1",
            serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "request": admission_review("e3", &big)["request"],
            }))
            .unwrap(),
        ),
        (
            "no uid",
            serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": { "kind": { "version": "v1", "kind": "Pod" }, "operation": "CREATE" },
            }))
            .unwrap(),
        ),
    ];
    for (what, body) in bodies {
        let reply = client.request("POST", "/mutate", body).await;
        assert_eq!(
            reply.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    // A review of another kind (a misconfigured rule): allowed, unchanged, with a warning.
    let mut deployment = admission_review("e4", &json!({ "kind": "Deployment" }));
    deployment["request"]["kind"] =
        json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    // A pod CREATE without an object: denied.
    let response = review(&client, "e4", &json!(null)).await;
    assert_eq!(response["response"]["allowed"], false);
    let reply = client.review(&deployment).await;
    assert_eq!(reply.status, 200);
    let response = reply.json();
    assert_eq!(response["response"]["allowed"], true);
    assert!(
        response["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Deployment")
    );

    // A pod whose fields have the wrong types: denied, with the parse error.
    let mut broken = controller_pod(opted_in());
    broken["spec"]["containers"] = json!({ "app": {} });
    let response = review(&client, "e5", &broken).await;
    assert_eq!(response["response"]["allowed"], false);

    // Wrong method and path.
    assert_eq!(
        client.request("GET", "/mutate", Vec::new()).await.status,
        405
    );
    assert_eq!(
        client.request("POST", "/validate", Vec::new()).await.status,
        404
    );
    // Still healthy and still injecting after all that.
    assert_eq!(
        client.request("GET", HEALTH_PATH, Vec::new()).await.status,
        200
    );
    inject(&client, &controller_pod(opted_in())).await;
}

#[tokio::test]
async fn the_default_body_limit_is_two_mebibytes() {
    let injector = Injector::start(&[]);
    let client = injector.client();
    let mut pod = controller_pod(opted_in());
    pod["metadata"]["annotations"]["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let reply = client
        .request(
            "POST",
            "/mutate",
            serde_json::to_vec(&admission_review("f1", &pod)).unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413);
    // A pod the size etcd could store (1.5 MiB) still gets through.
    pod["metadata"]["annotations"]["padding"] = json!("x".repeat(1_500_000));
    assert!(patch_of(&review(&client, "f2", &pod).await).is_some());
}

#[tokio::test]
async fn plain_http_is_refused() {
    let injector = Injector::start(&[]);
    let body = serde_json::to_vec(&admission_review("g1", &controller_pod(opted_in()))).unwrap();
    let mut stream = std::net::TcpStream::connect(injector.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The server may close as soon as it sees the first bytes are no TLS record: writes
    // can fail with a broken pipe, which is the point.
    let _ = write!(
        stream,
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "plain HTTP got an HTTP answer: {}",
        String::from_utf8_lossy(&reply)
    );
    assert!(!String::from_utf8_lossy(&reply).contains("patch"));
    // The server is unaffected.
    assert_eq!(
        injector
            .client()
            .request("GET", HEALTH_PATH, Vec::new())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn http2_is_served_for_the_api_server() {
    let injector = Injector::start(&[]);
    let client = injector.client_h2();
    let tls = client.connect().await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    let injected = inject(&client, &controller_pod(opted_in())).await;
    assert!(mount_of(container(&injected, "app"), "tessera-socket").is_some());
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let injector = Injector::start(&[]);
    let other = make_pki(injector.dir.path(), "other");
    let stranger = Client::new(injector.addr, &other.ca_pem, &[b"http/1.1"]);
    assert!(stranger.connect().await.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let injector = Injector::start(&["--tls-reload-seconds=1"]);
    let renewed = make_pki(injector.dir.path(), "renewed");
    let with_new_ca = Client::new(injector.addr, &renewed.ca_pem, &[b"http/1.1"]);
    assert!(with_new_ca.connect().await.is_err(), "not renewed yet");
    // A half-written renewal (a key that does not match) is not served.
    std::fs::copy(&renewed.cert_file, &injector.pki.cert_file).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        injector.client().connect().await.is_ok(),
        "the old certificate is still served"
    );
    assert!(
        injector
            .log()
            .iter()
            .any(|line| line.contains("certificate reload failed"))
    );
    std::fs::copy(&renewed.key_file, &injector.pki.key_file).unwrap();
    let renewed_served = eventually(Duration::from_secs(10), async || {
        with_new_ca.connect().await.is_ok()
    })
    .await;
    assert!(renewed_served, "{:?}", injector.log());
    assert!(
        injector.client().connect().await.is_err(),
        "the old CA no longer verifies it"
    );
    inject(&with_new_ca, &controller_pod(opted_in())).await;
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let mut injector = Injector::start(&[]);
    assert_eq!(
        injector
            .client()
            .request("GET", HEALTH_PATH, Vec::new())
            .await
            .status,
        200
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &injector.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = injector.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("the injector exits within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_native_sidecar_starts_before_the_init_containers() {
    let injector = Injector::start(&[]);
    let client = injector.client();
    let pod = controller_pod(json!({
        "tessera.dev/inject": "true",
        "tessera.dev/sidecar-mode": "native",
    }));
    let injected = inject(&client, &pod).await;
    let init = injected["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(init[0]["name"], "tessera-sidecar");
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(
        init[0]["startupProbe"]["httpGet"],
        json!({ "path": "/healthz", "port": "tessera-http" })
    );
    assert_eq!(
        init[0]["readinessProbe"]["grpc"]["service"],
        "tessera.v1.ValidatorService"
    );
    // The init container runs after the sidecar started: it gets the socket too.
    assert_eq!(init[1]["name"], "migrate");
    assert!(mount_of(&init[1], "tessera-socket").is_some());
    assert_eq!(
        env(&init[1], "TESSERA_VALIDATOR_SOCKET"),
        Some("/run/tessera/sidecar.sock")
    );
    assert_eq!(injected["spec"]["containers"].as_array().unwrap().len(), 2);
    for name in ["app", "audit-shipper"] {
        assert!(mount_of(container(&injected, name), "tessera-socket").is_some());
    }
    let again = review(&client, "h2", &injected).await;
    assert_eq!(patch_of(&again), None);
}

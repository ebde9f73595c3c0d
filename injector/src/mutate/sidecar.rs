//! The injected container: image, command, the sidecar's environment (DESIGN §11 flags
//! as variables), ports, probes, resources, security context and mounts.

use serde_json::{Value, json};

use super::{
    CACHE_DIR, CACHE_VOLUME, CREDENTIALS_DIR, CREDENTIALS_VOLUME, SIDECAR_CONTAINER, SIDECAR_UID,
    SOCKET_VOLUME, Settings, VALIDATOR_SERVICE,
};
use crate::annotations::SidecarMode;

/// Builds the sidecar container.
pub(super) fn sidecar_container(settings: &Settings<'_>) -> Value {
    let defaults = settings.defaults;
    let mut env = vec![
        env_var("TESSERA_ISSUER_ADDR", &defaults.issuer_addr),
        env_var("TESSERA_SIDECAR_SOCKET", settings.socket_path),
        env_var(
            "TESSERA_SIDECAR_HTTP_ADDR",
            &format!("0.0.0.0:{}", defaults.http_port),
        ),
        env_var(
            "TESSERA_SIDECAR_TOKEN_FILE",
            &format!("{CREDENTIALS_DIR}/token"),
        ),
        env_var(
            "TESSERA_SIDECAR_BUNDLE_CACHE",
            &format!("{CACHE_DIR}/bundle.json"),
        ),
        env_var(
            "TESSERA_SIDECAR_STALE_POLICY",
            settings.stale_policy.as_str(),
        ),
    ];
    if let Some(port) = settings.grpc_port() {
        env.push(env_var(
            "TESSERA_SIDECAR_GRPC_ADDR",
            &format!("0.0.0.0:{port}"),
        ));
    }
    if settings.open_socket {
        env.push(env_var("TESSERA_SIDECAR_SOCKET_MODE", "0666"));
    }
    if defaults.issuer_addr.starts_with("https://") {
        env.push(env_var(
            "TESSERA_SIDECAR_ISSUER_CA_FILE",
            &format!("{CREDENTIALS_DIR}/ca.pem"),
        ));
    }
    if let Some(seconds) = settings.max_staleness_seconds {
        env.push(env_var(
            "TESSERA_SIDECAR_MAX_STALENESS_SECONDS",
            &seconds.to_string(),
        ));
    }
    if !settings.audiences.is_empty() {
        env.push(env_var(
            "TESSERA_SIDECAR_AUDIENCES",
            &settings.audiences.join(","),
        ));
    }
    if let Some(endpoint) = &defaults.otlp_endpoint {
        env.push(env_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    let mut ports = vec![json!({ "name": "tessera-http", "containerPort": defaults.http_port })];
    let readiness = match settings.grpc_port() {
        Some(port) => {
            ports.push(json!({ "name": "tessera-grpc", "containerPort": port }));
            // A grpc probe takes a port number, not a name.
            json!({ "grpc": { "port": port, "service": VALIDATOR_SERVICE } })
        }
        None => json!({ "httpGet": { "path": "/readyz", "port": "tessera-http" } }),
    };
    let mut readiness = readiness;
    readiness["periodSeconds"] = json!(5);
    readiness["failureThreshold"] = json!(3);
    let resources = &defaults.resources;
    let mut limits = json!({ "memory": resources.memory_limit });
    if let Some(cpu) = &resources.cpu_limit {
        limits["cpu"] = json!(cpu);
    }
    let mut container = json!({
        "name": SIDECAR_CONTAINER,
        "image": settings.image,
        "command": ["tessera-sidecar"],
        "env": env,
        "ports": ports,
        "readinessProbe": readiness,
        // Liveness is the process, not the bundle: a stale bundle must not restart the
        // sidecar (the restart would not refresh it, and the cache would be lost).
        "livenessProbe": {
            "httpGet": { "path": "/healthz", "port": "tessera-http" },
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": { "cpu": resources.cpu_request, "memory": resources.memory_request },
            "limits": limits,
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": SOCKET_VOLUME, "mountPath": settings.socket_dir },
            { "name": CACHE_VOLUME, "mountPath": CACHE_DIR },
            { "name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": true },
        ],
    });
    if settings.mode == SidecarMode::Native {
        container["restartPolicy"] = json!("Always");
        // The kubelet starts the next container once this succeeds. /healthz answers once
        // every listener, the socket first, is bound: the application finds the socket.
        // Not readiness: a pod whose issuer is unreachable still starts, and fails closed.
        container["startupProbe"] = json!({
            "httpGet": { "path": "/healthz", "port": "tessera-http" },
            "periodSeconds": 1,
            "failureThreshold": 30,
        });
    }
    container
}

fn env_var(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

//! The injection decision: a pure function from a pod (JSON) and the injector's defaults
//! to "leave it", "refuse it" or "apply this JSON Patch". No I/O here; the admission
//! envelope is [`crate::review`], the wire is [`crate::server`].
//!
//! Contract:
//! - A pod is injected only when it carries `tessera.dev/inject: "true"`.
//! - Injection adds the `tessera.dev/status: injected` annotation, three volumes (the
//!   socket `emptyDir`, the bundle-cache `emptyDir`, the credential Secret), the sidecar
//!   container, and to every application container a mount of the socket directory and
//!   `TESSERA_VALIDATOR_SOCKET`. Init containers get them only with a native sidecar
//!   (`SidecarMode::Native`: the sidecar is the first init container); otherwise the
//!   sidecar is not running while they run.
//! - Idempotent: an injected pod (status annotation and sidecar container present) gets
//!   no patch, except the mount and variable for an application container added after
//!   injection (a later webhook, with `reinvocationPolicy: IfNeeded`). A pod that already
//!   has a `tessera-sidecar` container without the status annotation was written by hand
//!   and is left alone.
//! - A conflict the API server would reject obscurely, or that would make the sidecar
//!   crash-loop (a volume name already used, a mount already at the socket directory, a
//!   port the sidecar needs), refuses the pod with a message naming it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::annotations::{self, Overrides, SidecarMode, StalePolicy};
use crate::config::{ReadinessProbe, SidecarDefaults};
use crate::patch::{PatchOp, escape};

use self::sidecar::sidecar_container;

/// Name of the injected container.
pub const SIDECAR_CONTAINER: &str = "tessera-sidecar";
/// Shared `emptyDir` holding the socket, mounted in every application container.
pub const SOCKET_VOLUME: &str = "tessera-socket";
/// `emptyDir` for the sidecar's bundle cache (a sidecar restart validates at once).
pub const CACHE_VOLUME: &str = "tessera-cache";
/// The credential Secret, mounted in the sidecar only.
pub const CREDENTIALS_VOLUME: &str = "tessera-credentials";
/// The variable telling the application where the socket is.
pub const SOCKET_ENV: &str = "TESSERA_VALIDATOR_SOCKET";
/// Where the sidecar reads its credential (`token`) and the issuer CA (`ca.pem`).
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/tessera";
/// Where the sidecar persists its bundle.
pub const CACHE_DIR: &str = "/var/lib/tessera-sidecar";
/// The image's `tessera` user (Dockerfile). Given as a number so that `runAsNonRoot`
/// can be verified by the kubelet: the image names its user, and a named user fails the
/// check ("image has non-numeric user").
pub const SIDECAR_UID: i64 = 10001;
/// The gRPC service whose health the readiness probe asks for.
pub const VALIDATOR_SERVICE: &str = "tessera.v1.ValidatorService";

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admit the pod as it is.
    Unchanged { reason: &'static str },
    /// Admit the pod with these operations applied.
    Patch(Vec<PatchOp>),
    /// Refuse the pod; the message tells its author what to change.
    Refuse(String),
}

/// Decides what to do with `pod` (the `request.object` of a CREATE review).
pub fn mutate(pod: &Value, defaults: &SidecarDefaults) -> Decision {
    // Whatever else a pod holds, one that does not opt in is never refused: the webhook
    // sees every pod of the selected namespaces, and most are none of its business.
    let not_opted_in = Decision::Unchanged {
        reason: "not opted in",
    };
    let Some(annotation_map) = pod
        .pointer("/metadata/annotations")
        .filter(|annotations| annotations.get(annotations::INJECT).is_some())
    else {
        return not_opted_in;
    };
    let parsed = match BTreeMap::<String, String>::deserialize(annotation_map) {
        Ok(map) => match annotations::parse(&map) {
            Ok(parsed) => parsed,
            Err(error) => return Decision::Refuse(error.to_string()),
        },
        Err(error) => {
            return Decision::Refuse(format!("metadata.annotations: {error}"));
        }
    };
    if !parsed.inject {
        return not_opted_in;
    }
    let pod = match Pod::deserialize(pod) {
        Ok(pod) => pod,
        Err(error) => return Decision::Refuse(format!("request.object is not a pod: {error}")),
    };
    let settings = match Settings::resolve(defaults, &parsed.overrides, pod.has_fs_group()) {
        Ok(settings) => settings,
        Err(message) => return Decision::Refuse(message),
    };
    let in_containers = pod.containers().any(|c| c.name == SIDECAR_CONTAINER);
    let in_init_containers = pod
        .init_containers()
        .iter()
        .position(|c| c.name == SIDECAR_CONTAINER);
    let has_sidecar = in_containers || in_init_containers.is_some();
    let result = match (has_sidecar, parsed.injected) {
        (true, false) => {
            return Decision::Unchanged {
                reason: "the pod already has a tessera-sidecar container",
            };
        }
        // Injected before: only containers added since get the socket (where the sidecar
        // is decides whether init containers after it do).
        (true, true) => app_container_ops(&pod, &settings, in_init_containers.map(|i| i + 1)),
        (false, _) => inject(&pod, &settings),
    };
    match result {
        Ok(ops) if ops.is_empty() => Decision::Unchanged {
            reason: "already injected",
        },
        Ok(ops) => Decision::Patch(ops),
        Err(message) => Decision::Refuse(message),
    }
}

/// The sidecar of one pod: the defaults with the pod's overrides applied.
#[derive(Clone, Debug, PartialEq)]
struct Settings<'a> {
    defaults: &'a SidecarDefaults,
    image: &'a str,
    socket_path: &'a str,
    socket_dir: &'a str,
    stale_policy: StalePolicy,
    mode: SidecarMode,
    max_staleness_seconds: Option<u64>,
    credential_secret: &'a str,
    audiences: &'a [String],
    /// Without a pod `fsGroup` the application may run as another user and group than the
    /// sidecar, so the socket is made connectable by all (mode 0666). The `emptyDir` is
    /// private to the pod, so "all" means this pod's containers.
    open_socket: bool,
}

impl<'a> Settings<'a> {
    fn resolve(
        defaults: &'a SidecarDefaults,
        overrides: &'a Overrides,
        has_fs_group: bool,
    ) -> Result<Self, String> {
        let socket_path = overrides
            .socket_path
            .as_deref()
            .unwrap_or(&defaults.socket_path);
        let socket_dir = annotations::socket_dir(socket_path);
        for reserved in [CACHE_DIR, CREDENTIALS_DIR] {
            if nested(socket_dir, reserved) {
                return Err(format!(
                    "annotation {}: the socket directory {socket_dir} overlaps the sidecar's {reserved}",
                    annotations::SOCKET_PATH
                ));
            }
        }
        Ok(Settings {
            defaults,
            image: overrides.image.as_deref().unwrap_or(&defaults.image),
            socket_path,
            socket_dir,
            stale_policy: overrides.stale_policy.unwrap_or(defaults.stale_policy),
            mode: overrides.sidecar_mode.unwrap_or(defaults.sidecar_mode),
            max_staleness_seconds: overrides.max_staleness_seconds,
            credential_secret: overrides
                .credential_secret
                .as_deref()
                .unwrap_or(&defaults.credential_secret),
            audiences: &overrides.audiences,
            open_socket: !has_fs_group,
        })
    }
}

/// Returns whether one of two directories contains the other (or they are equal).
fn nested(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// The full injection of a pod without the sidecar.
fn inject(pod: &Pod, settings: &Settings<'_>) -> Result<Vec<PatchOp>, String> {
    let ours = [SOCKET_VOLUME, CACHE_VOLUME, CREDENTIALS_VOLUME];
    if let Some(volume) = pod
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| ours.contains(&volume.name.as_str()))
    {
        return Err(format!(
            "the pod already has a volume named {:?}, which the injector adds",
            volume.name
        ));
    }
    let sidecar_ports: Vec<u16> = std::iter::once(settings.defaults.http_port)
        .chain(settings.grpc_port())
        .collect();
    for container in pod.containers().chain(pod.init_containers()) {
        for port in container.ports.iter().flatten() {
            if sidecar_ports.contains(&port.container_port) {
                return Err(format!(
                    "container {:?} uses port {}, which the tessera sidecar listens on",
                    container.name, port.container_port
                ));
            }
        }
    }
    let mut ops = Vec::new();
    // The annotation map exists: the pod opted in through it.
    let status_path = format!("/metadata/annotations/{}", escape(annotations::STATUS));
    ops.push(PatchOp::add(
        status_path,
        json!(annotations::STATUS_INJECTED),
    ));
    let volumes = [
        json!({ "name": SOCKET_VOLUME, "emptyDir": {} }),
        json!({ "name": CACHE_VOLUME, "emptyDir": {} }),
        json!({
            "name": CREDENTIALS_VOLUME,
            "secret": {
                "secretName": settings.credential_secret,
                // Mounted in the sidecar only. Not 0400: in a pod without fsGroup the
                // files are root's, and the sidecar runs as 10001.
                "defaultMode": 0o444,
            },
        }),
    ];
    append_all(
        &mut ops,
        "/spec/volumes",
        pod.spec.volumes.is_some(),
        volumes,
    );
    // Init containers run after a native sidecar has started (it goes first), and before
    // a plain one exists.
    let init_from = match settings.mode {
        SidecarMode::Native => Some(0),
        SidecarMode::Container => None,
    };
    // The sidecar is inserted last, so the indices above are the pod's own.
    ops.extend(app_container_ops(pod, settings, init_from)?);
    let sidecar = sidecar_container(settings);
    match (settings.mode, &pod.spec.init_containers) {
        (SidecarMode::Container, _) => ops.push(PatchOp::add("/spec/containers/-", sidecar)),
        (SidecarMode::Native, Some(_)) => ops.push(PatchOp::add("/spec/initContainers/0", sidecar)),
        (SidecarMode::Native, None) => {
            ops.push(PatchOp::add("/spec/initContainers", json!([sidecar])));
        }
    }
    Ok(ops)
}

/// The socket mount and variable for each application container lacking them, and for
/// each init container from index `init_from` on.
fn app_container_ops(
    pod: &Pod,
    settings: &Settings<'_>,
    init_from: Option<usize>,
) -> Result<Vec<PatchOp>, String> {
    let mut ops = Vec::new();
    let containers = pod
        .containers()
        .enumerate()
        .map(|(index, container)| (format!("/spec/containers/{index}"), container));
    let init_containers = pod
        .init_containers()
        .iter()
        .enumerate()
        .skip(init_from.unwrap_or(usize::MAX))
        .map(|(index, container)| (format!("/spec/initContainers/{index}"), container));
    for (base, container) in containers.chain(init_containers) {
        if container.name == SIDECAR_CONTAINER {
            continue;
        }
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        if !mounts.iter().any(|mount| mount.name == SOCKET_VOLUME) {
            if let Some(mount) = mounts
                .iter()
                .find(|mount| mount.mount_path.trim_end_matches('/') == settings.socket_dir)
            {
                return Err(format!(
                    "container {:?} already mounts volume {:?} at {}, the tessera socket directory (set {} to move it)",
                    container.name,
                    mount.name,
                    settings.socket_dir,
                    annotations::SOCKET_PATH
                ));
            }
            let mount = json!({ "name": SOCKET_VOLUME, "mountPath": settings.socket_dir });
            append_all(
                &mut ops,
                &format!("{base}/volumeMounts"),
                container.volume_mounts.is_some(),
                [mount],
            );
        }
        let env = container.env.as_deref().unwrap_or_default();
        // A variable the pod sets itself wins: its author knows where they mounted it.
        if !env.iter().any(|var| var.name == SOCKET_ENV) {
            let var = json!({ "name": SOCKET_ENV, "value": settings.socket_path });
            append_all(
                &mut ops,
                &format!("{base}/env"),
                container.env.is_some(),
                [var],
            );
        }
    }
    Ok(ops)
}

/// Appends `items` to the array at `path`: one `add` per item at `path/-` when the array
/// exists, else one `add` of the whole array (appending to a missing array fails).
fn append_all<const N: usize>(ops: &mut Vec<PatchOp>, path: &str, exists: bool, items: [Value; N]) {
    if exists {
        ops.extend(
            items
                .into_iter()
                .map(|item| PatchOp::add(format!("{path}/-"), item)),
        );
    } else {
        ops.push(PatchOp::add(path, Value::Array(items.into())));
    }
}

impl Settings<'_> {
    /// Returns the sidecar's TCP gRPC port when the readiness probe uses it.
    fn grpc_port(&self) -> Option<u16> {
        match self.defaults.readiness_probe {
            ReadinessProbe::Grpc => Some(self.defaults.grpc_port),
            ReadinessProbe::Http => None,
        }
    }
}

// === The parts of a pod the decision reads ===
//
// Unknown fields are ignored; a field with the wrong type fails the parse, and the pod is
// refused (the API server never sends one; anyone else posting it gets a clear error).

#[derive(Debug, Deserialize)]
struct Pod {
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    containers: Vec<Container>,
    init_containers: Option<Vec<Container>>,
    volumes: Option<Vec<Volume>>,
    security_context: Option<PodSecurityContext>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    volume_mounts: Option<Vec<VolumeMount>>,
    env: Option<Vec<EnvVar>>,
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Deserialize)]
struct Volume {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
}

#[derive(Debug, Deserialize)]
struct EnvVar {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    // A u16 here would refuse nothing the API server accepts (it checks 1-65535); a
    // number outside it fails the parse and the pod is refused.
    container_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityContext {
    fs_group: Option<i64>,
}

impl Pod {
    fn containers(&self) -> std::slice::Iter<'_, Container> {
        self.spec.containers.iter()
    }

    fn init_containers(&self) -> &[Container] {
        self.spec.init_containers.as_deref().unwrap_or_default()
    }

    fn has_fs_group(&self) -> bool {
        self.spec
            .security_context
            .as_ref()
            .is_some_and(|context| context.fs_group.is_some())
    }
}

mod sidecar;
#[cfg(test)]
mod tests;

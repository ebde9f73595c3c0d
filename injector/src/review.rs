//! The `admission.k8s.io/v1` `AdmissionReview` envelope: parses a request body, asks
//! [`crate::mutate`] and builds the response. Pure, like the decision.
//!
//! A body that is not JSON, or not an `AdmissionReview` v1 with a request and a uid, is
//! an error ([`ReviewError`], answered 400): without the request's uid no response the
//! API server would accept can be written, so the API server's `failurePolicy` decides.
//! Anything else gets a well-formed response: a review of another kind or operation is
//! allowed unchanged (with a warning, since the webhook's rules should not send it), a
//! pod the decision refuses is denied with a message.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::SidecarDefaults;
use crate::mutate::{self, Decision};

/// The only `apiVersion` served (`admissionReviewVersions: ["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The longest request uid accepted (the API server sends 36-byte UUIDs).
const MAX_UID_LEN: usize = 128;

/// A body no `AdmissionReview` response can be written for.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAdmissionReview(String),
}

/// The result of one review: the response body and what happened, for the log.
#[derive(Debug)]
pub struct Reviewed {
    pub response: Value,
    pub outcome: Outcome,
}

/// What the injector did with a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected { n_ops: usize },
    Unchanged { reason: &'static str },
    Refused { message: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    operation: String,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

/// Answers the `AdmissionReview` in `body`.
pub fn review(body: &[u8], defaults: &SidecarDefaults) -> Result<Reviewed, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let review = AdmissionReview::deserialize(&value)
        .map_err(|error| ReviewError::NotAdmissionReview(error.to_string()))?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::NotAdmissionReview(format!(
            "apiVersion {:?}, kind {:?}",
            review.api_version, review.kind
        )));
    }
    let Some(request) = review.request else {
        return Err(ReviewError::NotAdmissionReview("no request".to_owned()));
    };
    if request.uid.is_empty() || request.uid.len() > MAX_UID_LEN {
        return Err(ReviewError::NotAdmissionReview(format!(
            "request.uid must be 1 to {MAX_UID_LEN} bytes"
        )));
    }
    let uid = request.uid.as_str();
    let is_pod = request.kind.group.is_empty()
        && request.kind.version == "v1"
        && request.kind.kind == "Pod"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    if !is_pod || request.operation != "CREATE" {
        let reason = "not a pod CREATE";
        let warning = format!(
            "tessera-injector mutates pods on CREATE only; {}/{} {} passed unchanged",
            request.kind.version, request.kind.kind, request.operation
        );
        return Ok(Reviewed {
            response: allowed(uid, None, &[warning]),
            outcome: Outcome::Unchanged { reason },
        });
    }
    let Some(pod) = request.object else {
        let message = "request.object is missing".to_owned();
        return Ok(Reviewed {
            response: denied(uid, &message),
            outcome: Outcome::Refused { message },
        });
    };
    let reviewed = match mutate::mutate(&pod, defaults) {
        Decision::Unchanged { reason } => Reviewed {
            response: allowed(uid, None, &[]),
            outcome: Outcome::Unchanged { reason },
        },
        Decision::Patch(ops) => {
            // Serializing a Vec of ops holding JSON values cannot fail (string keys only).
            let patch = serde_json::to_vec(&ops).unwrap_or_default();
            Reviewed {
                response: allowed(uid, Some(&patch), &[]),
                outcome: Outcome::Injected { n_ops: ops.len() },
            }
        }
        Decision::Refuse(message) => Reviewed {
            response: denied(uid, &format!("tessera-injector: {message}")),
            outcome: Outcome::Refused { message },
        },
    };
    Ok(reviewed)
}

fn envelope(response: Value) -> Value {
    json!({ "apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response })
}

fn allowed(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    envelope(response)
}

fn denied(uid: &str, message: &str) -> Value {
    envelope(json!({
        "uid": uid,
        "allowed": false,
        "status": { "code": 400, "reason": "BadRequest", "message": message },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::StalePolicy;
    use crate::config::{ReadinessProbe, Resources};

    fn defaults() -> SidecarDefaults {
        SidecarDefaults {
            image: "tessera:0.1.0".to_owned(),
            issuer_addr: "http://issuer:50051".to_owned(),
            credential_secret: "cred".to_owned(),
            socket_path: "/run/tessera/sidecar.sock".to_owned(),
            stale_policy: StalePolicy::FailClosed,
            sidecar_mode: crate::annotations::SidecarMode::Container,
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

    fn review_of(kind: &str, operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "", "version": "v1", "kind": kind },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": "billing",
                "operation": operation,
                "object": object,
                "oldObject": null,
                "dryRun": false,
            },
        }))
        .unwrap()
    }

    fn opted_in_pod() -> Value {
        json!({
            "metadata": { "annotations": { "tessera.dev/inject": "true" } },
            "spec": { "containers": [ { "name": "app" } ] },
        })
    }

    #[test]
    fn an_injection_echoes_the_uid_and_carries_a_base64_json_patch() {
        let reviewed = review(&review_of("Pod", "CREATE", opted_in_pod()), &defaults()).unwrap();
        let response = &reviewed.response;
        assert_eq!(response["apiVersion"], API_VERSION);
        assert_eq!(response["kind"], "AdmissionReview");
        assert_eq!(
            response["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch.as_array().unwrap().len(), 5);
        assert_eq!(reviewed.outcome, Outcome::Injected { n_ops: 5 });
    }

    #[test]
    fn an_unchanged_pod_has_no_patch_fields() {
        let pod = json!({ "spec": { "containers": [ { "name": "app" } ] } });
        let reviewed = review(&review_of("Pod", "CREATE", pod), &defaults()).unwrap();
        let response = reviewed.response["response"].as_object().unwrap();
        assert_eq!(response["allowed"], true);
        assert!(!response.contains_key("patch") && !response.contains_key("patchType"));
    }

    #[test]
    fn other_kinds_and_operations_pass_with_a_warning() {
        for (kind, operation) in [("Deployment", "CREATE"), ("Pod", "UPDATE")] {
            let reviewed =
                review(&review_of(kind, operation, opted_in_pod()), &defaults()).unwrap();
            let response = &reviewed.response["response"];
            assert_eq!(response["allowed"], true);
            assert!(response.get("patch").is_none());
            assert!(response["warnings"][0].as_str().unwrap().contains(kind));
        }
    }

    #[test]
    fn a_refused_pod_is_denied_with_the_reason() {
        let mut pod = opted_in_pod();
        pod["metadata"]["annotations"]["tessera.dev/stale-policy"] = json!("sometimes");
        let reviewed = review(&review_of("Pod", "CREATE", pod), &defaults()).unwrap();
        let response = &reviewed.response["response"];
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 400);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("tessera-injector: annotation tessera.dev/stale-policy"));
        let no_object = review(&review_of("Pod", "CREATE", Value::Null), &defaults()).unwrap();
        assert_eq!(no_object.response["response"]["allowed"], false);
    }

    #[test]
    fn bodies_that_are_no_review_are_errors() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let cases: [&[u8]; 8] = [
            b"",
            b"not json",
            b"{\"apiVersion\": \"admission.k8s.io/v1\"",
            deep.as_bytes(),
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}"#,
            br#"{"apiVersion": "v1", "kind": "Pod", "spec": {}}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "", "kind": {"version": "v1", "kind": "Pod"}, "operation": "CREATE"}}"#,
        ];
        for body in cases {
            assert!(
                review(body, &defaults()).is_err(),
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }
}

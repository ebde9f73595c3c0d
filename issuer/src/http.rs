//! Plain HTTP: the JWKS and OpenID discovery documents (so any standard JWT library can
//! verify Tessera tokens), health and readiness probes, and Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tessera_common::keys::KeySetName;

use crate::app::App;
use crate::grpc::key_service::jwks_json;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub app: Arc<App>,
    /// Public base URL, for discovery.
    pub public_url: String,
    /// JWKS `max-age`: shorter than the prepublish window, so a verifier that caches the
    /// JWKS always holds a successor before it signs.
    pub jwks_max_age: Duration,
}

/// Builds the HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let body = jwks_json(&state.app);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest.as_ref()[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    );
    let cache_control = format!("public, max-age={}", state.jwks_max_age.as_secs());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/jwk-set+json")], body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

async fn discovery(State(state): State<HttpState>) -> Response {
    let document = serde_json::json!({
        "issuer": state.app.tokens.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", state.public_url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": [
            "iss", "sub", "aud", "iat", "exp", "nbf", "jti", "tenant_id", "role", "permissions",
            "session_id", "token_type", "mfa_verified", "features"
        ],
    });
    axum::Json(document).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let store_ok = state.app.store.latest_revision().await.is_ok();
    let signer_ok = state
        .app
        .keys
        .signer(KeySetName::Access, state.app.now())
        .is_ok();
    if store_ok && signer_ok {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

//! The webhook provider: an HTTP/1.1 POST of a JSON message (the code, the link, the
//! destination) signed in the Standard Webhooks format — headers `webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` — with the tenant's
//! webhook key (the `webhook` key set, `webhooks.rs`), or with the provider's configured
//! secret when it has one. `https` URLs are verified against the web PKI roots. A 2xx
//! answer is delivery; anything else, a refused connection or the timeout is a failure.
//!
//! The JSON body:
//! `{"type":"challenge.code","tenant_id":…,"challenge_id":…,"method":"otp_sms",
//! "destination":…,"code":…,"link":…|null,"expires_at":<seconds>}`

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use aws_lc_rs::hmac;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tessera_common::ids::KeyId;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{Message, Provider, SendError};
use crate::config::delivery::WebhookSettings;
use crate::keys::KeyManager;
use crate::webhooks::{self, SignedHeaders, TagKey, WebhookId};

/// The most of a receiver's answer read (and then dropped).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A configured signing secret, as the Standard Webhooks format signs with.
struct ConfiguredSecret {
    kid: KeyId,
    key: hmac::Key,
}

impl TagKey for ConfiguredSecret {
    fn kid(&self) -> &KeyId {
        &self.kid
    }
    fn hmac_key(&self) -> &hmac::Key {
        &self.key
    }
}

/// An HTTP receiver.
pub struct WebhookProvider {
    url: hyper::Uri,
    secret: Option<ConfiguredSecret>,
    keys: Arc<KeyManager>,
    timeout: std::time::Duration,
}

impl WebhookProvider {
    /// Builds the provider; nothing is contacted yet.
    pub fn new(settings: &WebhookSettings, keys: Arc<KeyManager>) -> WebhookProvider {
        let secret = settings.secret.as_ref().map(|secret| ConfiguredSecret {
            // A fixed, valid identifier: the configured secret has no key id.
            kid: KeyId::new("configured").expect("a constant identifier is valid"),
            key: hmac::Key::new(hmac::HMAC_SHA256, &decode_secret(secret)),
        });
        WebhookProvider {
            url: settings.url.clone(),
            secret,
            keys,
            timeout: settings.timeout,
        }
    }

    async fn sign(&self, message: &Message, payload: &[u8]) -> Result<SignedHeaders, SendError> {
        match &self.secret {
            Some(secret) => webhooks::format::sign(
                std::slice::from_ref(secret),
                WebhookId::generate(),
                payload,
                message.now,
            )
            .map_err(|error| SendError::Signing(error.to_string())),
            None => webhooks::sign(&self.keys, &message.tenant_id, payload, None, message.now)
                .await
                .map_err(|error| SendError::Signing(error.to_string())),
        }
    }

    async fn post(&self, headers: &SignedHeaders, payload: Vec<u8>) -> Result<(), SendError> {
        let host = self.url.host().unwrap_or_default().to_owned();
        let https = self.url.scheme_str() == Some("https");
        let port = self.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|error| SendError::Connect(error.kind().to_string()))?;
        let path = self
            .url
            .path_and_query()
            .map(|path| path.as_str())
            .unwrap_or("/");
        let authority = self
            .url
            .authority()
            .map(|authority| authority.as_str())
            .unwrap_or(&host);
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", headers.webhook_id.as_str())
            .header("webhook-timestamp", headers.timestamp.to_string())
            .header("webhook-signature", &headers.signature)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|error| SendError::Rejected(error.to_string()))?;
        let status = if https {
            let server_name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| SendError::Connect("bad host name".to_owned()))?;
            let tls = tokio_rustls::TlsConnector::from(TLS_CONFIG.clone())
                .connect(server_name, stream)
                .await
                .map_err(|_| SendError::Connect("tls".to_owned()))?;
            exchange(TokioIo::new(tls), request).await?
        } else {
            exchange(TokioIo::new(stream), request).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::Rejected(format!("http {}", status.as_u16())))
        }
    }
}

/// The TLS client settings of every webhook provider: the web PKI roots, aws-lc.
static TLS_CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    // The default provider supports the default versions; a failure is a build bug.
    Arc::new(config.expect("aws-lc supports the default TLS versions"))
});

async fn exchange<I>(
    io: I,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, SendError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| SendError::Connect(error.to_string()))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| SendError::Connect(error.to_string()))?;
    let status = response.status();
    // Read (a bounded part of) the answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await;
    driver.abort();
    Ok(status)
}

/// Returns the secret bytes: a `whsec_<base64>` value decoded, anything else as written.
fn decode_secret(secret: &[u8]) -> Zeroizing<Vec<u8>> {
    use base64::Engine;
    let decoded = std::str::from_utf8(secret)
        .ok()
        .and_then(|text| text.strip_prefix(webhooks::SECRET_PREFIX))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    Zeroizing::new(decoded.unwrap_or_else(|| secret.to_vec()))
}

/// Returns the JSON body of `message`.
pub fn payload(message: &Message) -> Zeroizing<Vec<u8>> {
    let body = serde_json::json!({
        "type": "challenge.code",
        "tenant_id": message.tenant_id.as_str(),
        "challenge_id": message.challenge_id.as_str(),
        "method": message.method.as_str(),
        "destination": message.destination.as_str(),
        "code": message.code.expose(),
        "link": message.link,
        "expires_at": message.expires_at.0.div_euclid(1000),
    });
    Zeroizing::new(body.to_string().into_bytes())
}

#[async_trait]
impl Provider for WebhookProvider {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let payload = payload(message);
        let headers = self.sign(message, &payload).await?;
        match tokio::time::timeout(self.timeout, self.post(&headers, payload.to_vec())).await {
            Err(_) => Err(SendError::Timeout),
            Ok(result) => result,
        }
    }
}

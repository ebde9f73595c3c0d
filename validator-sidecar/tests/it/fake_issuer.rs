//! An in-test `TrustBundleService` on 127.0.0.1:0 whose bundle the test controls: a
//! snapshot first (or the retained deltas after `since_revision`), then deltas as the test
//! changes the bundle, and heartbeats that the test can pause.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use prost_types::Timestamp;
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_server::ApiKeyServiceServer;
use tessera_proto::v1::secret_service_server::SecretServiceServer;
use tessera_proto::v1::service_token_service_server::ServiceTokenServiceServer;
use tessera_proto::v1::trust_bundle_service_server::{
    TrustBundleService, TrustBundleServiceServer,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::fake_credentials::{self, FakeCredentials};
use crate::fake_secrets::{self, FakeSecrets};
use crate::keys::{TestKey, now_ms};

/// The credential the fake issuer accepts.
pub const CREDENTIAL: &str = "tbc_test-bundle-reader";
/// Heartbeat period of the fake issuer.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Bundle {
    revision: u64,
    keys: BTreeMap<String, pb::Key>,
    revocations: Vec<pb::RevocationEntry>,
    log: Vec<pb::BundleChange>,
}

struct Shared {
    bundle: Mutex<Bundle>,
    policy: pb::ValidationPolicy,
    updates: broadcast::Sender<pb::TrustBundleUpdate>,
    n_subscriptions: AtomicUsize,
    /// TCP connections accepted, before any TLS handshake or gRPC call.
    n_connections: AtomicUsize,
    since_revisions: Mutex<Vec<u64>>,
    heartbeats: AtomicBool,
    /// Subscriptions wait for a permit before their first message (see `hold_first`).
    gate: Semaphore,
    kill: watch::Sender<bool>,
}

/// A running fake issuer.
pub struct FakeIssuer {
    pub addr: SocketAddr,
    /// The `ApiKeyService` and `ServiceTokenService` state (see `fake_credentials`).
    pub credentials: Arc<FakeCredentials>,
    /// The `SecretService` state (see `fake_secrets`).
    pub secrets: Arc<FakeSecrets>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

pub fn timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A revocation entry of `kind` for `value`, revoked at `revoked_at_ms`.
pub fn revocation(
    kind: pb::RevocationKind,
    value: &str,
    revoked_at_ms: i64,
) -> pb::RevocationEntry {
    pb::RevocationEntry {
        kind: kind as i32,
        value: value.into(),
        tenant_id: String::new(),
        revoked_at: Some(timestamp(revoked_at_ms)),
        drop_after: Some(timestamp(revoked_at_ms + 3_600_000)),
    }
}

impl FakeIssuer {
    /// Starts a fake issuer publishing `keys`.
    pub async fn start(keys: &[&TestKey]) -> FakeIssuer {
        Self::start_on(keys, true, None).await
    }

    /// Starts a fake issuer whose subscriptions get no message until [`Self::release`].
    pub async fn start_held(keys: &[&TestKey]) -> FakeIssuer {
        Self::start_on(keys, false, None).await
    }

    /// Starts a fake issuer serving over TLS with `tls`.
    pub async fn start_tls(keys: &[&TestKey], tls: ServerTlsConfig) -> FakeIssuer {
        Self::start_on(keys, true, Some(tls)).await
    }

    async fn start_on(keys: &[&TestKey], open: bool, tls: Option<ServerTlsConfig>) -> FakeIssuer {
        let mut bundle = Bundle {
            revision: 1,
            ..Bundle::default()
        };
        for key in keys {
            bundle.keys.insert(key.kid.clone(), key.published());
        }
        let shared = Arc::new(Shared {
            bundle: Mutex::new(bundle),
            policy: pb::ValidationPolicy {
                issuer: "tessera".into(),
                audiences: vec!["tessera-api".into(), "billing".into()],
                leeway_seconds: 30,
                max_token_ttl_seconds: 900,
                token_lifetimes: vec![],
            },
            updates: broadcast::channel(1024).0,
            n_subscriptions: AtomicUsize::new(0),
            n_connections: AtomicUsize::new(0),
            since_revisions: Mutex::new(Vec::new()),
            heartbeats: AtomicBool::new(true),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            kill: watch::channel(false).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TrustBundleServiceServer::new(Service {
            shared: shared.clone(),
        });
        let pushed = shared.clone();
        let credentials = FakeCredentials::new(Box::new(move |change| {
            commit(
                &pushed,
                pb::bundle_change::Change::CredentialChanged(change),
            );
        }));
        let api_keys = ApiKeyServiceServer::new(fake_credentials::ApiKeys(credentials.clone()));
        let rotated = shared.clone();
        let secrets = FakeSecrets::new(Box::new(move |change| {
            commit(&rotated, pb::bundle_change::Change::SecretRotated(change));
        }));
        let secret_service = SecretServiceServer::new(fake_secrets::Secrets(secrets.clone()));
        let service_tokens =
            ServiceTokenServiceServer::new(fake_credentials::ServiceTokens(credentials.clone()));
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let counted = shared.clone();
        let incoming = TcpIncoming::from(listener).inspect(move |_| {
            counted.n_connections.fetch_add(1, Ordering::SeqCst);
        });
        let server = tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .add_service(api_keys)
                .add_service(service_tokens)
                .add_service(secret_service)
                .serve_with_incoming(incoming)
                .await;
        });
        FakeIssuer {
            addr,
            credentials,
            secrets,
            shared,
            server,
        }
    }

    /// Returns the address in the form `--issuer-addr` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets held subscriptions (and all later ones) proceed.
    pub fn release(&self) {
        self.shared.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Returns how many subscriptions were accepted so far.
    pub fn n_subscriptions(&self) -> usize {
        self.shared.n_subscriptions.load(Ordering::SeqCst)
    }

    /// Returns how many TCP connections were accepted so far (a refused TLS handshake
    /// counts here and not in [`Self::n_subscriptions`]).
    pub fn n_connections(&self) -> usize {
        self.shared.n_connections.load(Ordering::SeqCst)
    }

    /// Returns the `since_revision` of every subscription so far.
    pub fn since_revisions(&self) -> Vec<u64> {
        self.shared.since_revisions.lock().unwrap().clone()
    }

    /// Returns the current revision.
    pub fn revision(&self) -> u64 {
        self.shared.bundle.lock().unwrap().revision
    }

    /// Pauses or resumes heartbeats.
    pub fn set_heartbeats(&self, on: bool) {
        self.shared.heartbeats.store(on, Ordering::SeqCst);
    }

    /// Publishes (or republishes) `key`.
    pub fn upsert_key(&self, key: pb::Key) {
        self.commit(pb::bundle_change::Change::KeyUpserted(key));
    }

    /// Revokes the key `kid` now.
    pub fn revoke_key(&self, kid: &str) {
        let mut key = self.shared.bundle.lock().unwrap().keys[kid].clone();
        key.state = pb::KeyState::Revoked as i32;
        key.revoked_at = Some(timestamp(now_ms()));
        self.commit(pb::bundle_change::Change::KeyRevoked(key));
    }

    /// Adds a revocation entry.
    pub fn add_revocation(&self, entry: pb::RevocationEntry) {
        self.commit(pb::bundle_change::Change::RevocationAdded(entry));
    }

    fn commit(&self, change: pb::bundle_change::Change) {
        commit(&self.shared, change);
    }

    /// Stops serving: open streams end and new connections are refused.
    pub fn stop(&self) {
        let _ = self.shared.kill.send(true);
        self.server.abort();
    }
}

/// Commits `change` at the next revision and sends it to every subscriber.
fn commit(shared: &Shared, change: pb::bundle_change::Change) {
    {
        let mut bundle = shared.bundle.lock().unwrap();
        bundle.revision += 1;
        let revision = bundle.revision;
        match &change {
            pb::bundle_change::Change::KeyUpserted(key) => {
                bundle.keys.insert(key.kid.clone(), key.clone());
            }
            // A revoked key leaves the published set; the delta carries it to subscribers.
            pb::bundle_change::Change::KeyRevoked(key) => {
                bundle.keys.remove(&key.kid);
            }
            pb::bundle_change::Change::KeyUnpublished(kid) => {
                bundle.keys.remove(kid);
            }
            pb::bundle_change::Change::RevocationAdded(entry) => {
                bundle.revocations.push(entry.clone())
            }
            pb::bundle_change::Change::PolicyChanged(_)
            | pb::bundle_change::Change::CredentialChanged(_)
            | pb::bundle_change::Change::SecretRotated(_) => {}
        }
        let change = pb::BundleChange {
            revision,
            change: Some(change),
        };
        bundle.log.push(change.clone());
        let _ = shared.updates.send(update(
            revision,
            pb::trust_bundle_update::Kind::Delta(pb::TrustBundleDelta {
                changes: vec![change],
            }),
        ));
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn update(revision: u64, kind: pb::trust_bundle_update::Kind) -> pb::TrustBundleUpdate {
    pb::TrustBundleUpdate {
        revision,
        sent_at: Some(timestamp(now_ms())),
        kind: Some(kind),
    }
}

struct Service {
    shared: Arc<Shared>,
}

/// Drops credential and secret changes from `update` unless the reader asked for them.
fn for_reader(
    mut update: pb::TrustBundleUpdate,
    informed: bool,
    secrets_informed: bool,
) -> pb::TrustBundleUpdate {
    if let Some(pb::trust_bundle_update::Kind::Delta(delta)) = &mut update.kind {
        delta.changes.retain(|change| match change.change {
            Some(pb::bundle_change::Change::CredentialChanged(_)) => informed,
            Some(pb::bundle_change::Change::SecretRotated(_)) => secrets_informed,
            _ => true,
        });
    }
    update
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::TrustBundleUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl TrustBundleService for Service {
    type WatchTrustBundleStream = UpdateStream;

    async fn watch_trust_bundle(
        &self,
        request: Request<pb::WatchTrustBundleRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let expected = format!("Bearer {CREDENTIAL}");
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if presented != Some(expected.as_str()) {
            return Err(Status::unauthenticated("bad credential"));
        }
        let request = request.into_inner();
        let since = request.since_revision;
        // As the issuer: credential changes only to subscribers that ask for them.
        let informed = request.credential_changes;
        let secrets_informed = request.secret_changes;
        self.shared.n_subscriptions.fetch_add(1, Ordering::SeqCst);
        self.shared.since_revisions.lock().unwrap().push(since);
        let shared = self.shared.clone();
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let Ok(_permit) = shared.gate.acquire().await else {
                return;
            };
            let mut kill = shared.kill.subscribe();
            let (first, mut updates) = {
                let bundle = shared.bundle.lock().unwrap();
                let first = if since > 0 && since <= bundle.revision {
                    let changes = bundle
                        .log
                        .iter()
                        .filter(|change| change.revision > since)
                        .cloned()
                        .collect();
                    update(
                        bundle.revision,
                        pb::trust_bundle_update::Kind::Delta(pb::TrustBundleDelta { changes }),
                    )
                } else {
                    let snapshot = pb::TrustBundleSnapshot {
                        keys: bundle.keys.values().cloned().collect(),
                        revocations: bundle.revocations.clone(),
                        policy: Some(shared.policy.clone()),
                    };
                    update(
                        bundle.revision,
                        pb::trust_bundle_update::Kind::Snapshot(snapshot),
                    )
                };
                (first, shared.updates.subscribe())
            };
            if sender
                .send(Ok(for_reader(first, informed, secrets_informed)))
                .await
                .is_err()
            {
                return;
            }
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            loop {
                let message = tokio::select! {
                    message = updates.recv() => match message {
                        Ok(message) => message,
                        Err(_) => return,
                    },
                    _ = heartbeat.tick() => {
                        if !shared.heartbeats.load(Ordering::SeqCst) {
                            continue;
                        }
                        let revision = shared.bundle.lock().unwrap().revision;
                        update(revision, pb::trust_bundle_update::Kind::Heartbeat(pb::Heartbeat {}))
                    }
                    _ = kill.changed() => return,
                    () = sender.closed() => return,
                };
                if sender
                    .send(Ok(for_reader(message, informed, secrets_informed)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

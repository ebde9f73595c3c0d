//! The fake issuer's `SecretService`: `ReadSecret` per the proto contract (the current
//! value and, when asked, the previous one; NOT_FOUND for an unknown name;
//! PERMISSION_DENIED for a name the sidecar's credential may not read), and secret
//! rotations the test makes, each pushed as a `secret_rotated` event. Reads are counted,
//! can be slowed down, and can fail as an unreachable issuer's would. The other methods
//! answer UNIMPLEMENTED: the sidecar never calls them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_server::SecretService;
use tonic::{Request, Response, Status};

use crate::fake_issuer::CREDENTIAL;

/// Pushes a `SecretRotated` event on the fake's trust-bundle stream.
pub type Push = Box<dyn Fn(pb::SecretRotated) + Send + Sync>;

struct FakeSecret {
    current: (u64, Vec<u8>),
    previous: Option<(u64, Vec<u8>)>,
}

/// The state behind the service.
pub struct FakeSecrets {
    secrets: Mutex<HashMap<String, FakeSecret>>,
    /// Names the sidecar's credential lacks `secrets:read:` for.
    denied: Mutex<HashSet<String>>,
    reads: AtomicUsize,
    /// Reads fail with UNAVAILABLE, as through a dead issuer.
    unreachable: AtomicBool,
    delay: Mutex<Duration>,
    push: Push,
}

impl FakeSecrets {
    pub fn new(push: Push) -> Arc<Self> {
        Arc::new(FakeSecrets {
            secrets: Mutex::new(HashMap::new()),
            denied: Mutex::new(HashSet::new()),
            reads: AtomicUsize::new(0),
            unreachable: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            push,
        })
    }

    /// Registers `name` with version 1 = `value` (no event: nobody caches it yet).
    pub fn register(&self, name: &str, value: &[u8]) {
        self.secrets.lock().unwrap().insert(
            name.into(),
            FakeSecret {
                current: (1, value.to_vec()),
                previous: None,
            },
        );
    }

    /// Makes `value` current (the old current becomes previous, or is revoked at once
    /// when `emergency`) and pushes the event; returns the new version.
    pub fn rotate(&self, name: &str, value: &[u8], emergency: bool) -> u64 {
        let event = {
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets
                .get_mut(name)
                .expect("rotating an unregistered secret");
            let version = secret.current.0 + 1;
            let old = std::mem::replace(&mut secret.current, (version, value.to_vec()));
            secret.previous = (!emergency).then_some(old);
            pb::SecretRotated {
                name: name.into(),
                current_version: version,
                previous_version: secret.previous.as_ref().map_or(0, |previous| previous.0),
            }
        };
        let version = event.current_version;
        (self.push)(event);
        version
    }

    /// Refuses (or allows again) reads of `name` by the sidecar's credential.
    pub fn deny(&self, name: &str, denied: bool) {
        let mut names = self.denied.lock().unwrap();
        if denied {
            names.insert(name.into());
        } else {
            names.remove(name);
        }
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Returns how many ReadSecret calls reached the fake.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// `SecretService` over [`FakeSecrets`].
pub struct Secrets(pub Arc<FakeSecrets>);

#[tonic::async_trait]
impl SecretService for Secrets {
    async fn read_secret(
        &self,
        request: Request<pb::ReadSecretRequest>,
    ) -> Result<Response<pb::ReadSecretResponse>, Status> {
        let fake = &self.0;
        fake.reads.fetch_add(1, Ordering::SeqCst);
        let delay = *fake.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if fake.unreachable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("connection refused"));
        }
        let expected = format!("Bearer {CREDENTIAL}");
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if presented != Some(expected.as_str()) {
            return Err(Status::unauthenticated("bad credential"));
        }
        let request = request.into_inner();
        if fake.denied.lock().unwrap().contains(&request.name) {
            return Err(Status::permission_denied("missing scope secrets:read"));
        }
        let secrets = fake.secrets.lock().unwrap();
        let secret = secrets
            .get(&request.name)
            .ok_or_else(|| Status::not_found("no such secret"))?;
        let value = |(version, value): &(u64, Vec<u8>), stage: pb::SecretStage| pb::SecretValue {
            version: *version,
            stage: stage as i32,
            value: value.clone(),
        };
        Ok(Response::new(pb::ReadSecretResponse {
            name: request.name.clone(),
            current: Some(value(&secret.current, pb::SecretStage::Current)),
            previous: secret
                .previous
                .as_ref()
                .filter(|_| request.include_previous)
                .map(|previous| value(previous, pb::SecretStage::Previous)),
        }))
    }

    async fn register_secret(
        &self,
        _: Request<pb::RegisterSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_secrets(
        &self,
        _: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_secret(
        &self,
        _: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn put_secret_version(
        &self,
        _: Request<pb::PutSecretVersionRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rotate_secret(
        &self,
        _: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rollback_secret(
        &self,
        _: Request<pb::RollbackSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn secret_history(
        &self,
        _: Request<pb::SecretHistoryRequest>,
    ) -> Result<Response<pb::SecretHistoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

//! Start-up and serving. `Issuer::start` opens and migrates the store, loads the KEK,
//! bootstraps keys and the development admin credential, and loads the bundle — all
//! before a port is bound. `Issuer::serve` then runs gRPC and HTTP on the given
//! listeners until `shutdown` resolves: new connections stop, trust-bundle streams close,
//! in-flight RPCs finish.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tessera_common::Clock;
use tessera_common::bundle::ValidationPolicy;
use tessera_common::credential::Credential;
use tessera_common::ids::ClientId;
use tessera_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::actions::ActionLinks;
use crate::api_keys::ApiKeys;
use crate::app::App;
use crate::audit::{Actor, AuditAction};
use crate::auth::{Authenticator, Caller, Scope};
use crate::config::{IssuerConfig, KekSource, StoreConfig};
use crate::credentials::Credentials;
use crate::grpc::action_service::ActionLinkServiceImpl;
use crate::grpc::admin_service::AdminServiceImpl;
use crate::grpc::api_key_service::ApiKeyServiceImpl;
use crate::grpc::bundle_service::TrustBundleServiceImpl;
use crate::grpc::key_service::KeyServiceImpl;
use crate::grpc::service_token_service::ServiceTokenServiceImpl;
use crate::grpc::token_service::TokenServiceImpl;
use crate::grpc::webhook_service::WebhookServiceImpl;
use crate::http::{self, HttpState};
use crate::hub::BundleHub;
use crate::kek::Kek;
use crate::keyring::{self, Keyring};
use crate::keys::KeyManager;
use crate::opaque_tokens::OpaqueTokens;
use crate::sessions::{SessionPolicy, SessionService};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{ApiKeyStore, OneTimeTokenStore, OpaqueTokenStore};
use crate::store::{SessionStore, Store};
use tessera_common::trace_context::TraceContextLayer;

/// How long a disabled client may keep working on other replicas.
const CLIENT_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long in-flight work may take to finish after shutdown begins.
/// The largest request message any issuer RPC accepts (tonic's default is 4 MiB). The
/// biggest legitimate request, an access token with many permissions and features or a
/// policy update, is a few KiB; anything near this is an attack or a bug.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The one store, seen through each of its aggregates' traits.
struct Aggregates {
    store: Arc<dyn Store>,
    session_store: Arc<dyn SessionStore>,
    api_key_store: Arc<dyn ApiKeyStore>,
    opaque_token_store: Arc<dyn OpaqueTokenStore>,
    secret_store: Arc<dyn crate::store::SecretStore>,
    one_time_token_store: Arc<dyn OneTimeTokenStore>,
    challenge_store: Arc<dyn crate::store::challenges::ChallengeStore>,
}

impl Aggregates {
    fn of<
        S: Store
            + SessionStore
            + ApiKeyStore
            + OpaqueTokenStore
            + crate::store::SecretStore
            + OneTimeTokenStore
            + crate::store::challenges::ChallengeStore,
    >(
        store: Arc<S>,
    ) -> Aggregates {
        Aggregates {
            store: store.clone(),
            session_store: store.clone(),
            api_key_store: store.clone(),
            opaque_token_store: store.clone(),
            secret_store: store.clone(),
            one_time_token_store: store.clone(),
            challenge_store: store,
        }
    }
}

/// Builds the challenge service: delivery providers from `--challenge-config`, the
/// one-time rate limiter, all over the one store.
fn challenges(
    config: &IssuerConfig,
    challenge_store: Arc<dyn crate::store::challenges::ChallengeStore>,
    store: &Arc<dyn Store>,
    keyring: &Arc<Keyring>,
    keys: &Arc<KeyManager>,
    one_time_token_store: &Arc<dyn OneTimeTokenStore>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Arc<crate::challenges::Challenges>> {
    let settings = &config.challenges;
    let delivery = crate::delivery::Delivery::new(settings, keys.clone(), challenge_store.clone())
        .map_err(anyhow::Error::msg)
        .context("building the challenge delivery providers")?;
    Ok(Arc::new(crate::challenges::Challenges::new(
        crate::challenges::ChallengeParts {
            store: challenge_store.clone(),
            main_store: store.clone(),
            keyring: keyring.clone(),
            delivery: Arc::new(delivery),
            limits: Arc::new(crate::one_time_limits::OneTimeLimits::new(
                challenge_store,
                settings.limits,
            )),
            clock: clock.clone(),
            link_base_url: settings.link_base_url.clone(),
            one_time_tokens: one_time_token_store.clone(),
        },
    )))
}

/// A started issuer, ready to serve.
pub struct Issuer {
    pub app: Arc<App>,
    config: IssuerConfig,
    shutdown_sender: watch::Sender<bool>,
    /// Path of the admin credential written at bootstrap, if any.
    pub admin_token_path: Option<PathBuf>,
}

impl Issuer {
    /// Opens the store, loads keys and bundle; binds nothing.
    pub async fn start(config: IssuerConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Issuer> {
        secure_data_dir(&config.data_dir)?;
        let Aggregates {
            store,
            session_store,
            api_key_store,
            opaque_token_store,
            secret_store,
            one_time_token_store,
            challenge_store,
        } = match &config.store {
            StoreConfig::Sqlite { path } => {
                info!(path = %path.display(), "using embedded SQLite store");
                let sqlite = Arc::new(SqliteStore::open(path).context("opening the SQLite store")?);
                Aggregates::of(sqlite)
            }
            StoreConfig::Postgres(options) => {
                info!(pool_size = options.pool_size, "using PostgreSQL store");
                let postgres = Arc::new(
                    PostgresStore::connect(options)
                        .await
                        .context("connecting to PostgreSQL")?,
                );
                Aggregates::of(postgres)
            }
        };
        let keyring = Arc::new(Keyring::from_kek(load_kek(&config.kek)?)?);
        let secrets = Arc::new(crate::secrets::Secrets::new(
            secret_store,
            store.clone(),
            keyring.clone(),
            clock.clone(),
            config.secrets_rotators.clone(),
        ));
        let pepper = keyring::load_stored_peppers(&keyring, store.as_ref())
            .await
            .context("loading the credential pepper versions")?;
        info!(%pepper, "credential pepper loaded");
        let credentials = Arc::new(Credentials::new(keyring.clone(), store.clone()));
        let api_keys = Arc::new(ApiKeys::new(
            api_key_store,
            credentials.clone(),
            clock.clone(),
        ));
        let opaque_tokens = Arc::new(OpaqueTokens::new(
            opaque_token_store,
            credentials.clone(),
            clock.clone(),
        ));
        let keys = Arc::new(KeyManager::new(
            store.clone(),
            keyring.clone(),
            clock.clone(),
            config.key_policies.clone(),
        )?);
        keys.reload()
            .await
            .context("loading signing keys (is this the right KEK?)")?;
        keys.run_scheduled()
            .await
            .context("bootstrapping signing keys")?;
        keys.reload().await?;
        let auth = Arc::new(
            Authenticator::new(
                store.clone(),
                clock.clone(),
                credentials.clone(),
                CLIENT_CACHE_TTL,
            )
            .with_certificate_callers(certificate_callers(&config)?),
        );
        let admin_token_path = if config.bootstrap_admin {
            bootstrap_admin(&auth, &store, &config.data_dir).await?
        } else {
            None
        };
        crate::bootstrap::ensure_clients(&auth, &store, &config.bootstrap_clients).await?;
        let policy = ValidationPolicy::new(
            config.tokens.issuer.clone(),
            config.tokens.audiences.clone(),
            config.tokens.leeway,
            config.tokens.max_ttl,
        );
        let sessions = Arc::new(SessionService::new(
            session_store.clone(),
            keys.clone(),
            config.tokens.clone(),
            SessionPolicy {
                refresh_ttl: config.refresh_ttl,
                reuse_grace: config.refresh_reuse_grace,
                // The bundle's own horizon: what verifiers bound token lifetimes by.
                revocation_horizon: policy.revocation_horizon(),
            },
            credentials,
            clock.clone(),
        ));
        let live_revocations = session_store.live_revocations(clock.now()).await?;
        let hub = BundleHub::load(store.clone(), clock.clone(), policy, live_revocations).await?;
        let challenges = challenges(
            &config,
            challenge_store,
            &store,
            &keyring,
            &keys,
            &one_time_token_store,
            &clock,
        )?;
        let actions = Arc::new(ActionLinks::new(
            one_time_token_store,
            keys.clone(),
            hub.clone(),
            sessions.clone(),
            config.tokens.clone(),
            clock.clone(),
        ));
        let (shutdown_sender, shutdown) = watch::channel(false);
        let app = Arc::new(App {
            store,
            keys,
            hub,
            auth,
            sessions,
            session_store,
            api_keys,
            opaque_tokens,
            actions,
            challenges,
            secrets,
            clock,
            tokens: config.tokens.clone(),
            heartbeat: config.heartbeat,
            shutdown,
        });
        Ok(Issuer {
            app,
            config,
            shutdown_sender,
            admin_token_path,
        })
    }

    /// Serves gRPC on `grpc_listener` and HTTP on `http_listener` until `shutdown`.
    pub async fn serve(
        self,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.app.clone();
        crate::metrics::handle();
        let pump = tokio::spawn(
            app.hub
                .clone()
                .run_pump(app.keys.clone(), app.shutdown.clone()),
        );
        let scheduler = tokio::spawn(crate::scheduler::run(
            app.keys.clone(),
            app.store.clone(),
            app.session_store.clone(),
            crate::scheduler::Standing {
                api_keys: app.api_keys.clone(),
                opaque_tokens: app.opaque_tokens.clone(),
                actions: app.actions.clone(),
                challenges: app.challenges.clone(),
                secrets: app.secrets.clone(),
            },
            app.clock.clone(),
            self.config.rotation_check,
            app.shutdown.clone(),
        ));

        let usage_flusher = tokio::spawn(
            app.api_keys
                .clone()
                .run_usage_flusher(self.config.api_key_usage_flush, app.shutdown.clone()),
        );

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mut services = issuer_services(&app);
        services.add(health_service);
        services.add_reflection()?;
        for name in &services.names {
            health_reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }

        // Requests carrying a W3C `traceparent` continue the caller's trace (DESIGN §9).
        let mut builder = Server::builder().layer(TraceContextLayer);
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(server_tls(tls)?)?;
        }
        let served = services.names.clone();
        let grpc_router = builder.add_routes(services.routes.routes());

        let http = http::router(HttpState {
            app: app.clone(),
            public_url: self.config.public_url.clone(),
            jwks_max_age: jwks_max_age(&self.config),
        });

        let (stop_sender, stop) = watch::channel(false);
        let shutdown_sender = self.shutdown_sender;
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: closing streams, finishing in-flight requests");
            for name in &served {
                health_reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            let _ = shutdown_sender.send(true);
            let _ = stop_sender.send(true);
        });

        info!(grpc = %grpc_listener.local_addr()?, http = %http_listener.local_addr()?, "tessera-issuer serving");
        let mut grpc_stop = stop.clone();
        let grpc = grpc_router.serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            async move {
                let _ = grpc_stop.wait_for(|stopped| *stopped).await;
            },
        );
        let mut http_stop = stop.clone();
        let http = axum::serve(http_listener, http).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        });
        let (grpc_result, http_result) = tokio::join!(
            async {
                let mut deadline_stop = stop.clone();
                tokio::select! {
                    result = grpc => result.map_err(anyhow::Error::from),
                    _ = async {
                        let _ = deadline_stop.wait_for(|stopped| *stopped).await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    } => {
                        warn!("in-flight gRPC work did not finish within the grace period");
                        Ok(())
                    }
                }
            },
            async { http.await.map_err(anyhow::Error::from) }
        );
        pump.abort();
        scheduler.abort();
        // The last usage batch: what was counted since the previous flush survives the stop.
        if let Err(error) = usage_flusher.await {
            warn!(%error, "api key usage flusher failed");
        }
        // Calls that finished after the flusher's last pass are written here.
        if let Err(error) = app.api_keys.flush_usage().await {
            warn!(%error, "api key usage flush at shutdown failed");
        }
        grpc_result?;
        http_result?;
        info!("tessera-issuer stopped");
        Ok(())
    }
}

/// Returns the gRPC server's TLS settings: its certificate and key and, when a client CA
/// is configured, optional client certificates (mTLS callers) verified against it.
fn server_tls(tls: &crate::config::TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    let cert = std::fs::read(&tls.cert_file)
        .with_context(|| format!("reading {}", tls.cert_file.display()))?;
    let key = std::fs::read(&tls.key_file)
        .with_context(|| format!("reading {}", tls.key_file.display()))?;
    let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca_file) = &tls.client_ca_file {
        let ca =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        tls_config = tls_config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true);
    }
    Ok(tls_config)
}

/// Returns how long a JWKS response may be cached: half the shortest prepublish window of
/// the published sets (only sets in the JWKS bound its cache lifetime), at most 5 minutes.
fn jwks_max_age(config: &IssuerConfig) -> Duration {
    config
        .key_policies
        .iter()
        .filter(|(key_set, _)| key_set.is_published())
        .map(|(_, policy)| policy.prepublish / 2)
        .min()
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(300))
}

/// The gRPC services the issuer answers, each registered once: the registration feeds
/// the router, the health service (SERVING while the server runs, NOT_SERVING from
/// shutdown on) and reflection, so no service can be answered yet missing from either.
#[derive(Default)]
pub struct Services {
    /// The registered services' gRPC names, in registration order.
    pub names: Vec<&'static str>,
    routes: RoutesBuilder,
}

impl Services {
    /// Registers `service` under its gRPC name.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<axum::http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Registers reflection (v1 and v1alpha) listing every service registered so far and
    /// itself: only what this server answers, although the shared descriptor set also
    /// describes the sidecar's ValidatorService.
    pub fn add_reflection(&mut self) -> Result<&mut Self, tonic_reflection::server::Error> {
        let own_names = [
            tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
            tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
        ];
        let reflection = || {
            self.names.iter().chain(&own_names).fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let (v1, v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
        Ok(self.add(v1).add(v1alpha))
    }
}

/// Registers the issuer's own services (every request message bounded by
/// [`MAX_REQUEST_BYTES`]).
pub fn issuer_services(app: &Arc<App>) -> Services {
    let mut services = Services::default();
    services
        .add(
            pb::key_service_server::KeyServiceServer::new(KeyServiceImpl { app: app.clone() })
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            pb::token_service_server::TokenServiceServer::new(TokenServiceImpl {
                app: app.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            pb::trust_bundle_service_server::TrustBundleServiceServer::new(
                TrustBundleServiceImpl { app: app.clone() },
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            pb::admin_service_server::AdminServiceServer::new(AdminServiceImpl {
                app: app.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            // A webhook payload may be up to its own limit; the service refuses larger
            // ones with a typed answer, and gRPC anything past the headroom.
            pb::webhook_service_server::WebhookServiceServer::new(WebhookServiceImpl {
                app: app.clone(),
            })
            .max_decoding_message_size(
                crate::webhooks::format::MAX_PAYLOAD_BYTES + MAX_REQUEST_BYTES,
            ),
        )
        .add(
            pb::challenge_service_server::ChallengeServiceServer::new(
                crate::grpc::challenge_service::ChallengeServiceImpl { app: app.clone() },
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            pb::api_key_service_server::ApiKeyServiceServer::new(ApiKeyServiceImpl {
                app: app.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            // A secret's value may be up to its own limit (PutSecretVersion); larger ones
            // get a typed refusal, and gRPC refuses anything past the headroom.
            pb::secret_service_server::SecretServiceServer::new(
                crate::grpc::secret_service::SecretServiceImpl {
                    app: app.clone(),
                    secrets: app.secrets.clone(),
                },
            )
            .max_decoding_message_size(crate::secrets::MAX_VALUE_BYTES + MAX_REQUEST_BYTES),
        )
        .add(
            pb::service_token_service_server::ServiceTokenServiceServer::new(
                ServiceTokenServiceImpl { app: app.clone() },
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add(
            pb::action_link_service_server::ActionLinkServiceServer::new(ActionLinkServiceImpl {
                app: app.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    services
}

/// Builds the certificate-identified callers of the mTLS configuration.
fn certificate_callers(config: &IssuerConfig) -> anyhow::Result<Vec<([u8; 32], Caller)>> {
    let Some(tls) = &config.tls else {
        return Ok(Vec::new());
    };
    tls.mtls_clients
        .iter()
        .map(|client| {
            let mut fingerprint = [0u8; 32];
            for (slot, pair) in fingerprint
                .iter_mut()
                .zip(client.fingerprint_sha256.as_bytes().chunks(2))
            {
                let text = std::str::from_utf8(pair)?;
                *slot = u8::from_str_radix(text, 16)?;
            }
            let caller = Caller {
                client_id: ClientId::new(format!("mtls:{}", client.name))?,
                scopes: client
                    .scopes
                    .iter()
                    .filter_map(|scope| Scope::parse(scope))
                    .collect(),
                tenants: client.tenants.clone(),
            };
            Ok((fingerprint, caller))
        })
        .collect()
}

/// Creates the data directory 0700 or tightens an existing one: it holds the development
/// KEK, the admin credential and the database, and even their names and sizes are nobody
/// else's business.
fn secure_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    let changed = crate::files::ensure_private_dir(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    if let Some(old_mode) = changed {
        warn!(
            path = %data_dir.display(),
            old_mode = format_args!("{old_mode:o}"),
            "data directory was open to others; changed its mode to 0700"
        );
    }
    Ok(())
}

/// Tightens a secret file an earlier version (or an operator's copy) left readable by
/// others to 0600, with a warning; a missing file is created 0600 later by its writer.
fn tighten_secret_file(path: &Path) -> anyhow::Result<()> {
    let changed = crate::files::tighten_if_present(path)
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    if let Some(old_mode) = changed {
        warn!(
            path = %path.display(),
            old_mode = format_args!("{old_mode:o}"),
            "secret file was readable by others; changed its mode to 0600"
        );
    }
    Ok(())
}

fn load_kek(source: &KekSource) -> anyhow::Result<Kek> {
    Ok(match source {
        KekSource::Inline(text) => Kek::from_base64(text)?,
        KekSource::File(path) => Kek::from_file(path)?,
        KekSource::DevelopmentFile(path) => {
            tighten_secret_file(path)?;
            let (kek, created) = Kek::load_or_create(path)?;
            if created {
                info!(path = %path.display(), "created a development KEK (mode 0600); use --kek-file or TESSERA_KEK in production");
            }
            kek
        }
    })
}

/// Ensures `<data-dir>/admin.token` holds a working admin credential (development setup).
async fn bootstrap_admin(
    auth: &Authenticator,
    store: &Arc<dyn Store>,
    data_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let path = data_dir.join("admin.token");
    tighten_secret_file(&path)?;
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(credential) = Credential::parse(text.trim())
        && let Ok(client_id) = ClientId::new(credential.id.clone())
        && store
            .client(&client_id)
            .await?
            .is_some_and(|client| client.disabled_at.is_none())
    {
        return Ok(Some(path));
    }
    let audit = Actor::system(
        uuid::Uuid::now_v7().to_string(),
        "bootstrap admin credential",
    )
    .entry(auth.now(), AuditAction::ClientCreate, String::new());
    let (_, credential) = auth
        .create_client(
            "bootstrap-admin".into(),
            vec![Scope::Admin],
            Vec::new(),
            audit,
        )
        .await?;
    let text = zeroize::Zeroizing::new(credential.expose());
    crate::files::write_private(&path, text.as_bytes())
        .with_context(|| format!("writing admin credential to {}", path.display()))?;
    info!(path = %path.display(), "created an admin credential (mode 0600)");
    Ok(Some(path))
}

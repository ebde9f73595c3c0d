//! OpenTelemetry traces end to end (DESIGN §9): one trace from the application through
//! the real `tessera-sidecar` and the real `tessera-issuer` to the issuer's store.
//!
//! The test is the collector: an OTLP/gRPC `TraceService` in process, on 127.0.0.1:0,
//! that both programs export to (`OTEL_EXPORTER_OTLP_ENDPOINT`, batches every 100 ms by
//! `OTEL_BSP_SCHEDULE_DELAY`). It is also the application: it sends `ValidateToken` over
//! the sidecar's Unix socket with its own `traceparent`, for a token of a key the sidecar
//! has not seen, so the sidecar must resync with the issuer on that request's behalf.
//!
//! The sidecar reaches the issuer through a proxy in this process that can stall the
//! connections it already carries: the sidecar's stream is stalled before the rotation, so
//! the new key's push never arrives and only the resync (a new connection) can bring it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;

use crate::sidecar::harness::{bundle_reader_credential, describe, issue, sidecar_binary};
use crate::support::grpc::runtime;
use crate::support::http;
use crate::support::issuer::Issuer;
use crate::support::process::{clean_command, free_local_addr, send_sigterm, wait_with_timeout};
use crate::support::scratch_database::ScratchDatabase;
use crate::support::test_database::database_url;
use crate::support::wait::{patience, poll_until};

/// How long the issuer keeps an authenticated client's record before reading it from the
/// store again (`CLIENT_CACHE_TTL` in `issuer/src/server.rs`), plus a margin.
const CLIENT_CACHE_TTL: Duration = Duration::from_millis(5_500);
/// The batch span processor's export interval in both programs.
const EXPORT_DELAY_MS: &str = "100";

/// The journey: application → sidecar (`ValidateToken`, unknown kid) → resync with the
/// issuer (`WatchTrustBundle`) → the issuer's store (the sidecar's credential, read from
/// the database once its cached record has expired). Every span shares the application's
/// trace id and hangs from the one before it.
#[test]
fn an_unknown_kid_resync_is_one_trace_from_the_application_to_the_issuers_store() {
    journey(&[], "sqlite", "info");
}

/// The same journey with the issuer on PostgreSQL: its store spans say `postgresql`.
#[test]
fn on_postgres_the_same_trace_reaches_the_database() {
    let Some(server_url) = database_url() else {
        return;
    };
    let database = ScratchDatabase::create(&server_url, "tessera_traces");
    journey(&["--database-url", &database.url], "postgresql", "info");
}

/// With `RUST_LOG=debug` the programs' debug-level handler spans (which the OTLP layer
/// leaves out) are current where the next hop is called: the trace still passes through,
/// from the nearest span the layer exports.
#[test]
fn with_debug_logs_the_trace_still_passes_from_hop_to_hop() {
    journey(&[], "sqlite", "debug");
}

/// Runs the journey against an issuer started with `issuer_args` whose store is
/// `db_system`, both programs logging at `log_level`, and checks the trace.
fn journey(issuer_args: &[&str], db_system: &str, log_level: &str) {
    let runtime = runtime();
    let collector = Collector::start(&runtime);
    let root = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::builder(root.path(), "issuer")
        .args(issuer_args.iter().copied())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY_MS)
        .env("RUST_LOG", log_level)
        .start();
    let credential_file = bundle_reader_credential(&issuer, root.path());
    let proxy = StallingProxy::start(&runtime, issuer.grpc_addr);
    let mut sidecar = TracedSidecar::start(
        root.path(),
        &format!("http://{}", proxy.addr),
        &credential_file,
        &collector.endpoint(),
        log_level,
    );
    let subscribed_at = Instant::now();

    // The sidecar holds the current key; its stream is stalled before the rotation, so the
    // successor's push stays in the proxy.
    let before = issue(&issuer, "alice", 600, &[]);
    proxy.stall_open_connections();
    let rotated = issuer.cli_json(&["keys", "rotate", "--reason", "e2e traces"]);
    let new_kid = rotated["new_kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no new_kid: {rotated}"))
        .to_owned();
    assert_ne!(new_kid, before.kid);
    let token = poll_until(
        patience(Duration::from_secs(10)),
        Duration::from_millis(100),
        || {
            let issued = issue(&issuer, "alice", 600, &[]);
            (issued.kid == new_kid).then_some(issued)
        },
    )
    .unwrap_or_else(|| panic!("no token signed by the new key {new_kid}"));

    // Past the issuer's cache of the sidecar's client record, the resync's authentication
    // reads the store: the database hop the trace must show.
    std::thread::sleep(CLIENT_CACHE_TTL.saturating_sub(subscribed_at.elapsed()));

    let app = AppSpan::new();
    let verdict = runtime.block_on(validate_traced(&sidecar.socket, &token.token, &app));
    // The resync normally lands within the 250 ms the request waits for it; on a slow
    // machine the answer may be UNKNOWN_KID, but the key still arrives by the resync.
    assert!(
        verdict.valid || verdict.reason() == pb::Reason::UnknownKid,
        "the traced validation: {}",
        describe(&verdict)
    );
    let learnt = poll_until(
        patience(Duration::from_secs(5)),
        Duration::from_millis(50),
        || {
            let verdict = runtime.block_on(validate_traced(
                &sidecar.socket,
                &token.token,
                &AppSpan::new(),
            ));
            verdict.valid.then_some(verdict)
        },
    );
    assert!(
        learnt.is_some(),
        "the sidecar never learnt {new_kid}: the resync did not deliver it; sidecar log:\n{}",
        sidecar.log()
    );

    // The issuer's span of a streaming RPC lasts as long as the stream (the task feeding
    // it runs in a child span); the sidecar's graceful stop ends the stream, and flushes
    // the sidecar's own spans.
    sidecar.stop();

    let wanted = |spans: &Spans| spans.journey(&app).ok();
    let journey = poll_until(
        patience(Duration::from_secs(15)),
        Duration::from_millis(100),
        || wanted(&collector.spans()),
    );
    let spans = collector.spans();
    let journey = journey.unwrap_or_else(|| {
        panic!(
            "the trace of {} is incomplete: {}\nspans of that trace:\n{}\nsidecar log:\n{}\n\
             issuer log:\n{}",
            app.trace_id_hex(),
            spans.journey(&app).unwrap_err(),
            spans.render_trace(&app.trace_id),
            sidecar.log(),
            issuer.log()
        )
    });

    eprintln!(
        "the trace of the application's request:\n{}",
        spans.render_trace(&app.trace_id)
    );

    // The sidecar continues the application's span, the issuer the sidecar's.
    let sidecar_server = spans.get(&journey.sidecar_server);
    assert_eq!(sidecar_server.service, "tessera-sidecar");
    assert_eq!(
        sidecar_server.attribute("rpc.method").as_deref(),
        Some("/tessera.v1.ValidatorService/ValidateToken")
    );
    assert_eq!(sidecar_server.span.parent_span_id, app.span_id.to_vec());
    let issuer_server = spans.get(&journey.issuer_server);
    assert_eq!(issuer_server.service, "tessera-issuer");
    assert_eq!(
        issuer_server.attribute("rpc.method").as_deref(),
        Some("/tessera.v1.TrustBundleService/WatchTrustBundle")
    );
    let issuer_parent = spans.get(&issuer_server.span.parent_span_id);
    assert_eq!(issuer_parent.service, "tessera-sidecar");
    assert_eq!(issuer_parent.span.name, "bundle.subscribe");
    assert_eq!(issuer_parent.attribute("resync").as_deref(), Some("true"));
    assert!(
        spans.descends_from(&issuer_parent.span.span_id, &journey.sidecar_server),
        "the resync's span does not hang from the validation's"
    );
    // The store call beneath the issuer's RPC.
    let store = spans.get(&journey.store);
    assert_eq!(store.service, "tessera-issuer");
    assert_eq!(store.span.name, "store.client");
    assert_eq!(store.attribute("db.system").as_deref(), Some(db_system));
    assert_eq!(
        store.attribute("db.operation.name").as_deref(),
        Some("client")
    );
    // Every span of the journey is in the application's trace.
    for id in [
        &journey.sidecar_server,
        &journey.issuer_server,
        &issuer_parent.span.span_id,
        &journey.store,
    ] {
        assert_eq!(spans.get(id).span.trace_id, app.trace_id.to_vec());
    }

    // Store calls outside traced work (the bundle pump polls the event log every second)
    // are not exported as traces of their own.
    let roots: Vec<&str> = spans
        .0
        .values()
        .filter(|exported| {
            exported.span.name.starts_with("store.") && exported.span.parent_span_id.is_empty()
        })
        .map(|exported| exported.span.name.as_str())
        .collect();
    assert!(
        roots.is_empty(),
        "store spans exported without a parent: {roots:?}"
    );

    // No exported attribute carries a token or a credential.
    let sidecar_credential = std::fs::read_to_string(&credential_file).expect("credential");
    let admin_credential = issuer.admin_token();
    let secrets = [
        ("the validated token", token.token.as_str()),
        (
            "a token's signature",
            token.token.rsplit('.').next().unwrap_or_default(),
        ),
        ("the sidecar's credential", sidecar_credential.trim()),
        ("the admin credential", admin_credential.trim()),
    ];
    for (name, secret) in secrets {
        assert!(secret.len() >= 16, "{name} is too short to look for");
        if let Some((span, key)) = spans.attribute_containing(secret) {
            panic!("{name} was exported in attribute `{key}` of span `{span}`");
        }
    }
}

// === the application ===

/// The application's own span: a trace id and span id of its making.
struct AppSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

impl AppSpan {
    fn new() -> AppSpan {
        let trace_id = *uuid::Uuid::new_v4().as_bytes();
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        AppSpan { trace_id, span_id }
    }

    fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The W3C header, sampled.
    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }
}

/// `ValidateToken{token}` over the sidecar's socket, sent from `app`'s span.
async fn validate_traced(socket: &Path, token: &str, app: &AppSpan) -> pb::ValidateTokenResponse {
    let endpoint = format!("unix:{}", socket.display());
    let channel = Endpoint::from_shared(endpoint)
        .expect("a unix: endpoint")
        .connect()
        .await
        .expect("connect to the sidecar's socket");
    let mut request = tonic::Request::new(pb::ValidateTokenRequest {
        token: token.to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        app.traceparent().parse().expect("an ASCII header"),
    );
    ValidatorServiceClient::new(channel)
        .validate_token(request)
        .await
        .unwrap_or_else(|status| panic!("ValidateToken failed: {status:?}"))
        .into_inner()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

// === the collector ===

/// An OTLP/gRPC trace receiver keeping every request it is sent.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[derive(Clone)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn start(runtime: &Runtime) -> Collector {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the collector");
        let addr = listener.local_addr().expect("the collector's address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Receiver(received.clone()));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Collector { addr, received }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Spans {
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        let mut spans = HashMap::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|resource| text_of(&resource.attributes, "service.name"))
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.insert(
                            span.span_id.clone(),
                            ExportedSpan {
                                service: service.clone(),
                                span: span.clone(),
                            },
                        );
                    }
                }
            }
        }
        Spans(spans)
    }
}

/// A span as exported, with the `service.name` of the program that exported it.
#[derive(Clone, Debug)]
struct ExportedSpan {
    service: String,
    span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl ExportedSpan {
    /// The attribute `key`, as text.
    fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }
}

/// The spans of the journey, by span id.
#[derive(Debug)]
struct Journey {
    sidecar_server: Vec<u8>,
    issuer_server: Vec<u8>,
    store: Vec<u8>,
}

/// Every span received, by span id.
struct Spans(HashMap<Vec<u8>, ExportedSpan>);

impl Spans {
    fn get(&self, span_id: &[u8]) -> &ExportedSpan {
        self.0
            .get(span_id)
            .unwrap_or_else(|| panic!("no span {} was exported", hex(span_id)))
    }

    /// Finds the journey of `app`'s request: the sidecar's server span whose parent is the
    /// application's span, an issuer server span below it, and a store span below that.
    fn journey(&self, app: &AppSpan) -> Result<Journey, String> {
        let sidecar_server = self
            .0
            .values()
            .find(|exported| {
                exported.service == "tessera-sidecar"
                    && exported.span.name == "grpc.server"
                    && exported.span.parent_span_id == app.span_id
            })
            .ok_or("no sidecar server span whose parent is the application's span")?;
        let issuer_server = self
            .0
            .values()
            .find(|exported| {
                exported.service == "tessera-issuer"
                    && exported.span.name == "grpc.server"
                    && self.descends_from(&exported.span.span_id, &sidecar_server.span.span_id)
            })
            .ok_or("no issuer server span below the sidecar's server span")?;
        let store = self
            .0
            .values()
            .find(|exported| {
                exported.service == "tessera-issuer"
                    && exported.span.name.starts_with("store.")
                    && self.descends_from(&exported.span.span_id, &issuer_server.span.span_id)
            })
            .ok_or("no store span below the issuer's server span")?;
        Ok(Journey {
            sidecar_server: sidecar_server.span.span_id.clone(),
            issuer_server: issuer_server.span.span_id.clone(),
            store: store.span.span_id.clone(),
        })
    }

    /// Whether `ancestor` is on the chain of parents of `span_id` (exported spans only;
    /// `span_id` itself excluded).
    fn descends_from(&self, span_id: &[u8], ancestor: &[u8]) -> bool {
        let mut seen = HashSet::new();
        let mut current = self.0.get(span_id);
        while let Some(exported) = current {
            let parent = &exported.span.parent_span_id;
            if parent.as_slice() == ancestor {
                return true;
            }
            if !seen.insert(parent.clone()) {
                return false;
            }
            current = self.0.get(parent);
        }
        false
    }

    /// The name and key of the first attribute (of a span or of its events) whose value
    /// contains `needle`.
    fn attribute_containing(&self, needle: &str) -> Option<(String, String)> {
        self.0.values().find_map(|exported| {
            let span = &exported.span;
            span.attributes
                .iter()
                .chain(span.events.iter().flat_map(|event| &event.attributes))
                .find(|attribute| {
                    attribute
                        .value
                        .as_ref()
                        .is_some_and(|value| format!("{value:?}").contains(needle))
                })
                .map(|attribute| (span.name.clone(), attribute.key.clone()))
        })
    }

    /// The spans of `trace_id`, one line each, for failure messages.
    fn render_trace(&self, trace_id: &[u8]) -> String {
        let mut lines: Vec<String> = self
            .0
            .values()
            .filter(|exported| exported.span.trace_id == trace_id)
            .map(|exported| {
                format!(
                    "  {} {} id={} parent={}",
                    exported.service,
                    exported.span.name,
                    hex(&exported.span.span_id),
                    hex(&exported.span.parent_span_id)
                )
            })
            .collect();
        lines.sort();
        if lines.is_empty() {
            format!("  (none; {} spans of other traces)", self.0.len())
        } else {
            lines.join("\n")
        }
    }
}

/// The text of attribute `key` among `attributes` (strings as they are, other values in
/// their debug form).
fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?;
    Some(match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    })
}

// === the proxy ===

/// A TCP proxy to the issuer that can stall the connections it carries: a stalled
/// connection stops delivering the issuer's bytes (the sidecar sees a silent stream) and
/// closes when the sidecar closes it; connections opened later are not stalled.
struct StallingProxy {
    addr: SocketAddr,
    opened: Arc<AtomicU64>,
    /// Connections numbered below this are stalled.
    stalled_below: Arc<AtomicU64>,
}

impl StallingProxy {
    fn start(runtime: &Runtime, upstream: SocketAddr) -> StallingProxy {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let opened = Arc::new(AtomicU64::new(0));
        let stalled_below = Arc::new(AtomicU64::new(0));
        let (counter, stalled) = (opened.clone(), stalled_below.clone());
        runtime.spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let number = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(forward(downstream, upstream, number, stalled.clone()));
            }
        });
        StallingProxy {
            addr,
            opened,
            stalled_below,
        }
    }

    /// Stalls every connection opened so far.
    fn stall_open_connections(&self) {
        let opened = self.opened.load(Ordering::SeqCst);
        assert!(
            opened > 0,
            "the sidecar has no connection to the issuer to stall"
        );
        self.stalled_below.store(opened, Ordering::SeqCst);
    }
}

/// Carries one connection until either side closes it.
async fn forward(
    downstream: TcpStream,
    upstream: SocketAddr,
    number: u64,
    stalled_below: Arc<AtomicU64>,
) {
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = downstream.into_split();
    let (mut from_issuer, mut to_issuer) = upstream.into_split();
    let requests = tokio::io::copy(&mut from_client, &mut to_issuer);
    let answers = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = from_issuer.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if number < stalled_below.load(Ordering::SeqCst) {
                // Stalled: the issuer's bytes go no further, for good.
                std::future::pending::<()>().await;
            }
            to_client.write_all(&buffer[..n]).await?;
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}

// === the sidecar ===

/// The real `tessera-sidecar`, exporting spans to the collector.
struct TracedSidecar {
    child: Child,
    socket: std::path::PathBuf,
    log_path: std::path::PathBuf,
}

impl TracedSidecar {
    /// Starts the sidecar on `<root>/traced.sock` against `issuer_url` and waits until
    /// `/readyz` answers 200 (it then holds the issuer's bundle).
    fn start(
        root: &Path,
        issuer_url: &str,
        credential: &Path,
        otlp: &str,
        log_level: &str,
    ) -> TracedSidecar {
        let socket = root.join("traced.sock");
        let log_path = root.join("traced-sidecar.stderr.log");
        let http_addr = free_local_addr();
        let child = clean_command(sidecar_binary())
            .arg("--issuer-addr")
            .arg(issuer_url)
            .arg("--socket")
            .arg(&socket)
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--issuer-token-file")
            .arg(credential)
            .env("RUST_LOG", log_level)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY_MS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("create the sidecar log"))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start tessera-sidecar: {error}"));
        let mut sidecar = TracedSidecar {
            child,
            socket,
            log_path,
        };
        let ready = poll_until(
            patience(Duration::from_secs(30)),
            Duration::from_millis(20),
            || {
                if let Ok(Some(status)) = sidecar.child.try_wait() {
                    panic!("the sidecar exited ({status}); log:\n{}", sidecar.log());
                }
                let ready = http::get(http_addr, "/readyz", &[])
                    .is_ok_and(|response| response.status == 200);
                (ready && sidecar.socket.exists()).then_some(())
            },
        );
        assert!(
            ready.is_some(),
            "the sidecar was not ready; log:\n{}",
            sidecar.log()
        );
        sidecar
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// SIGTERM; panics unless it exits with status 0 within 10 s.
    fn stop(&mut self) {
        assert!(send_sigterm(self.child.id()), "kill -s TERM the sidecar");
        let status = wait_with_timeout(&mut self.child, patience(Duration::from_secs(10)));
        assert!(
            status.is_some_and(|status| status.success()),
            "the sidecar did not stop cleanly ({status:?}); log:\n{}",
            self.log()
        );
    }
}

impl Drop for TracedSidecar {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = send_sigterm(self.child.id());
        if wait_with_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! `docker compose up` without Docker: `docker-compose.yml` (parsed with PyYAML) is run as
//! local processes. Each Tessera service (one with a `build`) starts with the `command`,
//! `environment`, `volumes` and `working_dir` written in the file, in `depends_on` order,
//! and a service that others wait for as `service_healthy` must pass its own `healthcheck`
//! command first; then the demo application's healthcheck — its check: tokens from the
//! issuer with its bootstrapped credential, answered 200/401/403 through the sidecar's
//! socket — must pass. So a wrong path, address, variable or missing bootstrap step in
//! the file fails here.
//!
//! The mapping from containers to this machine, and nothing more:
//! - named volume `V` → the directory `<tmp>/volumes/V`; bind mount `./P` → the
//!   repository's `P`; `working_dir` `/app` of the demo → `<tmp>/image-demo-app`, built as
//!   examples/python/Dockerfile builds `/app` (the example's files, stubs generated into
//!   `generated/` by its `generate.sh`). Every argument and variable naming a path under
//!   a mount target (or the working dir) is rewritten onto the local directory.
//! - `0.0.0.0:P`, `127.0.0.1:P`, `localhost:P` inside a service, and `S:P` for a service
//!   `S` anywhere → `127.0.0.1:L`, one free local port `L` per (service, container port).
//! - programs: `tessera-issuer`, `tessera-sidecar` → the built binaries; `python` → the
//!   test venv's (grpcio, the same pins as examples/python/requirements.txt); `curl` →
//!   this machine's.
//! - the images (`postgres`, `otel-collector`, `prometheus`) do not run; the issuer's
//!   `postgres://…@postgres:5432/…` becomes a scratch database on the test server (so the
//!   test is skipped, like every PostgreSQL case, when none answers); spans sent to the
//!   absent collector are dropped by the exporter (which logs each failed export).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::sidecar::harness::sidecar_binary;
use crate::support::binaries::workspace_root;
use crate::support::http;
use crate::support::issuer::issuer_binary;
use crate::support::process::{
    clean_command, free_local_addr, run_with_timeout, send_sigterm, wait_with_timeout,
};
use crate::support::python::tools;
use crate::support::test_database::database_url;
use crate::support::wait::{patience, poll_until};

/// Services that run from this repository's code; the others are third-party images.
const TESSERA_SERVICES: [&str; 3] = ["issuer", "sidecar", "demo-app"];
/// The third-party images, not run here.
const IMAGE_SERVICES: [&str; 3] = ["postgres", "otel-collector", "prometheus"];
/// The demo image's working directory (examples/python/Dockerfile: `WORKDIR /app`).
const DEMO_WORKDIR: &str = "/app";
/// How long a service may take to pass its healthcheck.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

/// `docker-compose.yml` as JSON, through PyYAML.
fn compose_file() -> Value {
    yaml_as_json(&workspace_root().join("docker-compose.yml"))
}

fn yaml_as_json(path: &Path) -> Value {
    let mut command = Command::new(&tools().python);
    command
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    output.assert_success(&format!("PyYAML on {}", path.display()));
    serde_json::from_str(&output.stdout).expect("PyYAML printed JSON")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `environment` as pairs (map or `K=V` list form).
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect(),
        Value::Array(_) => strings(&service["environment"])
            .into_iter()
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("K=V");
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `depends_on` names (list or map form) and whether each must be healthy.
fn dependencies(service: &Value) -> Vec<(String, bool)> {
    match &service["depends_on"] {
        Value::Object(map) => map
            .iter()
            .map(|(name, spec)| (name.clone(), spec["condition"] == "service_healthy"))
            .collect(),
        Value::Array(_) => strings(&service["depends_on"])
            .into_iter()
            .map(|name| (name, false))
            .collect(),
        _ => Vec::new(),
    }
}

/// Services in an order where each comes after what it depends on.
fn start_order(services: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < services.len() {
        let before = order.len();
        for (name, service) in services {
            if !order.contains(name)
                && dependencies(service)
                    .iter()
                    .all(|(dependency, _)| order.contains(dependency))
            {
                order.push(name.clone());
            }
        }
        assert!(order.len() > before, "depends_on has a cycle: {order:?}");
    }
    order
}

/// A volume entry `SOURCE:TARGET[:MODE]`: (source, target).
fn mount(entry: &str) -> (String, String) {
    let mut parts = entry.splitn(3, ':');
    let source = parts.next().expect("source").to_owned();
    let target = parts
        .next()
        .unwrap_or_else(|| panic!("volume `{entry}` names no target"))
        .to_owned();
    (source, target)
}

/// The container → local mapping of one run.
struct Mapping {
    root: PathBuf,
    services: BTreeSet<String>,
    ports: BTreeMap<(String, u16), SocketAddr>,
    database_url: String,
    demo_image: PathBuf,
}

impl Mapping {
    /// The local address of `service`'s container port `port`.
    fn addr(&mut self, service: &str, port: u16) -> SocketAddr {
        *self
            .ports
            .entry((service.to_owned(), port))
            .or_insert_with(free_local_addr)
    }

    /// The local directories of `service`'s mount targets (and working dir), longest
    /// target first.
    fn mounts(&self, name: &str, service: &Value) -> Vec<(String, PathBuf)> {
        let mut mounts: Vec<(String, PathBuf)> = strings(&service["volumes"])
            .iter()
            .map(|entry| {
                let (source, target) = mount(entry);
                let local = match source.strip_prefix("./") {
                    Some(relative) => workspace_root().join(relative),
                    None => {
                        let dir = self.root.join("volumes").join(&source);
                        std::fs::create_dir_all(&dir).expect("volume directory");
                        dir
                    }
                };
                (target, local)
            })
            .collect();
        if let Some(workdir) = service["working_dir"].as_str() {
            assert_eq!(
                (name, workdir),
                ("demo-app", DEMO_WORKDIR),
                "only the demo image's working dir is mapped"
            );
            mounts.push((workdir.to_owned(), self.demo_image.clone()));
        }
        mounts.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        mounts
    }

    /// `value` as `service` sees it, rewritten for this machine.
    fn value(&mut self, service: &str, mounts: &[(String, PathBuf)], value: &str) -> String {
        if (value.starts_with("postgres://") || value.starts_with("postgresql://"))
            && value.contains("@postgres:")
        {
            return self.database_url.clone();
        }
        let own_hosts = ["0.0.0.0", "127.0.0.1", "localhost"];
        let hosts: Vec<(String, String)> = own_hosts
            .iter()
            .map(|host| ((*host).to_owned(), service.to_owned()))
            .chain(
                self.services
                    .iter()
                    .map(|name| (name.clone(), name.clone())),
            )
            .collect();
        let mut text = self.replace_addresses(value, &hosts);
        for (target, local) in mounts {
            text = replace_path(&text, target, local);
        }
        text
    }

    /// Replaces every `HOST:PORT` in `text` (HOST whole, not the end of a longer name) in
    /// one pass, so that a replacement is never rewritten again; `hosts` pairs each host
    /// with the service whose port it names.
    fn replace_addresses(&mut self, text: &str, hosts: &[(String, String)]) -> String {
        let mut out = String::new();
        let mut index = 0;
        'scan: while index < text.len() {
            let before_ok = text[..index]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
            if before_ok {
                for (host, service) in hosts {
                    let Some(after) = text[index..]
                        .strip_prefix(host.as_str())
                        .and_then(|rest| rest.strip_prefix(':'))
                    else {
                        continue;
                    };
                    let digits = after.chars().take_while(char::is_ascii_digit).count();
                    if digits == 0 {
                        continue;
                    }
                    let port: u16 = after[..digits].parse().expect("a port");
                    out.push_str(&self.addr(service, port).to_string());
                    index = text.len() - after.len() + digits;
                    continue 'scan;
                }
            }
            let next = text[index..].chars().next().expect("in bounds");
            out.push(next);
            index += next.len_utf8();
        }
        out
    }

    fn program(&self, program: &str) -> PathBuf {
        match program {
            "tessera-issuer" => issuer_binary(),
            "tessera-sidecar" => sidecar_binary(),
            "python" => tools().python.clone(),
            "curl" => PathBuf::from("curl"),
            other => panic!("no local program for `{other}`"),
        }
    }
}

/// `text` with each path equal to or below `target` (at a value boundary) moved to
/// `local`.
fn replace_path(text: &str, target: &str, local: &Path) -> String {
    let is_boundary = |c: Option<char>| c.is_none_or(|c| matches!(c, '=' | ',' | ';' | ' ' | '\n'));
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(target) {
        let before = rest[..at].chars().last();
        let after = rest[at + target.len()..].chars().next();
        out.push_str(&rest[..at]);
        if is_boundary(before) && (after == Some('/') || is_boundary(after)) {
            out.push_str(&local.display().to_string());
        } else {
            out.push_str(target);
        }
        rest = &rest[at + target.len()..];
    }
    out.push_str(rest);
    out
}

/// One started service; stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
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

/// A command (`["prog", args…]` from the file) rewritten for this machine.
fn local_command(mapping: &mut Mapping, name: &str, service: &Value, argv: &[String]) -> Command {
    let mounts = mapping.mounts(name, service);
    let (program, args) = argv.split_first().expect("a command");
    let mut command = clean_command(mapping.program(program));
    for arg in args {
        command.arg(mapping.value(name, &mounts, arg));
    }
    for (key, value) in environment(service) {
        command.env(&key, mapping.value(name, &mounts, &value));
    }
    let cwd = match service["working_dir"].as_str() {
        Some(workdir) => mapping.value(name, &mounts, workdir).into(),
        None => mapping.root.join("cwd").join(name),
    };
    std::fs::create_dir_all(&cwd).expect("working directory");
    command.current_dir(cwd);
    command
}

/// Runs `service`'s healthcheck (`["CMD", …]`) once; returns (passed, output).
fn healthcheck(mapping: &mut Mapping, name: &str, service: &Value) -> (bool, String) {
    let test = strings(&service["healthcheck"]["test"]);
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD"),
        "{name}: only [\"CMD\", …] healthchecks are run here"
    );
    let command = local_command(mapping, name, service, &test[1..]);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    (
        output.success(),
        format!("stdout:\n{}\nstderr:\n{}", output.stdout, output.stderr),
    )
}

/// Copies the demo image's `/app` into `dir` as examples/python/Dockerfile builds it.
fn build_demo_image(dir: &Path) {
    let dockerfile = std::fs::read_to_string(workspace_root().join("examples/python/Dockerfile"))
        .expect("examples/python/Dockerfile");
    for line in [
        "WORKDIR /app",
        "COPY examples/python/ ./",
        "./generate.sh /app/generated /proto",
    ] {
        assert!(
            dockerfile.contains(line),
            "examples/python/Dockerfile no longer says `{line}`, which this test mirrors"
        );
    }
    let source = workspace_root().join("examples/python");
    std::fs::create_dir_all(dir).expect("image dir");
    for entry in std::fs::read_dir(&source).expect("examples/python") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let mut generate = Command::new("bash");
    generate
        .arg(dir.join("generate.sh"))
        .arg(dir.join("generated"))
        .arg(workspace_root().join("proto"))
        .env("PYTHON", &tools().python);
    run_with_timeout(generate, patience(Duration::from_secs(120)))
        .assert_success("generate.sh in the demo image");
}

#[test]
fn compose_topology_runs_from_the_file_as_local_processes_on_postgres() {
    let Some(server_url) = database_url() else {
        return;
    };
    let database = ScratchDatabase::create(&server_url);
    let compose = compose_file();
    let services = compose["services"].as_object().expect("services");
    let root = tempfile::tempdir().expect("tempdir");
    let demo_image = root.path().join("image-demo-app");
    build_demo_image(&demo_image);
    let mut mapping = Mapping {
        root: root.path().to_path_buf(),
        services: services.keys().cloned().collect(),
        ports: BTreeMap::new(),
        database_url: database.url.clone(),
        demo_image,
    };

    let order = start_order(services);
    let must_be_healthy: BTreeSet<String> = services
        .values()
        .flat_map(dependencies)
        .filter_map(|(name, healthy)| healthy.then_some(name))
        .collect();
    let mut running: Vec<Running> = Vec::new();
    for name in order
        .iter()
        .filter(|name| !IMAGE_SERVICES.contains(&name.as_str()))
    {
        assert!(
            TESSERA_SERVICES.contains(&name.as_str()),
            "service `{name}` is neither a Tessera service nor a known image"
        );
        let service = &services[name.as_str()];
        assert!(
            service.get("build").is_some(),
            "{name} is built from this repository"
        );
        let argv = strings(&service["command"]);
        let mut command = local_command(&mut mapping, name, service, &argv);
        let log = root.path().join(format!("{name}.log"));
        let log_file = File::create(&log).expect("log");
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({argv:?}): {error}"));
        running.push(Running {
            name: name.clone(),
            child,
            log,
        });
        if must_be_healthy.contains(name) || name == "demo-app" {
            wait_healthy(&mut mapping, name, service, &mut running);
        }
    }

    // Discovery names the URL the other containers reach the issuer at.
    let issuer = &services["issuer"];
    let public_url = environment(issuer)
        .into_iter()
        .find(|(key, _)| key == "TESSERA_PUBLIC_URL")
        .map(|(_, value)| value)
        .expect("the issuer sets TESSERA_PUBLIC_URL");
    assert_eq!(
        public_url, "http://issuer:8080",
        "the compose issuer's public URL"
    );
    let http_addr = mapping.addr("issuer", 8080);
    let discovery = http::get(http_addr, "/.well-known/openid-configuration", &[])
        .expect("discovery")
        .json();
    let expected = format!(
        "{}/.well-known/jwks.json",
        mapping.value("issuer", &[], &public_url)
    );
    assert_eq!(discovery["jwks_uri"], expected.as_str(), "{discovery}");

    // The demo application's check, once more, on the whole running topology.
    let (passed, output) = healthcheck(&mut mapping, "demo-app", &services["demo-app"]);
    assert!(
        passed && output.contains("demo check passed"),
        "the demo check failed:\n{output}\n{}",
        logs(&running)
    );
    for line in [
        "ok: valid token: 200",
        "ok: tampered token: 401",
        "ok: token without invoices:read: 403",
    ] {
        assert!(output.contains(line), "{line} missing from:\n{output}");
    }
    // The bootstrap wrote each credential only where its user reads it.
    let volumes = root.path().join("volumes");
    for (volume, present) in [
        ("sidecar-credentials", "token"),
        ("demo-credentials", "token"),
    ] {
        assert!(
            volumes.join(volume).join(present).is_file(),
            "{volume}/{present}"
        );
    }

    // Each must have been running until now; then stop them in reverse order.
    for service in &mut running {
        assert!(
            matches!(service.child.try_wait(), Ok(None)),
            "{} exited early; log:\n{}",
            service.name,
            service.log()
        );
    }
    while let Some(service) = running.pop() {
        drop(service);
    }
}

/// Polls `name`'s healthcheck until it passes; panics with every log if it does not.
fn wait_healthy(mapping: &mut Mapping, name: &str, service: &Value, running: &mut [Running]) {
    let mut last = String::new();
    let healthy = poll_until(patience(HEALTHY_WITHIN), Duration::from_millis(250), || {
        let current = running.last_mut().expect("the service just started");
        if let Ok(Some(status)) = current.child.try_wait() {
            return Some(Err(format!("{name} exited ({status})")));
        }
        let (passed, output) = healthcheck(mapping, name, service);
        last = output;
        passed.then_some(Ok(()))
    });
    match healthy {
        Some(Ok(())) => {}
        Some(Err(why)) => panic!("{why}; logs:\n{}", logs(running)),
        None => panic!(
            "{name} not healthy within {HEALTHY_WITHIN:?}; last check:\n{last}\nlogs:\n{}",
            logs(running)
        ),
    }
}

fn logs(running: &[Running]) -> String {
    running
        .iter()
        .map(|service| format!("--- {} ---\n{}", service.name, service.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The static half: the file asks for nothing this repository does not provide.
#[test]
fn compose_file_needs_no_manual_step_and_wires_metrics_and_traces() {
    let compose = compose_file();
    let text = std::fs::read_to_string(workspace_root().join("docker-compose.yml")).unwrap();
    assert!(
        compose.get("secrets").is_none() && !text.contains("./secrets"),
        "the file needs files a fresh clone does not have"
    );
    let services = compose["services"].as_object().expect("services");
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .expect("volumes")
        .keys()
        .map(String::as_str)
        .collect();
    for (name, service) in services {
        assert!(service.get("secrets").is_none(), "{name} uses secrets:");
        for entry in strings(&service["volumes"]) {
            let (source, _) = mount(&entry);
            match source.strip_prefix("./") {
                Some(relative) => assert!(
                    workspace_root().join(relative).exists(),
                    "{name}: bind mount {source} does not exist"
                ),
                None => assert!(
                    declared.contains(source.as_str()),
                    "{name}: volume {source}"
                ),
            }
        }
        if let Some(build) = service.get("build") {
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(
                workspace_root().join(dockerfile).is_file(),
                "{name}: {dockerfile}"
            );
        }
    }
    for name in TESSERA_SERVICES.iter().chain(&IMAGE_SERVICES) {
        assert!(services.contains_key(*name), "no `{name}` service");
    }

    // Prometheus scrapes the ports the issuer and the sidecar serve /metrics on, under
    // the job names alerts.yml assumes, and loads alerts.yml from its mounted directory.
    let prometheus = yaml_as_json(&workspace_root().join("deploy/prometheus/prometheus.yml"));
    let jobs: BTreeMap<String, Vec<String>> = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .map(|job| {
            let targets = job["static_configs"][0]["targets"].clone();
            (
                job["job_name"].as_str().unwrap().to_owned(),
                strings(&targets),
            )
        })
        .collect();
    assert_eq!(
        jobs["tessera-issuer"],
        [format!("issuer:{}", http_port(&services["issuer"]))]
    );
    assert_eq!(
        jobs["tessera-sidecar"],
        [format!("sidecar:{}", http_port(&services["sidecar"]))]
    );
    assert_eq!(
        strings(&prometheus["rule_files"]),
        ["/etc/prometheus/alerts.yml"]
    );
    assert_eq!(
        strings(&services["prometheus"]["volumes"]),
        ["./deploy/prometheus:/etc/prometheus:ro"]
    );

    // Both programs export spans to the collector's OTLP/gRPC port.
    let collector = yaml_as_json(&workspace_root().join("deploy/otel-collector.yaml"));
    let receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("otlp grpc endpoint");
    let port = receiver.rsplit_once(':').expect("host:port").1;
    for name in ["issuer", "sidecar"] {
        let endpoint = environment(&services[name])
            .into_iter()
            .find(|(key, _)| key == "OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|(_, value)| value);
        assert_eq!(
            endpoint,
            Some(format!("http://otel-collector:{port}")),
            "{name}"
        );
    }

    // The build context never carries local state or secrets.
    let dockerignore = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    let patterns: BTreeSet<&str> = dockerignore
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    for pattern in [
        "target/",
        "tessera-data/",
        "**/tessera-data/",
        "*.token",
        "**/*.token",
        "secrets/",
        "*bundle*.json",
        "**/*bundle*.json",
        "examples/python/generated/",
        "**/node_modules/",
    ] {
        assert!(patterns.contains(pattern), ".dockerignore lacks {pattern}");
    }
}

/// The port of `--http-addr 0.0.0.0:PORT` in a service's command.
fn http_port(service: &Value) -> u16 {
    let command = strings(&service["command"]);
    let at = command
        .iter()
        .position(|arg| arg == "--http-addr")
        .expect("--http-addr");
    command[at + 1]
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("a port")
}

#[test]
fn compose_mapping_rewrites_addresses_and_paths_only_at_boundaries() {
    let mut mapping = Mapping {
        root: PathBuf::from("/tmp/x"),
        services: ["issuer".to_owned(), "sidecar".to_owned()].into(),
        ports: BTreeMap::new(),
        database_url: "postgres://local/db".into(),
        demo_image: PathBuf::from("/tmp/x/image"),
    };
    let grpc = mapping.addr("issuer", 50051);
    let mounts = [(
        "/run/secrets/tessera".to_owned(),
        PathBuf::from("/tmp/v/creds"),
    )];
    assert_eq!(
        mapping.value("sidecar", &mounts, "http://issuer:50051"),
        format!("http://{grpc}")
    );
    assert_eq!(
        mapping.value("issuer", &mounts, "0.0.0.0:50051"),
        grpc.to_string()
    );
    assert_eq!(
        mapping.value(
            "sidecar",
            &mounts,
            "name=x,scope=bundle:read,file=/run/secrets/tessera/token"
        ),
        "name=x,scope=bundle:read,file=/tmp/v/creds/token"
    );
    assert_eq!(
        mapping.value("sidecar", &mounts, "/run/secrets/tessera-other/token"),
        "/run/secrets/tessera-other/token"
    );
    assert_eq!(
        mapping.value(
            "issuer",
            &mounts,
            "postgres://postgres:pw@postgres:5432/tessera"
        ),
        "postgres://local/db"
    );
    assert_eq!(mapping.value("issuer", &mounts, "myissuer:1"), "myissuer:1");
    // One pass: a rewritten address is not rewritten again.
    let http = mapping.addr("issuer", 8080);
    assert_eq!(
        mapping.value(
            "issuer",
            &mounts,
            "http://127.0.0.1:8080/readyz 0.0.0.0:8080"
        ),
        format!("http://{http}/readyz {http}")
    );
}

/// A fresh database `tessera_compose_<random>` on the test server, dropped with its
/// connections when the test ends (after the processes that use it).
struct ScratchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    fn create(server_url: &str) -> ScratchDatabase {
        let name = format!("tessera_compose_{}", uuid::Uuid::new_v4().simple());
        execute(server_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let (base, query) = match server_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server_url, String::new()),
        };
        let authority_start = base.find("://").map_or(0, |index| index + 3);
        let server = match base[authority_start..].find('/') {
            Some(slash) => &base[..authority_start + slash],
            None => base,
        };
        ScratchDatabase {
            server_url: server_url.to_owned(),
            url: format!("{server}/{name}{query}"),
            name,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = execute(&self.server_url, &sql) {
            eprintln!("could not drop {}: {error}", self.name);
        }
    }
}

fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

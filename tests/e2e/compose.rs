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

mod file;
mod mapping;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use self::file::{
    compose_file, dependencies, environment, mount, start_order, strings, yaml_as_json,
};
use self::mapping::Mapping;
use crate::support::scratch_database::ScratchDatabase;

use crate::support::binaries::workspace_root;
use crate::support::http;
use crate::support::process::{clean_command, run_with_timeout, send_sigterm, wait_with_timeout};
use crate::support::python::tools;
use crate::support::test_database::database_url;
use crate::support::wait::{patience, poll_until};

/// Services that run from this repository's code; the others are third-party images.
const TESSERA_SERVICES: [&str; 3] = ["issuer", "sidecar", "demo-app"];
/// The third-party images, not run here.
const IMAGE_SERVICES: [&str; 3] = ["postgres", "otel-collector", "prometheus"];
/// How long a service may take to pass its healthcheck.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

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
    let database = ScratchDatabase::create(&server_url, "tessera_compose");
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
    // The bootstrap wrote each credential (0600) only into the volume its user mounts.
    let volumes = root.path().join("volumes");
    for volume in ["sidecar-credentials", "demo-credentials"] {
        let files: Vec<String> = std::fs::read_dir(volumes.join(volume))
            .expect("the credentials volume")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(files, ["token"], "{volume}");
        let mode = std::fs::metadata(volumes.join(volume).join("token"))
            .expect("token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{volume}/token");
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
        [
            "/etc/prometheus/alerts.yml",
            "/etc/prometheus/one_time_alerts.yml",
            "/etc/prometheus/secrets_alerts.yml"
        ]
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

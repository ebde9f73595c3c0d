//! The container → local mapping of the compose test (documented in `compose.rs`): named
//! volumes and the demo image's working dir to directories, container addresses to free
//! local ports, the database URL to a scratch database, programs to local ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::file::{mount, strings};
use crate::sidecar::harness::sidecar_binary;
use crate::support::binaries::workspace_root;
use crate::support::issuer::issuer_binary;
use crate::support::process::free_local_addr;
use crate::support::python::tools;

/// The demo image's working directory (examples/python/Dockerfile: `WORKDIR /app`).
pub(super) const DEMO_WORKDIR: &str = "/app";

/// The container → local mapping of one run.
pub(super) struct Mapping {
    pub(super) root: PathBuf,
    pub(super) services: BTreeSet<String>,
    pub(super) ports: BTreeMap<(String, u16), SocketAddr>,
    pub(super) database_url: String,
    pub(super) demo_image: PathBuf,
}

impl Mapping {
    /// The local address of `service`'s container port `port`.
    pub(super) fn addr(&mut self, service: &str, port: u16) -> SocketAddr {
        *self
            .ports
            .entry((service.to_owned(), port))
            .or_insert_with(free_local_addr)
    }

    /// The local directories of `service`'s mount targets (and working dir), longest
    /// target first.
    pub(super) fn mounts(&self, name: &str, service: &Value) -> Vec<(String, PathBuf)> {
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
    pub(super) fn value(
        &mut self,
        service: &str,
        mounts: &[(String, PathBuf)],
        value: &str,
    ) -> String {
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
    pub(super) fn replace_addresses(&mut self, text: &str, hosts: &[(String, String)]) -> String {
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

    pub(super) fn program(&self, program: &str) -> PathBuf {
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
pub(super) fn replace_path(text: &str, target: &str, local: &Path) -> String {
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

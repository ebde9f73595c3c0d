//! The `tessera.dev/*` pod annotations: the opt-in, the status the injector leaves, and
//! the per-pod overrides, each parsed and validated here (annotation values are
//! untrusted: whoever may create a pod writes them).

use std::collections::BTreeMap;

use clap::ValueEnum;

/// Opts a pod in: `"true"` injects, `"false"` (or no annotation) leaves the pod alone.
pub const INJECT: &str = "tessera.dev/inject";
/// Set to [`STATUS_INJECTED`] on every pod the injector mutated (Vault Agent's
/// `agent-inject-status`): a pod carrying it is not injected again.
pub const STATUS: &str = "tessera.dev/status";
/// The value of [`STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";
/// Overrides the sidecar image.
pub const IMAGE: &str = "tessera.dev/image";
/// Overrides the socket path (its directory becomes the shared volume's mount path).
pub const SOCKET_PATH: &str = "tessera.dev/socket-path";
/// Overrides the stale policy: `fail-closed` or `serve`.
pub const STALE_POLICY: &str = "tessera.dev/stale-policy";
/// Overrides the bundle age, in seconds, after which the stale policy applies.
pub const MAX_STALENESS_SECONDS: &str = "tessera.dev/max-staleness-seconds";
/// Overrides the Secret holding the sidecar's credential.
pub const CREDENTIAL_SECRET: &str = "tessera.dev/credential-secret";
/// Audiences the sidecar accepts, comma-separated (default: the bundle's).
pub const AUDIENCES: &str = "tessera.dev/audiences";
/// Overrides how the sidecar runs: `container` or `native`.
pub const SIDECAR_MODE: &str = "tessera.dev/sidecar-mode";

/// The longest annotation value read; longer values are refused, not truncated.
const MAX_VALUE_LEN: usize = 1024;
/// The most audiences one pod may list.
const MAX_AUDIENCES: usize = 16;

/// What the sidecar does once its bundle is older than its maximum staleness (the
/// sidecar's `--stale-policy`, same spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StalePolicy {
    FailClosed,
    Serve,
}

impl StalePolicy {
    /// Returns the spelling the sidecar's `TESSERA_SIDECAR_STALE_POLICY` accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            StalePolicy::FailClosed => "fail-closed",
            StalePolicy::Serve => "serve",
        }
    }
}

/// How the sidecar runs in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SidecarMode {
    /// Appended to `spec.containers`: starts alongside the application, which may start
    /// before the socket exists (clients retry), and init containers cannot use it.
    Container,
    /// A Kubernetes native sidecar (1.29+): the first init container, with
    /// `restartPolicy: Always` and a startup probe, so the socket exists before any other
    /// init container or the application starts, and init containers get it too. On an
    /// older cluster the pod never leaves its init phase.
    Native,
}

/// A pod's request, read from its annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAnnotations {
    /// `tessera.dev/inject: "true"`.
    pub inject: bool,
    /// `tessera.dev/status: injected`.
    pub injected: bool,
    pub overrides: Overrides,
}

/// Per-pod overrides of the injector's defaults; `None` keeps the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub image: Option<String>,
    pub socket_path: Option<String>,
    pub stale_policy: Option<StalePolicy>,
    pub max_staleness_seconds: Option<u64>,
    pub credential_secret: Option<String>,
    pub audiences: Vec<String>,
    pub sidecar_mode: Option<SidecarMode>,
}

/// An annotation whose value the injector refuses; the message names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {detail}")]
pub struct AnnotationError {
    pub key: &'static str,
    pub detail: String,
}

/// Reads the `tessera.dev/*` annotations. Overrides are validated only for a pod that
/// opts in, so a stray bad value on a pod that does not cannot block it.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<PodAnnotations, AnnotationError> {
    let get = |key: &'static str| -> Result<Option<&str>, AnnotationError> {
        match annotations.get(key) {
            Some(value) if value.len() > MAX_VALUE_LEN => Err(AnnotationError {
                key,
                detail: format!("longer than {MAX_VALUE_LEN} bytes"),
            }),
            Some(value) => Ok(Some(value.trim())),
            None => Ok(None),
        }
    };
    let fail = |key: &'static str, detail: String| AnnotationError { key, detail };
    let inject = match get(INJECT)? {
        None => false,
        Some(value) if value.eq_ignore_ascii_case("true") => true,
        Some(value) if value.eq_ignore_ascii_case("false") => false,
        Some(value) => {
            return Err(fail(
                INJECT,
                format!("must be \"true\" or \"false\", not {value:?}"),
            ));
        }
    };
    let injected = get(STATUS)? == Some(STATUS_INJECTED);
    if !inject {
        return Ok(PodAnnotations {
            inject,
            injected,
            overrides: Overrides::default(),
        });
    }
    let image = get(IMAGE)?
        .map(|value| check_image(value).map(|()| value.to_owned()))
        .transpose()
        .map_err(|detail| fail(IMAGE, detail))?;
    let socket_path = get(SOCKET_PATH)?
        .map(|value| check_socket_path(value).map(|()| value.to_owned()))
        .transpose()
        .map_err(|detail| fail(SOCKET_PATH, detail))?;
    let stale_policy = get(STALE_POLICY)?
        .map(|value| {
            StalePolicy::from_str(value, false)
                .map_err(|_| format!("must be \"fail-closed\" or \"serve\", not {value:?}"))
        })
        .transpose()
        .map_err(|detail| fail(STALE_POLICY, detail))?;
    let max_staleness_seconds = get(MAX_STALENESS_SECONDS)?
        .map(|value| match value.parse::<u64>() {
            Ok(seconds) if (1..=31_536_000).contains(&seconds) => Ok(seconds),
            _ => Err(format!(
                "must be a whole number of seconds, 1 to 31536000, not {value:?}"
            )),
        })
        .transpose()
        .map_err(|detail| fail(MAX_STALENESS_SECONDS, detail))?;
    let credential_secret = get(CREDENTIAL_SECRET)?
        .map(|value| check_secret_name(value).map(|()| value.to_owned()))
        .transpose()
        .map_err(|detail| fail(CREDENTIAL_SECRET, detail))?;
    let sidecar_mode = get(SIDECAR_MODE)?
        .map(|value| {
            SidecarMode::from_str(value, false)
                .map_err(|_| format!("must be \"container\" or \"native\", not {value:?}"))
        })
        .transpose()
        .map_err(|detail| fail(SIDECAR_MODE, detail))?;
    let audiences = match get(AUDIENCES)? {
        None => Vec::new(),
        Some(value) => parse_audiences(value).map_err(|detail| fail(AUDIENCES, detail))?,
    };
    Ok(PodAnnotations {
        inject,
        injected,
        overrides: Overrides {
            image,
            socket_path,
            stale_policy,
            max_staleness_seconds,
            credential_secret,
            audiences,
            sidecar_mode,
        },
    })
}

/// Checks an image reference: non-empty, at most 512 bytes, no whitespace or control
/// characters (the registry and the kubelet judge the rest).
pub fn check_image(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 512 {
        return Err("must be 1 to 512 bytes".to_owned());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

/// Checks a Secret name: a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, at most 253 bytes).
pub fn check_secret_name(value: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.is_empty()
        || value.len() > 253
        || !value.chars().all(allowed)
        || !edge(value.chars().next())
        || !edge(value.chars().last())
    {
        return Err(format!("not a Secret name (DNS-1123 subdomain): {value:?}"));
    }
    Ok(())
}

/// Checks a socket path: absolute, in a directory other than `/` (the directory is the
/// shared volume's mount path), no `.`/`..`/empty component, only `[A-Za-z0-9._-]` in
/// components, and short enough for `sun_path` (107 bytes and a NUL).
pub fn check_socket_path(value: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{why}: {value:?}"));
    let Some(relative) = value.strip_prefix('/') else {
        return fail("must be an absolute path");
    };
    if value.len() > 107 {
        return fail("longer than a Unix socket path may be (107 bytes)");
    }
    let components: Vec<&str> = relative.split('/').collect();
    if components.len() < 2 {
        return fail("must be inside a directory other than /");
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
    };
    if !components.iter().all(|c| component_ok(c)) {
        return fail("components must be non-empty, not . or .., and use only [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Returns the directory of a path [`check_socket_path`] accepted.
pub fn socket_dir(socket_path: &str) -> &str {
    match socket_path.rfind('/') {
        Some(index) if index > 0 => &socket_path[..index],
        _ => "/",
    }
}

fn parse_audiences(value: &str) -> Result<Vec<String>, String> {
    let mut audiences: Vec<String> = Vec::new();
    for audience in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if audience.len() > 256
            || audience
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("not an audience: {audience:?}"));
        }
        if !audiences.iter().any(|known| known == audience) {
            audiences.push(audience.to_owned());
        }
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(format!("more than {MAX_AUDIENCES} audiences"));
    }
    Ok(audiences)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn opt_in_is_explicit() {
        assert!(!parse(&annotations(&[])).unwrap().inject);
        assert!(!parse(&annotations(&[(INJECT, "false")])).unwrap().inject);
        assert!(parse(&annotations(&[(INJECT, "true")])).unwrap().inject);
        assert!(parse(&annotations(&[(INJECT, "TRUE")])).unwrap().inject);
        let error = parse(&annotations(&[(INJECT, "yes")])).unwrap_err();
        assert_eq!(error.key, INJECT);
    }

    #[test]
    fn overrides_are_read_only_when_opted_in() {
        let pod = annotations(&[(IMAGE, "bad image"), (STALE_POLICY, "never")]);
        assert_eq!(parse(&pod).unwrap(), PodAnnotations::default());
        let mut pod = pod;
        pod.insert(INJECT.to_owned(), "true".to_owned());
        assert_eq!(parse(&pod).unwrap_err().key, IMAGE);
    }

    #[test]
    fn every_override_is_parsed() {
        let pod = annotations(&[
            (INJECT, "true"),
            (IMAGE, "registry.example.com/tessera:0.2.0"),
            (SOCKET_PATH, "/var/run/tv/v.sock"),
            (STALE_POLICY, "serve"),
            (MAX_STALENESS_SECONDS, "600"),
            (CREDENTIAL_SECRET, "billing-api-tessera"),
            (AUDIENCES, "billing-api, ledger,billing-api"),
            (SIDECAR_MODE, "native"),
            (STATUS, "injected"),
        ]);
        let parsed = parse(&pod).unwrap();
        assert!(parsed.injected);
        assert_eq!(
            parsed.overrides,
            Overrides {
                image: Some("registry.example.com/tessera:0.2.0".to_owned()),
                socket_path: Some("/var/run/tv/v.sock".to_owned()),
                stale_policy: Some(StalePolicy::Serve),
                max_staleness_seconds: Some(600),
                credential_secret: Some("billing-api-tessera".to_owned()),
                audiences: vec!["billing-api".to_owned(), "ledger".to_owned()],
                sidecar_mode: Some(SidecarMode::Native),
            }
        );
    }

    #[test]
    fn bad_overrides_name_their_annotation() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let cases = [
            (SOCKET_PATH, "relative.sock"),
            (SOCKET_PATH, "/top.sock"),
            (SOCKET_PATH, "/run/../etc/x.sock"),
            (SOCKET_PATH, "/run//x.sock"),
            (SOCKET_PATH, "/run/ten sor/x.sock"),
            (STALE_POLICY, "sometimes"),
            (SIDECAR_MODE, "init"),
            (MAX_STALENESS_SECONDS, "0"),
            (MAX_STALENESS_SECONDS, "-5"),
            (CREDENTIAL_SECRET, "UPPER"),
            (CREDENTIAL_SECRET, "-lead"),
            (AUDIENCES, "a b"),
            (IMAGE, ""),
            (IMAGE, long.as_str()),
        ];
        for (key, value) in cases {
            let pod = annotations(&[(INJECT, "true"), (key, value)]);
            assert_eq!(parse(&pod).unwrap_err().key, key, "{key}={value:?}");
        }
    }

    #[test]
    fn socket_dir_is_the_parent() {
        assert_eq!(socket_dir("/run/tessera/sidecar.sock"), "/run/tessera");
        assert_eq!(socket_dir("/a/b.sock"), "/a");
    }
}

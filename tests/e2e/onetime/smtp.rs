//! Challenge delivery to a real third-party SMTP server (issue 11, point 5): Python's
//! `aiosmtpd` (from the e2e venv) listens on a loopback port and writes every message it
//! receives to a directory; the real `tessera-issuer serve` is configured with
//! `--challenge-config` to deliver `otp_email` through it (plain SMTP, no STARTTLS). The
//! e-mail reaches `alice@example.com` carrying the code, StartChallenge's answer does not,
//! the code verifies once (a replay is ALREADY_USED), and the issuer never logs it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::ChallengeRefusal as Refused;
use tessera_proto::v1::challenge_service_client::ChallengeServiceClient;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;
use crate::support::process::free_local_addr;
use crate::support::python::tools;
use crate::support::wait::{patience, poll_until};

/// The tenant of the challenge.
const TENANT: &str = "acme";

/// An `aiosmtpd` server whose handler writes, per message `N`, the envelope recipients
/// (one a line) to `N.rcpt` and then the raw message to `N.eml` (renamed into place, so
/// a visible `.eml` is complete).
const SERVER: &str = r#"
import itertools, os, sys, time
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
numbers = itertools.count()

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = next(numbers)
        with open(os.path.join(out, f"{n}.rcpt"), "w") as f:
            f.write("\n".join(envelope.rcpt_tos) + "\n")
        partial = os.path.join(out, f".{n}.partial")
        with open(partial, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(partial, os.path.join(out, f"{n}.eml"))
        return "250 Message accepted for delivery"

controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print("listening", flush=True)
while True:
    time.sleep(3600)
"#;

/// The running aiosmtpd process; killed when dropped.
struct MailServer {
    child: Child,
    addr: SocketAddr,
    maildir: PathBuf,
    log: PathBuf,
}

impl MailServer {
    fn start(root: &Path) -> MailServer {
        let script = root.join("smtp_server.py");
        std::fs::write(&script, SERVER).unwrap();
        let maildir = root.join("mail");
        std::fs::create_dir_all(&maildir).unwrap();
        let log = root.join("aiosmtpd.log");
        let addr = free_local_addr();
        let child = Command::new(&tools().python)
            .arg(&script)
            .arg(addr.port().to_string())
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("aiosmtpd.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start aiosmtpd");
        let mut server = MailServer {
            child,
            addr,
            maildir,
            log,
        };
        let listening = poll_until(
            patience(Duration::from_secs(30)),
            Duration::from_millis(50),
            || {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("aiosmtpd exited ({status}): {}", server.log_text());
                }
                TcpStream::connect_timeout(&server.addr, Duration::from_millis(200))
                    .ok()
                    .map(|_| ())
            },
        );
        assert!(
            listening.is_some(),
            "aiosmtpd not listening on {}: {}",
            server.addr,
            server.log_text()
        );
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for message number `n`: (recipients, raw message).
    fn message(&self, n: usize) -> (Vec<String>, String) {
        let eml = self.maildir.join(format!("{n}.eml"));
        let arrived = poll_until(
            patience(Duration::from_secs(30)),
            Duration::from_millis(50),
            || eml.is_file().then_some(()),
        );
        assert!(
            arrived.is_some(),
            "no message {n} at aiosmtpd; its log:\n{}",
            self.log_text()
        );
        let recipients = std::fs::read_to_string(self.maildir.join(format!("{n}.rcpt")))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let raw = String::from_utf8_lossy(&std::fs::read(&eml).unwrap()).into_owned();
        (recipients, raw)
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes a quoted-printable body (soft line breaks, `=XX` escapes); other text as is.
fn quoted_printable_decoded(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=' && i + 2 < bytes.len())
            .then(|| u8::from_str_radix(&joined[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The 6-digit code after "code is " in a mail body.
fn code_in(body: &str) -> String {
    let start = body
        .find("code is ")
        .unwrap_or_else(|| panic!("no code sentence in the mail:\n{body}"))
        + "code is ".len();
    let code = body[start..start + 6].to_owned();
    assert!(
        code.bytes().all(|byte| byte.is_ascii_digit()),
        "not a 6-digit code: {code:?} in\n{body}"
    );
    code
}

#[test]
fn an_otp_email_reaches_a_real_aiosmtpd_server_verifies_once_and_stops_while_its_provider_is_disabled()
 {
    let root = tempfile::tempdir().unwrap();
    let mail = MailServer::start(root.path());
    let settings = root.path().join("challenges.toml");
    std::fs::write(
        &settings,
        format!(
            "[providers.mail]\nkind = \"smtp\"\nhost = \"{}\"\nport = {}\nstarttls = \"off\"\n\
             from = \"Tessera <no-reply@example.com>\"\ntimeout_seconds = 5\n\n\
             [methods.otp_email]\nprimary = \"mail\"\n",
            mail.addr.ip(),
            mail.addr.port()
        ),
    )
    .unwrap();
    let issuer = Issuer::builder(root.path(), "issuer")
        .args(["--challenge-config", settings.to_str().unwrap()])
        .start();
    let admin = issuer.admin_token();

    let rt = runtime();
    let mut challenges =
        rt.block_on(async { ChallengeServiceClient::new(connect(issuer.grpc_addr).await) });
    let started = rt
        .block_on(challenges.start_challenge(with_bearer(
            pb::StartChallengeRequest {
                method: pb::ChallengeMethod::OtpEmail as i32,
                user_id: "alice".into(),
                tenant_id: TENANT.into(),
                delivery: pb::ChallengeDelivery::Provider as i32,
                destination: "alice@example.com".into(),
                ..Default::default()
            },
            &admin,
        )))
        .expect("start challenge")
        .into_inner();
    assert_eq!(started.provider, "mail");
    assert!(started.code.is_empty() && started.link.is_empty());

    let (recipients, raw) = mail.message(0);
    assert_eq!(recipients, ["alice@example.com"]);
    let code = code_in(&quoted_printable_decoded(&raw));
    assert!(
        !format!("{started:?}").contains(&code),
        "StartChallenge's answer carries the code: {started:?}"
    );

    let verify = |code: &str| {
        rt.block_on(challenges.clone().verify_challenge(with_bearer(
            pb::VerifyChallengeRequest {
                challenge_id: started.challenge_id.clone(),
                tenant_id: TENANT.into(),
                code: code.into(),
                client_ip: String::new(),
            },
            &admin,
        )))
        .expect("verify challenge")
        .into_inner()
    };
    let first = verify(&code);
    assert!(first.verified, "the mailed code verifies: {first:?}");
    assert_eq!(first.user_id, "alice");
    let replay = verify(&code);
    assert!(!replay.verified);
    assert_eq!(
        Refused::try_from(replay.reason).expect("known reason"),
        Refused::AlreadyUsed
    );

    // Provider compromise through the CLI (seed 002 `providers disable`): with its only
    // provider disabled the method refuses to send; enabled again, mail flows.
    let mail_enabled = || {
        let listed = issuer.cli_json(&["providers", "list"]);
        let provider = listed
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["name"] == "mail"))
            .unwrap_or_else(|| panic!("`providers list` lacks `mail`: {listed}"))
            .clone();
        assert_eq!(provider["kind"], "smtp", "{provider}");
        provider["enabled"].as_bool().expect("enabled flag")
    };
    assert!(mail_enabled());
    issuer
        .cli(&[
            "providers",
            "disable",
            "mail",
            "--reason",
            "provider compromise drill",
        ])
        .assert_success("providers disable");
    assert!(!mail_enabled());
    let start = || {
        rt.block_on(challenges.clone().start_challenge(with_bearer(
            pb::StartChallengeRequest {
                method: pb::ChallengeMethod::OtpEmail as i32,
                user_id: "alice".into(),
                tenant_id: TENANT.into(),
                delivery: pb::ChallengeDelivery::Provider as i32,
                destination: "alice@example.com".into(),
                ..Default::default()
            },
            &admin,
        )))
    };
    let refused = start().expect_err("a start through a disabled provider is refused");
    assert_ne!(refused.code(), tonic::Code::Ok);
    issuer
        .cli(&["providers", "enable", "mail", "--reason", "drill over"])
        .assert_success("providers enable");
    assert!(mail_enabled());
    let again = start().expect("start after enable").into_inner();
    assert_eq!(again.provider, "mail");
    let (recipients, raw) = mail.message(1);
    assert_eq!(recipients, ["alice@example.com"]);
    let second_code = code_in(&quoted_printable_decoded(&raw));

    let stdout = std::fs::read_to_string(root.path().join("issuer.stdout.log")).unwrap();
    let stderr = issuer.log();
    assert!(!stderr.is_empty(), "the issuer logged nothing to check");
    for (name, log) in [("stdout", &stdout), ("stderr", &stderr)] {
        for code in [&code, &second_code] {
            assert!(
                !log.contains(code.as_str()),
                "the code {code} is in the issuer's {name}:\n{log}"
            );
        }
    }
}

//! The SMTP provider: one lettre transport per provider (tokio, rustls on aws-lc),
//! STARTTLS off, opportunistic, required, or TLS from the first byte. Each send opens a
//! connection, says its message and quits; no pool, since codes are sent rarely and a
//! failing server must fail this send (and let the backup take it), not a later one.

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message as Email};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, Provider, SendError, message_text};
use crate::config::delivery::{SmtpSecurity, SmtpSettings};

/// An SMTP relay.
pub struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: std::time::Duration,
}

impl SmtpProvider {
    /// Builds the transport of provider `name` (no connection is made yet).
    pub fn new(name: &str, settings: &SmtpSettings) -> Result<SmtpProvider, String> {
        let field = |key: &str| format!("providers.{name}.{key}");
        let tls_parameters = || -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &settings.ca_pem {
                let certificate = Certificate::from_pem(pem)
                    .map_err(|error| format!("{}: {error}", field("ca_file")))?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build_rustls()
                .map_err(|error| format!("{}: {error}", field("host")))
        };
        let tls = match settings.security {
            SmtpSecurity::Off => Tls::None,
            SmtpSecurity::Opportunistic => Tls::Opportunistic(tls_parameters()?),
            SmtpSecurity::Required => Tls::Required(tls_parameters()?),
            SmtpSecurity::Wrapper => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.as_str().to_owned(),
            ));
        }
        let from = settings
            .from
            .parse()
            .map_err(|_| format!("{}: not a mailbox", field("from")))?;
        Ok(SmtpProvider {
            transport: builder.build(),
            from,
            timeout: settings.timeout,
        })
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let to: Mailbox = message
            .destination
            .as_str()
            .parse()
            .map_err(|_| SendError::Destination("not an e-mail address".to_owned()))?;
        let (subject, body) = message_text(message);
        let email = Email::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|error| SendError::Destination(error.to_string()))?;
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if error.is_permanent() || error.is_transient() => {
                // The server's answer code, never its text (which may quote the message).
                let code = error
                    .status()
                    .map(|code| code.to_string())
                    .unwrap_or_else(|| "unknown".to_owned());
                Err(SendError::Rejected(format!("smtp {code}")))
            }
            Ok(Err(error)) => Err(SendError::Connect(
                if error.is_timeout() {
                    "timeout"
                } else if error.is_tls() {
                    "tls"
                } else {
                    "connection"
                }
                .to_owned(),
            )),
        }
    }
}

//! `redis`: a Redis ACL user's password with overlap. Redis users may hold several
//! passwords: `set` adds the new one (`ACL SETUSER u >new`), `test` authenticates with it
//! on a fresh connection, and `finish` removes the password leaving `previous`, so the
//! user holds at most the current and the previous password between rotations. An
//! emergency also removes the replaced one at once and ends the user's connections.
//!
//! The protocol is spoken directly (RESP2 over TCP, a dozen lines), not through a client
//! crate: the rotator sends four commands. The admin connection is the issuer's
//! configuration (`--secrets-redis-admin-url`), never a request's.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::random::random_string;
use super::{Created, Rotator, RotatorError, VersionView};
use crate::secrets::SecretValue;

const TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD_LENGTH: usize = 48;
const MAX_URL: usize = 512;
/// Largest reply line or bulk string read (replies here are tiny).
const MAX_REPLY: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisConfig {
    /// `redis://host:port`, without credentials.
    pub url: String,
    pub username: String,
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.url.len() > MAX_URL {
            return Err(format!("url: longer than {MAX_URL} bytes"));
        }
        let target = Target::parse(&self.url).ok_or("url: redis://host:port")?;
        if target.auth.is_some() {
            return Err("url: must not carry credentials".to_owned());
        }
        let ok = !self.username.is_empty()
            && self.username.len() <= 64
            && self
                .username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok || self.username == "default" {
            return Err("username: 1-64 of [A-Za-z0-9_.-], not `default`".to_owned());
        }
        Ok(())
    }
}

/// Where to connect, and as whom.
struct Target {
    address: String,
    auth: Option<(String, String)>,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let rest = url.strip_prefix("redis://")?;
        let rest = rest.trim_end_matches('/');
        let (auth, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or(("default", userinfo));
                let user = if user.is_empty() { "default" } else { user };
                (Some((user.to_owned(), password.to_owned())), address)
            }
            None => (None, rest),
        };
        if address.is_empty() || address.contains('/') {
            return None;
        }
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:6379")
        };
        Some(Target { address, auth })
    }
}

/// A reply: `Ok(text)` for simple strings, integers and bulk strings (arrays read and
/// dropped), `Err(message)` for an error reply.
type Reply = Result<String, String>;

/// One RESP2 connection.
struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(address: &str) -> Result<Connection, RotatorError> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| RotatorError::Target("Redis connection timed out".to_owned()))?
            .map_err(|_| RotatorError::Target(format!("Redis at {address} unreachable")))?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, RotatorError> {
        tokio::time::timeout(TIMEOUT, self.round_trip(args))
            .await
            .map_err(|_| RotatorError::Target("Redis command timed out".to_owned()))?
            .map_err(|_| RotatorError::Target("Redis connection failed".to_owned()))
    }

    async fn round_trip(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        zeroize::Zeroize::zeroize(&mut out);
        self.read_reply().await
    }

    async fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        (&mut self.stream)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if !line.ends_with(b"\r\n") {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| std::io::ErrorKind::InvalidData.into())
    }

    async fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line().await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(Ok(rest.to_owned())),
            "-" => Ok(Err(rest.to_owned())),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| std::io::ErrorKind::InvalidData)?;
                if len < 0 {
                    return Ok(Ok(String::new()));
                }
                let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidData)?;
                if len > MAX_REPLY {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                let mut body = vec![0u8; len + 2];
                self.stream.read_exact(&mut body).await?;
                body.truncate(len);
                Ok(Ok(String::from_utf8_lossy(&body).into_owned()))
            }
            "*" => {
                let count: i64 = rest.parse().map_err(|_| std::io::ErrorKind::InvalidData)?;
                for _ in 0..count.clamp(0, 1024) {
                    Box::pin(self.read_reply()).await?.ok();
                }
                Ok(Ok(String::new()))
            }
            _ => Err(std::io::ErrorKind::InvalidData.into()),
        }
    }
}

pub struct RedisRotator {
    config: RedisConfig,
    admin_url: Option<String>,
}

impl RedisRotator {
    pub fn new(config: RedisConfig, admin_url: Option<String>) -> RedisRotator {
        RedisRotator { config, admin_url }
    }

    async fn admin(&self) -> Result<Connection, RotatorError> {
        let url = self.admin_url.as_deref().ok_or_else(|| {
            RotatorError::Config("no --secrets-redis-admin-url configured".to_owned())
        })?;
        let target = Target::parse(url)
            .ok_or_else(|| RotatorError::Config("bad Redis admin URL".to_owned()))?;
        let mut connection = Connection::open(&target.address).await?;
        if let Some((user, password)) = &target.auth {
            connection
                .command(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                .await?
                .map_err(|_| RotatorError::Config("Redis admin AUTH refused".to_owned()))?;
        }
        Ok(connection)
    }

    /// `ACL SETUSER <user> <rules…>`; `tolerate` lists error texts that mean "already so".
    async fn setuser(&self, rules: &[&[u8]], tolerate: &str) -> Result<(), RotatorError> {
        let mut connection = self.admin().await?;
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", self.config.username.as_bytes()];
        args.extend_from_slice(rules);
        match connection.command(&args).await? {
            Ok(_) => Ok(()),
            Err(message) if !tolerate.is_empty() && message.contains(tolerate) => Ok(()),
            // Redis' message quotes the failing modifier, which holds the password.
            Err(_) => Err(RotatorError::Target(format!(
                "ACL SETUSER {} refused",
                self.config.username
            ))),
        }
    }

    async fn remove_password(&self, password: &[u8]) -> Result<(), RotatorError> {
        let mut rule = b"<".to_vec();
        rule.extend_from_slice(password);
        let result = self.setuser(&[&rule], "no such").await;
        zeroize::Zeroize::zeroize(&mut rule);
        result
    }
}

#[async_trait]
impl Rotator for RedisRotator {
    async fn create(&self, _: Option<VersionView<'_>>) -> Result<Created, RotatorError> {
        let password = random_string(PASSWORD_LENGTH, "alphanumeric")
            .ok_or_else(|| RotatorError::Config("alphabet".to_owned()))?;
        Ok(Created {
            value: SecretValue::new(password),
            label: self.config.username.clone(),
        })
    }

    async fn set(&self, pending: VersionView<'_>) -> Result<(), RotatorError> {
        let mut rule = b">".to_vec();
        rule.extend_from_slice(pending.value.expose());
        let result = self.setuser(&[b"on", &rule], "").await;
        zeroize::Zeroize::zeroize(&mut rule);
        result
    }

    async fn test(&self, pending: VersionView<'_>) -> Result<(), RotatorError> {
        let target = Target::parse(&self.config.url)
            .ok_or_else(|| RotatorError::Config("bad Redis URL".to_owned()))?;
        let mut connection = Connection::open(&target.address).await?;
        connection
            .command(&[
                b"AUTH",
                self.config.username.as_bytes(),
                pending.value.expose(),
            ])
            .await?
            .map_err(|_| {
                RotatorError::TestFailed(format!("AUTH as {} refused", self.config.username))
            })?;
        match connection.command(&[b"PING"]).await? {
            Ok(pong) if pong == "PONG" => Ok(()),
            _ => Err(RotatorError::TestFailed(
                "PING after AUTH failed".to_owned(),
            )),
        }
    }

    async fn finish(
        &self,
        _pending: VersionView<'_>,
        retiring: Option<VersionView<'_>>,
        revoke_now: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        if let Some(retiring) = retiring {
            self.remove_password(retiring.value.expose()).await?;
        }
        if let Some(old) = revoke_now {
            self.remove_password(old.value.expose()).await?;
            // Connections authenticated with the revoked password end now; clients
            // reconnect with the current one.
            let mut connection = self.admin().await?;
            let _ = connection
                .command(&[b"CLIENT", b"KILL", b"USER", self.config.username.as_bytes()])
                .await?;
        }
        Ok(())
    }

    async fn discard(
        &self,
        pending: VersionView<'_>,
        _restore: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        self.remove_password(pending.value.expose()).await
    }

    async fn reinstate(&self, previous: VersionView<'_>) -> Result<(), RotatorError> {
        self.set(previous).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let plain = Target::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(plain.address, "127.0.0.1:6379");
        assert!(plain.auth.is_none());
        let admin = Target::parse("redis://rot:pw@localhost").unwrap();
        assert_eq!(admin.address, "localhost:6379");
        assert_eq!(admin.auth, Some(("rot".to_owned(), "pw".to_owned())));
        assert!(Target::parse("http://x").is_none());
    }
}

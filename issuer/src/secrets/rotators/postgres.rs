//! `postgres`: a PostgreSQL password rotated by alternating two roles with the same
//! grants (seed 001: "create new DB user with same grants … drop old after
//! verification"). `set` gives the idle role a new password (and LOGIN), `test` logs in
//! with it over a fresh connection, and only then does it become current; the other
//! role, now `previous`, keeps its password until the next rotation, so connections and
//! pools using it are never cut. An emergency also takes LOGIN away from the previous
//! role and ends its sessions at once.
//!
//! The secret's value is `role:password`. The rotation admin connection is the issuer's
//! configuration (`--secrets-postgres-admin-url`), never a request's.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

use super::random::random_string;
use super::{Created, Rotator, RotatorError, VersionView};
use crate::secrets::SecretValue;

/// How long a connection or a statement may take.
const TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD_LENGTH: usize = 40;
const MAX_URL: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresConfig {
    /// `postgres://host:port/dbname`, without credentials: where the roles log in.
    pub url: String,
    pub role_a: String,
    pub role_b: String,
}

impl PostgresConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.url.len() > MAX_URL {
            return Err(format!("url: longer than {MAX_URL} bytes"));
        }
        let config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|_| "url: not a PostgreSQL URL".to_owned())?;
        if config.get_user().is_some() || config.get_password().is_some() {
            return Err("url: must not carry a user or password".to_owned());
        }
        for role in [&self.role_a, &self.role_b] {
            check_role(role)?;
        }
        if self.role_a == self.role_b {
            return Err("role_a and role_b must differ".to_owned());
        }
        Ok(())
    }
}

/// Role names: `[a-z_][a-z0-9_]{0,62}`, so they can be quoted without surprises.
fn check_role(role: &str) -> Result<(), String> {
    let mut chars = role.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || role.len() > 63
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err("roles: [a-z_][a-z0-9_]{0,62}".to_owned());
    }
    Ok(())
}

/// Splits a value into its role and password.
fn split(value: &SecretValue) -> Result<(&str, &str), RotatorError> {
    std::str::from_utf8(value.expose())
        .ok()
        .and_then(|text| text.split_once(':'))
        .ok_or_else(|| RotatorError::Target("stored value is not role:password".to_owned()))
}

/// A string literal for `text` (passwords are alphanumeric; quotes doubled regardless).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub struct PostgresRotator {
    config: PostgresConfig,
    admin_url: Option<String>,
}

impl PostgresRotator {
    pub fn new(config: PostgresConfig, admin_url: Option<String>) -> PostgresRotator {
        PostgresRotator { config, admin_url }
    }

    async fn connect(
        &self,
        config: tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, RotatorError> {
        let (client, connection) = tokio::time::timeout(TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| RotatorError::Target("connection timed out".to_owned()))?
            .map_err(|error| RotatorError::Target(describe(&error)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn admin(&self) -> Result<tokio_postgres::Client, RotatorError> {
        let url = self.admin_url.as_deref().ok_or_else(|| {
            RotatorError::Config("no --secrets-postgres-admin-url configured".to_owned())
        })?;
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|_| RotatorError::Config("bad PostgreSQL admin URL".to_owned()))?;
        self.connect(config).await
    }

    /// Runs one admin statement (the text holds a password: errors never echo it).
    async fn admin_execute(&self, statement: &str) -> Result<(), RotatorError> {
        let admin = self.admin().await?;
        tokio::time::timeout(TIMEOUT, admin.batch_execute(statement))
            .await
            .map_err(|_| RotatorError::Target("statement timed out".to_owned()))?
            .map_err(|error| RotatorError::Target(describe(&error)))
    }

    async fn set_password(&self, role: &str, password: &str) -> Result<(), RotatorError> {
        self.known_role(role)?;
        self.admin_execute(&format!(
            "ALTER ROLE \"{role}\" WITH LOGIN PASSWORD {}",
            literal(password)
        ))
        .await
    }

    fn known_role(&self, role: &str) -> Result<(), RotatorError> {
        if role == self.config.role_a || role == self.config.role_b {
            Ok(())
        } else {
            Err(RotatorError::Target(
                "value names a role this secret does not alternate".to_owned(),
            ))
        }
    }
}

/// The server's message without the statement (which may hold a password).
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => "PostgreSQL unreachable".to_owned(),
    }
}

#[async_trait]
impl Rotator for PostgresRotator {
    async fn create(&self, current: Option<VersionView<'_>>) -> Result<Created, RotatorError> {
        // The idle role: the one the current version does not use.
        let role = match current {
            Some(current) if current.label == self.config.role_a => &self.config.role_b,
            _ => &self.config.role_a,
        };
        let password = random_string(PASSWORD_LENGTH, "alphanumeric")
            .ok_or_else(|| RotatorError::Config("alphabet".to_owned()))?;
        let mut value = format!("{role}:").into_bytes();
        value.extend_from_slice(&password);
        Ok(Created {
            value: SecretValue::new(value),
            label: role.clone(),
        })
    }

    async fn set(&self, pending: VersionView<'_>) -> Result<(), RotatorError> {
        let (role, password) = split(pending.value)?;
        self.set_password(role, password).await
    }

    async fn test(&self, pending: VersionView<'_>) -> Result<(), RotatorError> {
        let (role, password) = split(pending.value)?;
        let mut config = tokio_postgres::Config::from_str(&self.config.url)
            .map_err(|_| RotatorError::Config("bad PostgreSQL URL".to_owned()))?;
        config.user(role).password(password);
        let client = self
            .connect(config)
            .await
            .map_err(|error| RotatorError::TestFailed(format!("login as {role}: {error}")))?;
        let row = tokio::time::timeout(TIMEOUT, client.query_one("SELECT current_user::text", &[]))
            .await
            .map_err(|_| RotatorError::TestFailed("query timed out".to_owned()))?
            .map_err(|error| RotatorError::TestFailed(describe(&error)))?;
        let user: String = row.get(0);
        if user != role {
            return Err(RotatorError::TestFailed(format!(
                "logged in as {user}, not {role}"
            )));
        }
        Ok(())
    }

    async fn finish(
        &self,
        pending: VersionView<'_>,
        _retiring: Option<VersionView<'_>>,
        revoke_now: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        // The retiring version used the role `set` already gave a new password: nothing
        // left to revoke for it. In an emergency the role leaving `current` loses LOGIN
        // and its sessions now.
        if let Some(old) = revoke_now
            && old.label != pending.label
        {
            self.known_role(old.label)?;
            self.admin_execute(&format!(
                "ALTER ROLE \"{role}\" WITH NOLOGIN; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {name}",
                role = old.label,
                name = literal(old.label),
            ))
            .await?;
        }
        Ok(())
    }

    async fn discard(
        &self,
        pending: VersionView<'_>,
        restore: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        match restore {
            Some(restore) if restore.label == pending.label => {
                let (role, password) = split(restore.value)?;
                self.set_password(role, password).await
            }
            _ => {
                let (role, _) = split(pending.value)?;
                self.known_role(role)?;
                self.admin_execute(&format!("ALTER ROLE \"{role}\" WITH PASSWORD NULL"))
                    .await
            }
        }
    }

    async fn reinstate(&self, previous: VersionView<'_>) -> Result<(), RotatorError> {
        let (role, password) = split(previous.value)?;
        self.set_password(role, password).await
    }
}

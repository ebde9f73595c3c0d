//! The rotators: how a secret's new value is made, installed where it is used, proved to
//! work and how the old one is revoked. One trait; each rotator is one file, and adding
//! one (SMTP, a cloud key) is that file plus a [`RotatorConfig`] variant.
//!
//! Every method must be idempotent: a rotation interrupted at any step (the issuer
//! killed) runs that step again on the next run, possibly on another replica.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::SecretValue;

pub mod external;
pub mod postgres;
pub mod random;
pub mod redis;

/// Why a rotator step failed. Never carries a value: messages name roles, users and
/// hosts only.
#[derive(Debug, thiserror::Error)]
pub enum RotatorError {
    /// The rotator's settings are unusable (a missing admin connection, a bad URL).
    #[error("rotator misconfigured: {0}")]
    Config(String),
    /// The target system refused or could not be reached.
    #[error("{0}")]
    Target(String),
    /// The pending value did not work.
    #[error("test failed: {0}")]
    TestFailed(String),
    /// This rotator cannot do that (an external secret rotates elsewhere).
    #[error("not supported by this rotator: {0}")]
    Unsupported(&'static str),
}

/// A secret's rotator settings, stored as JSON with the secret. Connection settings name
/// where to rotate; the credentials used to change passwords are the issuer's own
/// configuration ([`RotatorCredentials`]), never here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotatorConfig {
    Random(random::RandomConfig),
    Postgres(postgres::PostgresConfig),
    Redis(redis::RedisConfig),
    External(external::ExternalConfig),
}

impl RotatorConfig {
    /// Returns the kind's stored name.
    pub fn kind(&self) -> &'static str {
        match self {
            RotatorConfig::Random(_) => "random",
            RotatorConfig::Postgres(_) => "postgres",
            RotatorConfig::Redis(_) => "redis",
            RotatorConfig::External(_) => "external",
        }
    }

    /// Checks the settings' bounds (they come from an operator's request).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            RotatorConfig::Random(config) => config.validate(),
            RotatorConfig::Postgres(config) => config.validate(),
            RotatorConfig::Redis(config) => config.validate(),
            RotatorConfig::External(config) => config.validate(),
        }
    }
}

/// The issuer's own credentials for rotating (from its configuration, never a request).
#[derive(Clone, Default)]
pub struct RotatorCredentials {
    /// A PostgreSQL URL of a role allowed to `ALTER ROLE` the alternated roles.
    pub postgres_admin_url: Option<String>,
    /// A Redis URL of a user allowed to `ACL SETUSER`.
    pub redis_admin_url: Option<String>,
}

impl std::fmt::Debug for RotatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatorCredentials")
            .field("postgres_admin_url", &self.postgres_admin_url.is_some())
            .field("redis_admin_url", &self.redis_admin_url.is_some())
            .finish()
    }
}

/// A value made by [`Rotator::create`], with the non-secret label stored next to it.
pub struct Created {
    pub value: SecretValue,
    pub label: String,
}

/// A version as a rotator sees it.
pub struct VersionView<'a> {
    pub value: &'a SecretValue,
    pub label: &'a str,
}

/// One way of rotating a secret.
#[async_trait]
pub trait Rotator: Send + Sync {
    /// False when Tessera cannot rotate the secret itself (values are put by operators).
    fn rotates(&self) -> bool {
        true
    }

    /// `create`: makes the pending value; `current` is the version in use, if any.
    async fn create(&self, current: Option<VersionView<'_>>) -> Result<Created, RotatorError>;

    /// `set`: installs the pending value where it is used, alongside the current one.
    async fn set(&self, pending: VersionView<'_>) -> Result<(), RotatorError>;

    /// `test`: proves the pending value works (a real login).
    async fn test(&self, pending: VersionView<'_>) -> Result<(), RotatorError>;

    /// `finish`, before the stages move: revokes `retiring` (the version leaving
    /// `previous`) and, in an emergency, `revoke_now` too (the version leaving
    /// `current`), unless they share the pending version's label (the same role).
    async fn finish(
        &self,
        pending: VersionView<'_>,
        retiring: Option<VersionView<'_>>,
        revoke_now: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError>;

    /// Undoes `set` after a failed test: `restore` is the version whose place the
    /// pending one took, if the rotator overwrote it.
    async fn discard(
        &self,
        pending: VersionView<'_>,
        restore: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError>;

    /// Makes `previous` work again before a rollback makes it current.
    async fn reinstate(&self, previous: VersionView<'_>) -> Result<(), RotatorError>;
}

/// Returns the rotator for `config`.
pub fn rotator_for(config: &RotatorConfig, credentials: &RotatorCredentials) -> Box<dyn Rotator> {
    match config {
        RotatorConfig::Random(config) => Box::new(random::RandomRotator::new(config.clone())),
        RotatorConfig::Postgres(config) => Box::new(postgres::PostgresRotator::new(
            config.clone(),
            credentials.postgres_admin_url.clone(),
        )),
        RotatorConfig::Redis(config) => Box::new(redis::RedisRotator::new(
            config.clone(),
            credentials.redis_admin_url.clone(),
        )),
        RotatorConfig::External(_) => Box::new(external::ExternalRotator),
    }
}

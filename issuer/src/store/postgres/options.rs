//! Connection options of the PostgreSQL store, with a `Debug` that never shows a
//! password, and the schema-name check.

use std::path::PathBuf;

use crate::store::StoreError;

/// Where and how to connect.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL, e.g. `postgres://tessera@db:5432/tessera?sslmode=require`.
    /// Parameters tokio-postgres understands (`options`, `application_name`,
    /// `connect_timeout`, …) apply to every connection.
    pub url: String,
    /// The most pooled connections (the LISTEN connection is extra). At least 1.
    pub pool_size: usize,
    /// A PEM file of CA certificates; when set, TLS is required and the server
    /// certificate is verified against it. `sslmode=require` needs it too.
    pub ca_file: Option<PathBuf>,
    /// The schema holding Tessera's tables (`[a-z_][a-z0-9_]*`, at most 63 bytes); when
    /// set it becomes every connection's `search_path`. `None` uses the URL's or the
    /// role's default. Several stores may share one database in distinct schemas (the
    /// conformance suite runs each test in a fresh `tessera_test_<uuid>` schema).
    pub schema: Option<String>,
}

impl PostgresOptions {
    /// Returns options for `url` with a pool of 16 connections, no CA file and the
    /// default schema.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            pool_size: 16,
            ca_file: None,
            schema: None,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("schema", &self.schema)
            .finish()
    }
}

/// Returns `url` with its user-info (which may hold a password) and query (which may
/// hold `password=`) replaced by `***`.
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _query)) => (base, "?***"),
        None => (url, ""),
    };
    match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_user_info, host)) => format!("{scheme}://***@{host}{query}"),
            None => format!("{scheme}://{rest}{query}"),
        },
        // Not URL-shaped (e.g. `host=… password=…`): show nothing of it.
        None => "***".to_owned(),
    }
}

/// Accepts only plain lowercase identifiers, so the name needs no quoting in
/// `search_path` and cannot smuggle another connection option.
pub(super) fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid database schema name `{}`: use [a-z_][a-z0-9_]*, at most 63 bytes",
            schema.chars().take(64).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let options = PostgresOptions::new("postgres://tessera:hunter2@db:5432/tessera?password=x");
        let debug = format!("{options:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("password=x"), "{debug}");
        assert!(debug.contains("db:5432/tessera"), "{debug}");
        let keyword_form = PostgresOptions::new("host=db password=hunter2");
        assert!(!format!("{keyword_form:?}").contains("hunter2"));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("tessera_test_0af3").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in [
            "",
            "Tessera",
            "1abc",
            "a b",
            "a;drop",
            "a -cfoo=bar",
            &"a".repeat(64),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}

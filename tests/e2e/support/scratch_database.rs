//! A scratch PostgreSQL database per test: created on the test server under a random
//! name, dropped (with its connections) when the guard goes — after the processes that
//! use it, so declare it before them.

use tokio_postgres::NoTls;

/// A fresh database `<prefix>_<random>` on the test server.
pub struct ScratchDatabase {
    server_url: String,
    name: String,
    /// The URL of the scratch database (the server URL's options kept).
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on the server `server_url` names; panics if it cannot.
    pub fn create(server_url: &str, prefix: &str) -> ScratchDatabase {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        execute(server_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        ScratchDatabase {
            server_url: server_url.to_owned(),
            url: with_database(server_url, &name),
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

/// Runs one statement on its own connection and runtime (also usable from `Drop`).
pub fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
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

/// `url` with its database name replaced by `database` (query string kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

#[test]
fn scratch_database_url_keeps_server_and_options_no_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://u@h", "x"), "postgresql://u@h/x");
}

//! A scratch PostgreSQL database for the compose test's issuer.

use tokio_postgres::NoTls;

/// A fresh database `tessera_compose_<random>` on the test server, dropped with its
/// connections when the test ends (after the processes that use it).
pub(super) struct ScratchDatabase {
    server_url: String,
    name: String,
    pub(super) url: String,
}

impl ScratchDatabase {
    pub(super) fn create(server_url: &str) -> ScratchDatabase {
        let name = format!("tessera_compose_{}", uuid::Uuid::new_v4().simple());
        execute(server_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let (base, query) = match server_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server_url, String::new()),
        };
        let authority_start = base.find("://").map_or(0, |index| index + 3);
        let server = match base[authority_start..].find('/') {
            Some(slash) => &base[..authority_start + slash],
            None => base,
        };
        ScratchDatabase {
            server_url: server_url.to_owned(),
            url: format!("{server}/{name}{query}"),
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

pub(super) fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
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

//! A database created on a PostgreSQL server for one benchmark run and dropped afterwards,
//! shared by the suites that measure the issuer on PostgreSQL (API keys, single-use
//! tokens, challenges).

use anyhow::Context;

/// A database created on a PostgreSQL server for one run, dropped afterwards.
pub struct ScratchDatabase {
    server_url: String,
    name: String,
    /// The database's own URL (the server's, with the scratch database's name).
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on the server at `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<ScratchDatabase> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        execute(server_url, &format!("CREATE DATABASE {name}")).await?;
        let (base, query) = match server_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server_url, String::new()),
        };
        let authority = base.find("://").map_or(0, |index| index + 3);
        let server = match base[authority..].find('/') {
            Some(slash) => &base[..authority + slash],
            None => base,
        };
        Ok(ScratchDatabase {
            server_url: server_url.to_owned(),
            url: format!("{server}/{name}{query}"),
            name,
        })
    }

    /// Drops the database (its connections too); a failure is reported, not returned.
    pub async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = execute(&self.server_url, &sql).await {
            eprintln!("could not drop {}: {error:#}", self.name);
        }
    }
}

async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.context(sql.to_owned())?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

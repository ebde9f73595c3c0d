//! The LISTEN side of the multi-replica fan-out: a dedicated, non-pooled connection
//! LISTENs on [`CHANNEL`] and pokes the store's change signal for every event committed
//! by any replica, reconnecting with capped exponential backoff when it drops.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};
use tracing::Instrument;

use super::error::{PgFailure, describe};
use super::tls::Tls;
use crate::store::StoreError;

/// The notification channel every event-appending transaction NOTIFYs. Its payload is
/// `<schema>:<revision>`, so stores in different schemas of one database ignore each
/// other's events.
pub(super) const CHANNEL: &str = "tessera_events";

/// The first reconnection delay; doubled after every failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often an idle listening connection is checked, and how long the check may take:
/// a silently dead TCP connection would otherwise go unnoticed for hours.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(30);
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The running listener; stops when dropped.
pub(super) struct ListenerTask {
    supervisor: JoinHandle<()>,
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Opens the listening connection (so events committed after `start` returns are never
/// missed) and spawns the task that keeps it open.
pub(super) async fn start(
    config: tokio_postgres::Config,
    tls: Tls,
    change_signal: Arc<Notify>,
) -> Result<ListenerTask, StoreError> {
    let listening = open(&config, &tls, &change_signal)
        .await
        .map_err(|error| PgFailure::from(error).into_store())?;
    let supervisor = tokio::spawn(
        supervise(config, tls, change_signal, listening)
            .instrument(tracing::info_span!("postgres_listener")),
    );
    Ok(ListenerTask { supervisor })
}

/// One open listening connection: the client (dropping it closes the connection) and
/// the task driving the connection, which ends when the connection does.
struct Listening {
    client: Client,
    driver: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn supervise(
    config: tokio_postgres::Config,
    tls: Tls,
    change_signal: Arc<Notify>,
    mut listening: Listening,
) {
    loop {
        tokio::select! {
            _ = &mut listening.driver => {}
            () = health_check_fails(&listening.client) => {}
        }
        tracing::warn!("postgres listener connection lost; reconnecting");
        drop(listening);
        listening = reconnect(&config, &tls, &change_signal).await;
        // Events committed while the connection was down were never notified: wake the
        // subscribers so they read the log from where they are.
        change_signal.notify_one();
    }
}

/// Returns once the connection stops answering.
async fn health_check_fails(client: &Client) {
    let mut interval = tokio::time::interval(HEALTH_CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, client.batch_execute("SELECT 1")).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %describe(&error), "postgres listener health check failed");
                return;
            }
            Err(_elapsed) => {
                tracing::warn!("postgres listener health check timed out");
                return;
            }
        }
    }
}

async fn reconnect(
    config: &tokio_postgres::Config,
    tls: &Tls,
    change_signal: &Arc<Notify>,
) -> Listening {
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::time::sleep(with_jitter(backoff)).await;
        match open(config, tls, change_signal).await {
            Ok(listening) => {
                tracing::info!("postgres listener reconnected");
                return listening;
            }
            Err(error) => {
                tracing::warn!(
                    error = %describe(&error),
                    retry_in_ms = backoff.as_millis() as u64,
                    "postgres listener reconnect failed"
                );
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Returns `backoff` plus up to half of it again, so replicas that lost the database
/// together do not reconnect in lockstep.
fn with_jitter(backoff: Duration) -> Duration {
    // The clock's sub-second digits are jitter enough here; no randomness is needed for
    // security.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.subsec_nanos());
    let half = backoff / 2;
    let spread = u32::try_from(half.as_millis()).unwrap_or(u32::MAX).max(1);
    backoff + Duration::from_millis(u64::from(nanos % spread))
}

async fn open(
    config: &tokio_postgres::Config,
    tls: &Tls,
    change_signal: &Arc<Notify>,
) -> Result<Listening, tokio_postgres::Error> {
    match tls {
        Tls::Plain => open_with(config, NoTls, change_signal).await,
        Tls::Rustls(connector) => open_with(config, connector.clone(), change_signal).await,
    }
}

async fn open_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
    change_signal: &Arc<Notify>,
) -> Result<Listening, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    let own_schema: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let driver = tokio::spawn({
        let change_signal = Arc::clone(change_signal);
        let own_schema = Arc::clone(&own_schema);
        async move {
            let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if concerns(notification.payload(), own_schema.get()) {
                            change_signal.notify_one();
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(
                            error = %describe(&error),
                            "postgres listener connection failed"
                        );
                        break;
                    }
                }
            }
        }
        .in_current_span()
    });
    let listening = Listening { client, driver };
    let schema: Option<String> = listening
        .client
        .query_one("SELECT current_schema()", &[])
        .await?
        .try_get(0)?;
    // Set once per connection, before LISTEN: no notification can arrive earlier.
    let _already_set = own_schema.set(schema.unwrap_or_default());
    listening
        .client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await?;
    Ok(listening)
}

/// Returns whether a notification `payload` is about this store's schema. A payload
/// in another format wakes the store anyway: a spurious wake costs one read, a missed
/// one would delay an event.
fn concerns(payload: &str, own_schema: Option<&String>) -> bool {
    match (payload.rsplit_once(':'), own_schema) {
        (Some((schema, _revision)), Some(own_schema)) => schema == own_schema,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_from_other_schemas_are_ignored() {
        let own = "tessera".to_owned();
        assert!(concerns("tessera:12", Some(&own)));
        assert!(!concerns("tessera_test_1:12", Some(&own)));
        assert!(concerns("unexpected", Some(&own)));
        assert!(concerns("other:1", None));
    }

    #[test]
    fn jitter_adds_at_most_half() {
        for _ in 0..100 {
            let delay = with_jitter(Duration::from_millis(100));
            assert!(delay >= Duration::from_millis(100) && delay < Duration::from_millis(150));
        }
    }
}

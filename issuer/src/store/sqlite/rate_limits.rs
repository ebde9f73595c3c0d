//! Rate-limit windows on SQLite: a lease reads the key's counters and writes them back
//! charged in one `BEGIN IMMEDIATE` transaction, so concurrent leases (on any connection
//! to the file) queue on the write lock and each sees the previous one's charge.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tessera_common::UnixMillis;

use super::{DB_SYSTEM, SqliteStore};
use crate::api_keys::ratelimit::{Counter, Counters, Lease, RateLimits, charge};
use crate::store::StoreError;
use crate::store::rate_limits::RateLimitStore;
use crate::store::shared::SPAN_TARGET;

#[async_trait]
impl RateLimitStore for SqliteStore {
    #[tracing::instrument(name = "store.lease", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "lease", otel.kind = "client"))]
    async fn lease(
        &self,
        key_id: &str,
        limits: RateLimits,
        want: u32,
        now: UnixMillis,
    ) -> Result<Lease, StoreError> {
        let key_id = key_id.to_owned();
        self.write(move |tx| {
            let stored: Option<Counters> = tx
                .prepare_cached(
                    "SELECT minute_start, minute_used, hour_start, hour_used, day_start, \
                     day_used FROM api_key_rate_windows WHERE key_id = ?1",
                )?
                .query_row(params![key_id], |row| {
                    let counter = |start: usize| -> rusqlite::Result<Counter> {
                        Ok(Counter {
                            start: UnixMillis(row.get(start)?),
                            used: u64::try_from(row.get::<_, i64>(start + 1)?).unwrap_or(0),
                        })
                    };
                    Ok([counter(0)?, counter(2)?, counter(4)?])
                })
                .optional()?;
            let (counters, lease) = charge(stored.as_ref(), limits, want, now);
            let used = |i: usize| i64::try_from(counters[i].used).unwrap_or(i64::MAX);
            tx.prepare_cached(
                "INSERT INTO api_key_rate_windows (key_id, minute_start, minute_used, \
                 hour_start, hour_used, day_start, day_used, granted) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (key_id) DO UPDATE SET minute_start = excluded.minute_start, \
                 minute_used = excluded.minute_used, hour_start = excluded.hour_start, \
                 hour_used = excluded.hour_used, day_start = excluded.day_start, \
                 day_used = excluded.day_used, granted = excluded.granted",
            )?
            .execute(params![
                key_id,
                counters[0].start.0,
                used(0),
                counters[1].start.0,
                used(1),
                counters[2].start.0,
                used(2),
                lease.granted,
            ])?;
            Ok(lease)
        })
        .await
    }
}

//! Rate-limit windows on PostgreSQL: a lease is ONE statement, one round trip — an
//! `INSERT … ON CONFLICT DO UPDATE` whose new counters are computed from the row it
//! locks. Concurrent leases of one key on any number of replicas queue on that row lock
//! and each recomputes from the committed row, so a window is never charged beyond its
//! limit. The statement turns `synchronous_commit` off for its own transaction only: a
//! database crash may forget the last few milliseconds of charges (admitting at most
//! that many again), which is worth not waiting on a WAL flush per lease.

use std::sync::LazyLock;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tokio_postgres::Row;

use super::error::PgFailure;
use super::queries::query_one;
use super::{DB_SYSTEM, PostgresStore};
use crate::api_keys::ratelimit::{Counter, Counters, Lease, RateLimits, Window, outcome};
use crate::store::StoreError;
use crate::store::rate_limits::RateLimitStore;
use crate::store::shared::SPAN_TARGET;

/// The lease statement. Parameters: `$1` key id, `$2`–`$4` the current minute, hour and
/// day window starts, `$5` admissions wanted, `$6`–`$8` the limits. A stored window
/// keeps its count when it is the current one or a later one (opened by a replica
/// whose clock runs ahead), and restarts at 0 otherwise.
static LEASE_SQL: LazyLock<String> = LazyLock::new(|| {
    let used = |name: &str, start: &str| {
        format!("(CASE WHEN w.{name}_start >= {start} THEN w.{name}_used ELSE 0 END)")
    };
    let (minute, hour, day) = (
        used("minute", "$2::bigint"),
        used("hour", "$3::bigint"),
        used("day", "$4::bigint"),
    );
    let granted = format!(
        "LEAST($5::bigint, GREATEST(0, $6::bigint - {minute}), \
         GREATEST(0, $7::bigint - {hour}), GREATEST(0, $8::bigint - {day}))"
    );
    format!(
        "WITH durability AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO api_key_rate_windows AS w (key_id, minute_start, minute_used, \
         hour_start, hour_used, day_start, day_used, granted) \
         SELECT $1::text, $2::bigint, g, $3::bigint, g, $4::bigint, g, g \
         FROM durability, (SELECT LEAST($5::bigint, $6::bigint, $7::bigint, $8::bigint) AS g) AS fresh \
         ON CONFLICT (key_id) DO UPDATE SET \
         granted = {granted}, \
         minute_used = {minute} + {granted}, minute_start = GREATEST(w.minute_start, $2::bigint), \
         hour_used = {hour} + {granted}, hour_start = GREATEST(w.hour_start, $3::bigint), \
         day_used = {day} + {granted}, day_start = GREATEST(w.day_start, $4::bigint) \
         RETURNING granted, minute_start, minute_used, hour_start, hour_used, day_start, day_used"
    )
});

#[async_trait]
impl RateLimitStore for PostgresStore {
    #[tracing::instrument(name = "store.lease", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "lease", otel.kind = "client"))]
    async fn lease(
        &self,
        key_id: &str,
        limits: RateLimits,
        want: u32,
        now: UnixMillis,
    ) -> Result<Lease, StoreError> {
        let client = self.client().await?;
        let starts = Window::ALL.map(|window| window.start(now).0);
        let leased = async {
            let row = query_one(
                &client,
                &LEASE_SQL,
                &[
                    &key_id,
                    &starts[0],
                    &starts[1],
                    &starts[2],
                    &i64::from(want),
                    &i64::from(limits.per_minute),
                    &i64::from(limits.per_hour),
                    &i64::from(limits.per_day),
                ],
            )
            .await?;
            lease_from_row(&row, limits, want, now)
        };
        leased.await.map_err(PgFailure::into_store)
    }
}

fn lease_from_row(
    row: &Row,
    limits: RateLimits,
    want: u32,
    now: UnixMillis,
) -> Result<Lease, PgFailure> {
    let counter = |start: usize| -> Result<Counter, PgFailure> {
        Ok(Counter {
            start: UnixMillis(row.try_get(start)?),
            used: u64::try_from(row.try_get::<_, i64>(start + 1)?).unwrap_or(0),
        })
    };
    let after: Counters = [counter(1)?, counter(3)?, counter(5)?];
    let granted = u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
    Ok(outcome(&after, limits, want, granted, now))
}

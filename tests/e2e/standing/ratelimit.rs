//! Rate limits across sidecars: four real sidecars hammer one key limited to 100 per
//! minute, inside one UTC minute window. Admissions are charged to the key's windows when
//! the issuer leases them, so the sum over every sidecar never exceeds the limit; what
//! can go missing is budget leased but unspent when the hammering stops, at most one
//! slice per holder — each sidecar, and the issuer replica, whose own validations (the
//! sidecars' first sights) spend a slice of its own (slice = clamp(per_minute / 20, 1,
//! 50) = 5 for 100/min): 100 − 5 × 5 = 75 ≤ admitted ≤ 100. Refusals
//! are RESOURCE_EXHAUSTED carrying `retry-after` and `tessera-refusal: RATE_LIMITED`, and
//! `tessera_ratelimit_exceeded_total{scope="api_key"}` counts them. Once on SQLite, once
//! on PostgreSQL (two issuer-side stores, same bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;
use tonic::Code;

use super::harness::{Standing, now_unix_seconds, sidecar_validate_key, validator};
use crate::support::scratch_database::ScratchDatabase;
use crate::support::test_database::database_url;

const SIDECARS: usize = 4;
/// Concurrent callers per sidecar.
const CALLERS: usize = 4;
const PER_MINUTE: u32 = 100;
/// The slice a holder leases for a 100/min key: clamp(per_minute / 20, 1, 50).
const SLICE: u32 = 5;
/// Holders of slices: the sidecars and the one issuer replica.
const HOLDERS: u32 = SIDECARS as u32 + 1;
const HAMMER: Duration = Duration::from_secs(3);
/// Seconds left in the minute below which the test waits for the next minute, so the
/// hammering stays in one fixed window.
const MIN_SECONDS_LEFT: f64 = 15.0;
const EXCEEDED: &str = "tessera_ratelimit_exceeded_total{scope=\"api_key\"}";

#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    limited: AtomicU64,
    /// Anything else: a refusal or another error (counted, and the first kept).
    other: AtomicU64,
    first_other: std::sync::Mutex<Option<String>>,
    bad_metadata: std::sync::Mutex<Option<String>>,
}

#[test]
fn four_sidecars_hammering_one_key_admit_at_most_the_documented_bound() {
    hammer(&[]);
}

#[test]
fn four_sidecars_hammering_one_key_admit_at_most_the_documented_bound_on_postgres() {
    let Some(server_url) = database_url() else {
        return;
    };
    let database = ScratchDatabase::create(&server_url, "tessera_e2e_rl");
    hammer(&["--database-url", database.url.as_str()]);
}

fn hammer(issuer_args: &[&str]) {
    let stack = Standing::start(issuer_args);
    let sidecars = stack.sidecars(SIDECARS);
    let created = stack.create_key(
        "acme",
        Some(pb::RateLimits {
            per_minute: PER_MINUTE,
            per_hour: 0,
            per_day: 0,
        }),
    );
    let limits = created.api_key.as_ref().unwrap().rate_limits;
    assert_eq!(
        limits,
        Some(pb::RateLimits {
            per_minute: 100,
            per_hour: 1_000,
            per_day: 10_000
        }),
        "unset fields take the defaults"
    );

    // Stay inside one fixed UTC minute.
    let left = 60.0 - now_unix_seconds() % 60.0;
    if left < MIN_SECONDS_LEFT {
        eprintln!("{left:.1} s left in this minute: waiting for the next");
        std::thread::sleep(Duration::from_secs_f64(left + 0.2));
    }
    let window = (now_unix_seconds() / 60.0).floor();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + HAMMER;
    let tasks: Vec<_> = sidecars
        .iter()
        .flat_map(|sidecar| std::iter::repeat_n(sidecar.socket.clone(), CALLERS))
        .map(|socket| {
            let tally = tally.clone();
            let key = created.key.clone();
            stack.runtime.spawn(async move {
                let mut client = validator(&socket).await;
                while Instant::now() < end {
                    match sidecar_validate_key(&mut client, &key).await {
                        Ok(answer) if answer.valid => {
                            tally.admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => {
                            tally.other.fetch_add(1, Ordering::Relaxed);
                            tally
                                .first_other
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("refused: {answer:?}"));
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            tally.limited.fetch_add(1, Ordering::Relaxed);
                            if let Err(problem) = check_refusal_metadata(&status) {
                                tally.bad_metadata.lock().unwrap().get_or_insert(problem);
                            }
                        }
                        Err(status) => {
                            tally.other.fetch_add(1, Ordering::Relaxed);
                            tally
                                .first_other
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("{status:?}"));
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        stack.runtime.block_on(task).expect("hammer task");
    }
    let elapsed = started.elapsed();
    assert_eq!(
        (now_unix_seconds() / 60.0).floor(),
        window,
        "the hammering crossed a minute boundary; the bound is per window"
    );

    let admitted = tally.admitted.load(Ordering::Relaxed);
    let limited = tally.limited.load(Ordering::Relaxed);
    let other = tally.other.load(Ordering::Relaxed);
    let floor = u64::from(PER_MINUTE - HOLDERS * SLICE);
    eprintln!(
        "{SIDECARS} sidecars × {CALLERS} callers for {elapsed:?}: admitted {admitted} \
         (bound: {floor} ≤ admitted ≤ {PER_MINUTE}), RESOURCE_EXHAUSTED {limited}, other \
         {other}"
    );
    assert_eq!(
        other,
        0,
        "unexpected answers: {:?}",
        tally.first_other.lock().unwrap()
    );
    assert!(
        limited > 0,
        "the limit was never reached ({admitted} admitted): the test proves nothing"
    );
    if let Some(problem) = tally.bad_metadata.lock().unwrap().as_ref() {
        panic!("a RATE_LIMITED refusal without the documented metadata: {problem}");
    }
    assert!(
        admitted <= u64::from(PER_MINUTE),
        "{admitted} admissions in one window of a {PER_MINUTE}/min key"
    );
    assert!(
        admitted >= floor,
        "only {admitted} admissions: more than {HOLDERS} slices of {SLICE} went missing"
    );

    // The refusals are counted where they were decided: at the sidecars (spending
    // leases) and/or at the issuer (refusing a lease or a first sight).
    let at_sidecars: f64 = sidecars
        .iter()
        .map(|sidecar| sidecar.metric(EXCEEDED))
        .sum();
    let at_issuer = stack.issuer_metric(EXCEEDED);
    eprintln!("{EXCEEDED}: sidecars {at_sidecars}, issuer {at_issuer}");
    assert!(
        at_sidecars + at_issuer > 0.0,
        "no {EXCEEDED} counted anywhere after {limited} refusals"
    );

    // The issuer agrees: the key is exhausted for this window there too.
    let mut api_keys = stack.api_keys();
    let lease = stack
        .runtime
        .block_on(
            api_keys.lease_api_key_budget(crate::support::grpc::with_bearer(
                pb::LeaseApiKeyBudgetRequest {
                    key_id: created.api_key.as_ref().unwrap().key_id.clone(),
                    requested: 10,
                },
                &stack.admin,
            )),
        )
        .expect("LeaseApiKeyBudget")
        .into_inner();
    if (now_unix_seconds() / 60.0).floor() == window {
        let leased_total = admitted + u64::from(lease.granted);
        assert!(
            leased_total <= u64::from(PER_MINUTE),
            "the issuer granted {} more after {admitted} admissions: {lease:?}",
            lease.granted
        );
        if lease.granted == 0 {
            assert_eq!(lease.exhausted_window, "minute", "{lease:?}");
            assert!((1..=60).contains(&lease.retry_after_seconds), "{lease:?}");
        }
    }
}

/// Checks the trailing metadata of a RATE_LIMITED refusal.
fn check_refusal_metadata(status: &tonic::Status) -> Result<(), String> {
    let metadata = status.metadata();
    let refusal = metadata
        .get("tessera-refusal")
        .and_then(|value| value.to_str().ok());
    if refusal != Some("RATE_LIMITED") {
        return Err(format!("tessera-refusal {refusal:?}: {status:?}"));
    }
    let retry_after = metadata
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match retry_after {
        Some(seconds) if (1..=60).contains(&seconds) => Ok(()),
        _ => Err(format!("retry-after {retry_after:?}: {status:?}")),
    }
}

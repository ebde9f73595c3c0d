//! Single-use token records (action links, password reset, email verification,
//! confirmations): one consumption wins, on one store or two (two connections to the
//! SQLite file; two replicas' pools on PostgreSQL); a refusal says why; a new reset
//! supersedes the user's older ones; emergency invalidation per tenant and globally;
//! confirmation pairs consumed together or not at all; a completed reset records the
//! change once; pruning by expiry; tenant settings — the same on both backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;
use tessera_issuer::store::{
    ActionSettingsRecord, Consumption, OneTimeKind, OneTimeTokenRecord, OneTimeTokenStore,
};

use super::fixture::{Fixture, audit_entry};

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("tenant id")
}

fn record(jti: &str, kind: OneTimeKind, tenant_id: &str, user: &str) -> OneTimeTokenRecord {
    OneTimeTokenRecord {
        jti: jti.to_owned(),
        kind,
        tenant_id: tenant(tenant_id),
        user_id: user.to_owned(),
        action: "confirm_payment".to_owned(),
        resource_id: "inv-1".to_owned(),
        issued_at: UnixMillis(T0),
        expires_at: UnixMillis(T0 + HOUR),
        used_at: None,
        invalidated_at: None,
        invalidation_reason: None,
        parent_jti: None,
    }
}

async fn insert(store: &Arc<dyn OneTimeTokenStore>, record: OneTimeTokenRecord) -> u64 {
    let supersede = record.kind == OneTimeKind::Reset;
    store
        .insert_one_time_token(record, supersede, None)
        .await
        .expect("insert")
}

/// A record reads back as written; the first consumption wins and the second is
/// `AlreadyUsed`; another tenant, another kind or an unknown jti is `Unknown`; a jti
/// cannot be inserted twice.
pub async fn one_time_tokens_round_trip_and_consume_once(fixture: &Fixture) {
    let store = fixture.open_one_time_token_replica().await;
    let written = record("j1", OneTimeKind::Action, "acme", "u1");
    insert(&store, written.clone()).await;
    assert_eq!(
        store.one_time_token(&tenant("acme"), "j1").await.unwrap(),
        Some(written.clone())
    );
    assert_eq!(
        store.one_time_token(&tenant("globex"), "j1").await.unwrap(),
        None
    );
    assert!(
        store
            .insert_one_time_token(written, false, None)
            .await
            .is_err(),
        "a jti is unique"
    );
    let now = UnixMillis(T0 + 1_000);
    let consume = |tenant_id: &'static str, kind: OneTimeKind, jti: &'static str| {
        let store = store.clone();
        async move {
            store
                .consume_one_time_token(&tenant(tenant_id), kind, jti, None, now)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        consume("globex", OneTimeKind::Action, "j1").await,
        Consumption::Unknown
    );
    assert_eq!(
        consume("acme", OneTimeKind::Reset, "j1").await,
        Consumption::Unknown
    );
    assert_eq!(
        consume("acme", OneTimeKind::Action, "nope").await,
        Consumption::Unknown
    );
    assert_eq!(
        consume("acme", OneTimeKind::Action, "j1").await,
        Consumption::Consumed
    );
    assert_eq!(
        consume("acme", OneTimeKind::Action, "j1").await,
        Consumption::AlreadyUsed
    );
    let used = store
        .one_time_token(&tenant("acme"), "j1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.used_at, Some(now));
}

/// 40 concurrent consumptions of one token through two stores: exactly one `Consumed`,
/// every other `AlreadyUsed`.
pub async fn concurrent_consumptions_from_two_stores_let_exactly_one_win(fixture: &Fixture) {
    let stores = [
        fixture.open_one_time_token_replica().await,
        fixture.open_one_time_token_replica().await,
    ];
    insert(
        &stores[0],
        record("race", OneTimeKind::Action, "acme", "u1"),
    )
    .await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = stores[n % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .consume_one_time_token(
                    &tenant("acme"),
                    OneTimeKind::Action,
                    "race",
                    None,
                    UnixMillis(T0 + 1_000),
                )
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let n_consumed = outcomes
        .iter()
        .filter(|outcome| **outcome == Consumption::Consumed)
        .count();
    let n_used = outcomes
        .iter()
        .filter(|outcome| **outcome == Consumption::AlreadyUsed)
        .count();
    assert_eq!((n_consumed, n_used), (1, 39), "{outcomes:?}");
}

/// A new reset token supersedes the user's older unused ones (not other users', not
/// used ones); emergency invalidation takes one tenant's live records, then every
/// tenant's, and skips used and expired ones.
pub async fn resets_supersede_and_emergencies_invalidate(fixture: &Fixture) {
    let store = fixture.open_one_time_token_replica().await;
    assert_eq!(
        insert(&store, record("r1", OneTimeKind::Reset, "acme", "u1")).await,
        0
    );
    assert_eq!(
        insert(&store, record("r-other", OneTimeKind::Reset, "acme", "u2")).await,
        0
    );
    assert_eq!(
        insert(&store, record("r2", OneTimeKind::Reset, "acme", "u1")).await,
        1
    );
    let now = UnixMillis(T0 + 1_000);
    let consume = |jti: &'static str, tenant_id: &'static str| {
        let store = store.clone();
        async move {
            store
                .consume_one_time_token(&tenant(tenant_id), OneTimeKind::Reset, jti, None, now)
                .await
                .unwrap()
        }
    };
    assert_eq!(consume("r1", "acme").await, Consumption::Invalidated);
    let superseded = store
        .one_time_token(&tenant("acme"), "r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        superseded.invalidation_reason.as_deref(),
        Some("superseded")
    );
    assert_eq!(consume("r2", "acme").await, Consumption::Consumed);

    insert(&store, record("a1", OneTimeKind::Action, "acme", "u1")).await;
    insert(&store, record("g1", OneTimeKind::Action, "globex", "u1")).await;
    insert(
        &store,
        record("v1", OneTimeKind::Verification, "globex", "u1"),
    )
    .await;
    let mut expired = record("old", OneTimeKind::Action, "acme", "u1");
    expired.expires_at = UnixMillis(T0 + 500);
    insert(&store, expired).await;
    // acme: r-other and a1 are live (r2 used, r1 invalidated, old expired).
    assert_eq!(
        store
            .invalidate_one_time_tokens(Some("acme"), now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(consume("r-other", "acme").await, Consumption::Invalidated);
    assert_eq!(
        store.invalidate_one_time_tokens(None, now).await.unwrap(),
        2,
        "globex's two"
    );
    assert_eq!(
        store
            .consume_one_time_token(
                &tenant("globex"),
                OneTimeKind::Verification,
                "v1",
                None,
                now
            )
            .await
            .unwrap(),
        Consumption::Invalidated
    );
    assert_eq!(
        store.invalidate_one_time_tokens(None, now).await.unwrap(),
        0
    );
}

/// A confirmation is consumed together with the link it is bound to: bound to another
/// link, it consumes nothing; once the pair is consumed, both are spent.
pub async fn confirmation_pairs_are_consumed_together(fixture: &Fixture) {
    let store = fixture.open_one_time_token_replica().await;
    insert(&store, record("link", OneTimeKind::Action, "acme", "u1")).await;
    insert(&store, record("other", OneTimeKind::Action, "acme", "u1")).await;
    let mut confirmation = record("conf", OneTimeKind::Confirmation, "acme", "u1");
    confirmation.parent_jti = Some("link".to_owned());
    insert(&store, confirmation).await;
    let now = UnixMillis(T0 + 1_000);
    let acme = tenant("acme");
    let pair = |jti: &'static str, confirmation: &'static str| {
        let (store, acme) = (store.clone(), acme.clone());
        async move {
            store
                .consume_one_time_token(&acme, OneTimeKind::Action, jti, Some(confirmation), now)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        pair("other", "conf").await,
        Consumption::Unknown,
        "bound to `link`"
    );
    let untouched = store.one_time_token(&acme, "other").await.unwrap().unwrap();
    assert_eq!(untouched.used_at, None);
    let conf = store.one_time_token(&acme, "conf").await.unwrap().unwrap();
    assert_eq!(conf.used_at, None, "the refused pair changed nothing");
    // The link is spent alone first: the pair is refused and the confirmation stays unused.
    insert(&store, record("link2", OneTimeKind::Action, "acme", "u1")).await;
    let mut conf2 = record("conf2", OneTimeKind::Confirmation, "acme", "u1");
    conf2.parent_jti = Some("link2".to_owned());
    insert(&store, conf2).await;
    assert_eq!(
        store
            .consume_one_time_token(&acme, OneTimeKind::Action, "link2", None, now)
            .await
            .unwrap(),
        Consumption::Consumed
    );
    assert_eq!(pair("link2", "conf2").await, Consumption::AlreadyUsed);
    let conf2 = store.one_time_token(&acme, "conf2").await.unwrap().unwrap();
    assert_eq!(conf2.used_at, None, "undone with the refused pair");

    assert_eq!(pair("link", "conf").await, Consumption::Consumed);
    assert_eq!(pair("link", "conf").await, Consumption::AlreadyUsed);
}

/// Completing a reset consumes the token and records the change once, with its audit
/// entry; another user's reset or a replay records nothing.
pub async fn a_completed_reset_records_the_password_change_once(fixture: &Fixture) {
    let store = fixture.open_one_time_token_replica().await;
    let acme = tenant("acme");
    insert(&store, record("r1", OneTimeKind::Reset, "acme", "u1")).await;
    assert_eq!(store.password_changed_at(&acme, "u1").await.unwrap(), None);
    let at = UnixMillis(T0 + 2_000);
    assert_eq!(
        store
            .complete_password_reset(&acme, "u2", "r1", at, audit_entry(1))
            .await
            .unwrap(),
        Consumption::Unknown,
        "another user's token"
    );
    assert_eq!(
        store
            .complete_password_reset(&acme, "u1", "r1", at, audit_entry(2))
            .await
            .unwrap(),
        Consumption::Consumed
    );
    assert_eq!(
        store.password_changed_at(&acme, "u1").await.unwrap(),
        Some(at)
    );
    assert_eq!(
        store
            .complete_password_reset(&acme, "u1", "r1", UnixMillis(T0 + 9_000), audit_entry(3))
            .await
            .unwrap(),
        Consumption::AlreadyUsed
    );
    assert_eq!(
        store.password_changed_at(&acme, "u1").await.unwrap(),
        Some(at)
    );
    assert_eq!(
        store
            .password_changed_at(&tenant("globex"), "u1")
            .await
            .unwrap(),
        None
    );
    let audit = fixture.store.audit_page(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "one change, one audit entry");
}

/// Pruning deletes records expired at or before the instant (used or not) and keeps the
/// rest; settings round-trip and are replaced whole.
pub async fn pruning_and_settings(fixture: &Fixture) {
    let store = fixture.open_one_time_token_replica().await;
    let mut early = record("early", OneTimeKind::Action, "acme", "u1");
    early.expires_at = UnixMillis(T0 + 10);
    insert(&store, early).await;
    insert(&store, record("late", OneTimeKind::Action, "acme", "u1")).await;
    assert_eq!(
        store
            .prune_one_time_tokens(UnixMillis(T0 + 10))
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .one_time_token(&tenant("acme"), "early")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .one_time_token(&tenant("acme"), "late")
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(store.action_settings(&tenant("acme")).await.unwrap(), None);
    let settings = ActionSettingsRecord {
        tenant_id: tenant("acme"),
        base_url: "https://app.example.com".to_owned(),
        lifetimes: BTreeMap::from([("confirm_payment".to_owned(), 600)]),
        updated_at: UnixMillis(T0),
    };
    store
        .put_action_settings(settings.clone(), audit_entry(1))
        .await
        .unwrap();
    assert_eq!(
        store.action_settings(&tenant("acme")).await.unwrap(),
        Some(settings.clone())
    );
    let replaced = ActionSettingsRecord {
        base_url: String::new(),
        lifetimes: BTreeMap::new(),
        updated_at: UnixMillis(T0 + 1),
        ..settings
    };
    store
        .put_action_settings(replaced.clone(), audit_entry(2))
        .await
        .unwrap();
    assert_eq!(
        store.action_settings(&tenant("acme")).await.unwrap(),
        Some(replaced)
    );
    assert_eq!(
        store.action_settings(&tenant("globex")).await.unwrap(),
        None
    );
}

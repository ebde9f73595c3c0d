//! Rotation planning: given the keys of one set, its policy, a trigger and the instant,
//! decides which key to create and which schedules change. Pure, so a year of rotations
//! is a fast deterministic test; the manager turns a plan into one store commit.
//!
//! Contract (DESIGN §3): a successor is published `prepublish` before it signs; when it
//! takes over, its predecessor verifies for `overlap` more; a scheduled rotation is due
//! `rotate_every` after the signer's activation; if the scheduler runs late, the
//! successor still gets its full prepublish window (it activates at `now + prepublish`).
//! An emergency assumes every private key the issuer held is stolen: it revokes every key
//! verifiers still trust (signer, retiring, pending), retires or drops whatever material
//! is left, and a fresh key signs at once; the manager deletes each revoked key's wrapped
//! private key in the same commit.

use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::ids::KeyId;
use tessera_common::keys::{Algorithm, KeySchedule, KeySetPolicy, KeyState};

/// A key as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub schedule: KeySchedule,
    /// Whether the wrapped private key is still stored.
    pub has_private: bool,
}

/// Why a plan is being made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The scheduler's periodic check: bootstrap, due rotations, retirements.
    Scheduled,
    /// An operator's rotation: the successor signs after `prepublish`.
    Manual { prepublish: Duration },
    /// Compromise: every key the issuer held that verifiers still trust (signer, retiring
    /// and pending keys) is revoked, leftover material is dropped, a successor signs now.
    Emergency,
    /// Revocation of one key; if it is the signer, a successor signs now.
    Revoke { kid: KeyId },
}

/// A key to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub kid: KeyId,
    pub algorithm: Algorithm,
    pub activates_at: UnixMillis,
}

/// What to change in one set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Option<NewKey>,
    /// Existing keys whose schedule changed (new deactivation, revocation).
    pub rescheduled: Vec<KeySchedule>,
    /// Keys newly revoked (also in `rescheduled`).
    pub revoked: Vec<KeyId>,
    /// Keys past their overlap: unpublish and drop the private key.
    pub retired: Vec<KeyId>,
    /// Revoked keys whose private key is still stored: drop it.
    pub drop_private: Vec<KeyId>,
    /// The signer before the plan, if any.
    pub previous_signer: Option<KeyId>,
}

impl Plan {
    /// Returns true when the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_none()
            && self.rescheduled.is_empty()
            && self.retired.is_empty()
            && self.drop_private.is_empty()
    }
}

/// Why a requested change cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no key `{0}` in this key set")]
    UnknownKey(KeyId),
    #[error("key `{0}` is already revoked")]
    AlreadyRevoked(KeyId),
}

/// Returns the key that signs at `now`: the latest-activated, non-revoked key whose
/// activation has come (keys are ordered by activation, kanidm-style).
pub fn signer_at(keys: &[KeyView], now: UnixMillis) -> Option<&KeySchedule> {
    keys.iter()
        .map(|key| &key.schedule)
        .filter(|schedule| schedule.revoked_at.is_none() && schedule.activates_at <= now)
        .filter(|schedule| matches!(schedule.state_at(now), KeyState::Active { .. }))
        .max_by_key(|schedule| (schedule.activates_at, schedule.created_at))
}

/// Plans the changes `trigger` calls for at `now`. `new_kid` names the key to create, if
/// one is needed. Returns an empty plan when nothing is due.
///
/// Long on purpose: one arm per trigger, each short, kept side by side so the whole
/// rotation contract of the module comment (scheduled, manual, emergency, revoke) reads in
/// one place against the same signer and pending keys.
pub fn plan(
    keys: &[KeyView],
    policy: &KeySetPolicy,
    trigger: &Trigger,
    now: UnixMillis,
    new_kid: KeyId,
) -> Result<Plan, PlanError> {
    let signer = signer_at(keys, now).cloned();
    let pending: Vec<&KeySchedule> = keys
        .iter()
        .map(|key| &key.schedule)
        .filter(|schedule| matches!(schedule.state_at(now), KeyState::Pending { .. }))
        .collect();
    let mut plan = Plan {
        previous_signer: signer.as_ref().map(|signer| signer.kid.clone()),
        ..Plan::default()
    };
    let successor = |activates_at: UnixMillis| NewKey {
        kid: new_kid.clone(),
        algorithm: policy.algorithm,
        activates_at,
    };

    match trigger {
        Trigger::Scheduled => {
            match &signer {
                None if pending.is_empty() => plan.create = Some(successor(now)),
                None => {}
                Some(current) if current.deactivates_at.is_none() => {
                    let due = current.activates_at.plus(policy.rotate_every);
                    if now >= due.minus(policy.prepublish) {
                        let activates_at = due.max(now.plus(policy.prepublish));
                        plan.create = Some(successor(activates_at));
                        plan.rescheduled
                            .push(hand_over(current, activates_at, policy));
                    }
                }
                Some(_) => {}
            }
            collect_leftover_private_keys(keys, now, &mut plan);
        }
        Trigger::Manual { prepublish } => {
            let activates_at = now.plus(*prepublish);
            match (&signer, pending.first()) {
                // A successor is already published: bring it forward instead of
                // generating another key.
                (Some(current), Some(next)) => {
                    let activates_at = next.activates_at.min(activates_at);
                    plan.rescheduled.push(KeySchedule {
                        activates_at,
                        ..(*next).clone()
                    });
                    plan.rescheduled
                        .push(hand_over(current, activates_at, policy));
                }
                (Some(current), None) => {
                    plan.create = Some(successor(activates_at));
                    plan.rescheduled
                        .push(hand_over(current, activates_at, policy));
                }
                (None, _) => plan.create = Some(successor(now)),
            }
        }
        Trigger::Emergency => {
            // The issuer may be compromised, so every key whose private part it held is
            // suspect: the signer, every retiring key (a stolen one would otherwise mint
            // trusted tokens until its overlap ends) and every pending key.
            for schedule in keys.iter().map(|key| &key.schedule) {
                if schedule.state_at(now).is_published() {
                    plan.rescheduled.push(revoke(schedule, now));
                    plan.revoked.push(schedule.kid.clone());
                }
            }
            // Material the scheduler has not cleaned up yet goes in the same commit.
            collect_leftover_private_keys(keys, now, &mut plan);
            plan.create = Some(successor(now));
        }
        Trigger::Revoke { kid } => {
            let target = keys
                .iter()
                .map(|key| &key.schedule)
                .find(|schedule| &schedule.kid == kid)
                .ok_or_else(|| PlanError::UnknownKey(kid.clone()))?;
            if target.revoked_at.is_some() {
                return Err(PlanError::AlreadyRevoked(kid.clone()));
            }
            plan.rescheduled.push(revoke(target, now));
            plan.revoked.push(kid.clone());
            let was_signer = signer.as_ref().is_some_and(|signer| &signer.kid == kid);
            if was_signer {
                // The pending successor, if any, was scheduled behind a compromised key;
                // a fresh key signs at once and the pending one is withdrawn.
                for schedule in pending {
                    plan.rescheduled.push(revoke(schedule, now));
                    plan.revoked.push(schedule.kid.clone());
                }
                plan.create = Some(successor(now));
            }
        }
    }
    Ok(plan)
}

/// Adds the keys past their overlap (to retire) and the revoked keys whose wrapped private
/// key is still stored (to drop it): a key that can no longer sign keeps no material.
fn collect_leftover_private_keys(keys: &[KeyView], now: UnixMillis, plan: &mut Plan) {
    for key in keys.iter().filter(|key| key.has_private) {
        let kid = key.schedule.kid.clone();
        match key.schedule.state_at(now) {
            KeyState::Retired { .. } => plan.retired.push(kid),
            KeyState::Revoked { .. } => plan.drop_private.push(kid),
            _ => {}
        }
    }
}

fn hand_over(
    current: &KeySchedule,
    successor_activates_at: UnixMillis,
    policy: &KeySetPolicy,
) -> KeySchedule {
    KeySchedule {
        deactivates_at: Some(successor_activates_at),
        verify_until: Some(successor_activates_at.plus(policy.overlap)),
        ..current.clone()
    }
}

fn revoke(schedule: &KeySchedule, now: UnixMillis) -> KeySchedule {
    KeySchedule {
        revoked_at: Some(now),
        ..schedule.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tessera_common::jwk::Jwk;
    use tessera_common::keys::KeySetName;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn jwk() -> Jwk {
        Jwk {
            kty: "OKP".into(),
            kid: String::new(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
            n: None,
            e: None,
            crv: Some("Ed25519".into()),
            x: Some(String::new()),
            y: None,
        }
    }

    /// Applies a plan the way the manager's commit does, for simulations.
    fn apply(keys: &mut Vec<KeyView>, plan: &Plan, now: UnixMillis) {
        for schedule in &plan.rescheduled {
            if let Some(key) = keys.iter_mut().find(|key| key.schedule.kid == schedule.kid) {
                key.schedule = schedule.clone();
            }
        }
        for kid in plan
            .retired
            .iter()
            .chain(&plan.drop_private)
            .chain(&plan.revoked)
        {
            if let Some(key) = keys.iter_mut().find(|key| &key.schedule.kid == kid) {
                key.has_private = false;
            }
        }
        if let Some(new_key) = &plan.create {
            keys.push(KeyView {
                schedule: KeySchedule {
                    kid: new_key.kid.clone(),
                    key_set: KeySetName::Access,
                    algorithm: new_key.algorithm,
                    created_at: now,
                    activates_at: new_key.activates_at,
                    deactivates_at: None,
                    verify_until: None,
                    revoked_at: None,
                    public_jwk: jwk(),
                },
                has_private: true,
            });
        }
    }

    fn published(keys: &[KeyView], now: UnixMillis) -> BTreeSet<String> {
        keys.iter()
            .filter(|key| key.schedule.state_at(now).is_published())
            .map(|key| key.schedule.kid.to_string())
            .collect()
    }

    #[test]
    fn a_year_of_scheduled_rotations_with_the_default_policy() {
        let started = std::time::Instant::now();
        let (n_created, activation_days) =
            simulate_a_year(&KeySetPolicy::default_for(KeySetName::Access), MINUTE * 10);
        // The initial key plus four scheduled rotations (days 90, 180, 270, 360).
        assert_eq!(n_created, 5);
        assert_eq!(activation_days, vec![0, 90, 180, 270, 360]);
        // A guard against a planner that grows with the number of runs (52,560 here), not
        // a performance claim: it takes ~0.3 s in a debug build, and a loaded CI machine
        // must not fail it (the 1 s bound it had did, at 1.0-1.1 s).
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    /// The HMAC set goes through the same planner: bootstrap, a successor prepublished
    /// every 30 days, the predecessor verifying 3 more days, material dropped at retirement.
    #[test]
    fn a_year_of_scheduled_webhook_rotations_follows_its_own_policy() {
        let policy = KeySetPolicy::default_for(KeySetName::Webhook);
        // Hourly runs: the time bound of the test above stays with the access set.
        let (n_created, activation_days) = simulate_a_year(&policy, HOUR);
        assert_eq!(n_created, 13);
        assert_eq!(
            activation_days,
            (0..=12).map(|month| month * 30).collect::<Vec<u64>>()
        );
    }

    /// Runs the scheduler every `step` for 365 days under `policy`, checking every
    /// invariant at each step; returns the keys created and the days each signer began.
    fn simulate_a_year(policy: &KeySetPolicy, step: Duration) -> (usize, Vec<u64>) {
        let policy = *policy;
        let start = UnixMillis::from_secs(1_700_000_000);
        let mut keys: Vec<KeyView> = Vec::new();
        let mut n_created = 0;
        let mut signer_history: Vec<(UnixMillis, String)> = Vec::new();
        let mut now = start;
        while now <= start.plus(365 * DAY) {
            let new_kid = KeyId::new(format!("k{n_created}")).unwrap();
            let plan = plan(&keys, &policy, &Trigger::Scheduled, now, new_kid).unwrap();
            if plan.create.is_some() {
                n_created += 1;
            }
            apply(&mut keys, &plan, now);
            // Re-planning at the same instant finds nothing more to do.
            let again = super::plan(
                &keys,
                &policy,
                &Trigger::Scheduled,
                now,
                KeyId::new("x").unwrap(),
            )
            .unwrap();
            assert!(again.is_empty(), "plan not idempotent at {now}: {again:?}");

            let signer = signer_at(&keys, now)
                .expect("a signer at every instant")
                .kid
                .to_string();
            let published = published(&keys, now);
            assert!(published.contains(&signer));
            if signer_history.last().map(|(_, kid)| kid) != Some(&signer) {
                signer_history.push((now, signer.clone()));
            }
            for key in &keys {
                let schedule = &key.schedule;
                let kid = schedule.kid.to_string();
                // A key's tokens verify for the whole overlap after it stops signing.
                if let (Some(deactivates_at), Some(verify_until)) =
                    (schedule.deactivates_at, schedule.verify_until)
                {
                    assert_eq!(verify_until.since(deactivates_at), policy.overlap);
                    assert_eq!(
                        published.contains(&kid),
                        now < verify_until,
                        "{kid} at {now}"
                    );
                }
                // A successor is published at least `prepublish` before it signs.
                if schedule.activates_at > start {
                    assert!(schedule.activates_at.since(schedule.created_at) >= policy.prepublish);
                }
            }
            assert!(
                published.len() <= 2,
                "at most signer + one neighbour: {published:?} at {now}"
            );
            now = now.plus(step);
        }
        let activation_days: Vec<u64> = signer_history
            .iter()
            .map(|(at, _)| at.since(start).as_secs() / DAY.as_secs())
            .collect();
        // Every retired key has had its private key dropped.
        for key in &keys {
            if matches!(key.schedule.state_at(now), KeyState::Retired { .. }) {
                assert!(!key.has_private);
            }
            assert_eq!(key.schedule.algorithm, policy.algorithm);
        }
        (n_created, activation_days)
    }

    fn bootstrap(policy: &KeySetPolicy, now: UnixMillis) -> Vec<KeyView> {
        let mut keys = Vec::new();
        let plan = plan(
            &keys,
            policy,
            &Trigger::Scheduled,
            now,
            KeyId::new("k0").unwrap(),
        )
        .unwrap();
        apply(&mut keys, &plan, now);
        keys
    }

    /// k0 bootstrapped at `now`, then a manual rotation at `now` hands over to k1: k1
    /// signs and k0 is retiring for the overlap.
    fn signer_k1_with_k0_retiring(policy: &KeySetPolicy, now: UnixMillis) -> Vec<KeyView> {
        let mut keys = bootstrap(policy, now);
        let manual = plan(
            &keys,
            policy,
            &Trigger::Manual {
                prepublish: Duration::ZERO,
            },
            now,
            KeyId::new("k1").unwrap(),
        )
        .unwrap();
        apply(&mut keys, &manual, now);
        keys
    }

    #[test]
    fn manual_rotation_hands_over_after_the_requested_prepublish() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let now = UnixMillis::from_secs(1_000);
        let mut keys = bootstrap(&policy, now);
        let plan = plan(
            &keys,
            &policy,
            &Trigger::Manual { prepublish: HOUR },
            now,
            KeyId::new("k1").unwrap(),
        )
        .unwrap();
        assert_eq!(plan.previous_signer.as_ref().map(KeyId::as_str), Some("k0"));
        apply(&mut keys, &plan, now);
        assert_eq!(
            signer_at(&keys, now.plus(HOUR).minus(Duration::from_millis(1)))
                .unwrap()
                .kid
                .as_str(),
            "k0"
        );
        assert_eq!(signer_at(&keys, now.plus(HOUR)).unwrap().kid.as_str(), "k1");
        assert_eq!(published(&keys, now.plus(HOUR + 6 * DAY)).len(), 2);
        assert_eq!(published(&keys, now.plus(HOUR + 7 * DAY)).len(), 1);
    }

    #[test]
    fn manual_rotation_with_a_pending_successor_brings_it_forward() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let start = UnixMillis::from_secs(1_000);
        let mut keys = bootstrap(&policy, start);
        let due = start.plus(policy.rotate_every).minus(policy.prepublish);
        let scheduled = plan(
            &keys,
            &policy,
            &Trigger::Scheduled,
            due,
            KeyId::new("k1").unwrap(),
        )
        .unwrap();
        apply(&mut keys, &scheduled, due);
        let manual = plan(
            &keys,
            &policy,
            &Trigger::Manual {
                prepublish: Duration::ZERO,
            },
            due,
            KeyId::new("k2").unwrap(),
        )
        .unwrap();
        assert!(manual.create.is_none());
        apply(&mut keys, &manual, due);
        assert_eq!(signer_at(&keys, due).unwrap().kid.as_str(), "k1");
    }

    #[test]
    fn emergency_rotation_revokes_signer_and_pending_and_signs_at_once() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let start = UnixMillis::from_secs(1_000);
        let mut keys = bootstrap(&policy, start);
        let plan = plan(
            &keys,
            &policy,
            &Trigger::Emergency,
            start,
            KeyId::new("k1").unwrap(),
        )
        .unwrap();
        assert_eq!(plan.revoked, vec![KeyId::new("k0").unwrap()]);
        apply(&mut keys, &plan, start);
        assert_eq!(signer_at(&keys, start).unwrap().kid.as_str(), "k1");
        assert_eq!(published(&keys, start), BTreeSet::from(["k1".to_owned()]));
    }

    fn kids(kids: &[KeyId]) -> BTreeSet<String> {
        kids.iter().map(KeyId::to_string).collect()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// k0 retiring, k1 signing, k2 pending (published, signs in an hour).
    fn retiring_active_and_pending(policy: &KeySetPolicy, now: UnixMillis) -> Vec<KeyView> {
        let mut keys = bootstrap(policy, now);
        for (kid, prepublish) in [("k1", Duration::ZERO), ("k2", HOUR)] {
            let trigger = Trigger::Manual { prepublish };
            let manual = plan(&keys, policy, &trigger, now, KeyId::new(kid).unwrap()).unwrap();
            apply(&mut keys, &manual, now);
        }
        let state = |kid: &str| {
            keys.iter()
                .find(|key| key.schedule.kid.as_str() == kid)
                .map(|key| key.schedule.state_at(now).name())
        };
        assert_eq!(
            [state("k0"), state("k1"), state("k2")],
            [Some("retiring"), Some("active"), Some("pending")]
        );
        keys
    }

    #[test]
    fn emergency_rotation_revokes_retiring_and_pending_keys_too() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let now = UnixMillis::from_secs(1_000);
        let mut keys = retiring_active_and_pending(&policy, now);
        let emergency = plan(
            &keys,
            &policy,
            &Trigger::Emergency,
            now,
            KeyId::new("k3").unwrap(),
        )
        .unwrap();
        assert_eq!(kids(&emergency.revoked), names(&["k0", "k1", "k2"]));
        assert_eq!(emergency.previous_signer, Some(KeyId::new("k1").unwrap()));
        apply(&mut keys, &emergency, now);
        // Only the fresh key is trusted, and only it still has a private key.
        assert_eq!(published(&keys, now), names(&["k3"]));
        assert_eq!(signer_at(&keys, now).unwrap().kid.as_str(), "k3");
        let with_private: Vec<&str> = keys
            .iter()
            .filter(|key| key.has_private)
            .map(|key| key.schedule.kid.as_str())
            .collect();
        assert_eq!(with_private, vec!["k3"]);
        // Later, the former retiring key stays revoked rather than retiring quietly.
        let later = now.plus(8 * DAY);
        for key in keys.iter().filter(|key| key.schedule.kid.as_str() != "k3") {
            assert!(matches!(
                key.schedule.state_at(later),
                KeyState::Revoked { .. }
            ));
        }
    }

    #[test]
    fn emergency_rotation_drops_material_a_late_scheduler_left_behind() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let start = UnixMillis::from_secs(1_000);
        let mut keys = signer_k1_with_k0_retiring(&policy, start);
        // Past k0's overlap, but no scheduled run has retired it yet.
        let now = start.plus(policy.overlap + HOUR);
        let emergency = plan(
            &keys,
            &policy,
            &Trigger::Emergency,
            now,
            KeyId::new("k2").unwrap(),
        )
        .unwrap();
        assert_eq!(kids(&emergency.revoked), names(&["k1"]));
        assert_eq!(kids(&emergency.retired), names(&["k0"]));
        apply(&mut keys, &emergency, now);
        assert!(
            keys.iter()
                .all(|key| key.has_private == (key.schedule.kid.as_str() == "k2"))
        );
    }

    #[test]
    fn revoking_a_retiring_key_leaves_the_signer_alone() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let start = UnixMillis::from_secs(1_000);
        let mut keys = signer_k1_with_k0_retiring(&policy, start);
        let revoke = plan(
            &keys,
            &policy,
            &Trigger::Revoke {
                kid: KeyId::new("k0").unwrap(),
            },
            start,
            KeyId::new("k2").unwrap(),
        )
        .unwrap();
        assert!(revoke.create.is_none());
        apply(&mut keys, &revoke, start);
        assert_eq!(signer_at(&keys, start).unwrap().kid.as_str(), "k1");
        let again = plan(
            &keys,
            &policy,
            &Trigger::Revoke {
                kid: KeyId::new("k0").unwrap(),
            },
            start,
            KeyId::new("k3").unwrap(),
        );
        assert_eq!(
            again.unwrap_err(),
            PlanError::AlreadyRevoked(KeyId::new("k0").unwrap())
        );
        let unknown = plan(
            &keys,
            &policy,
            &Trigger::Revoke {
                kid: KeyId::new("nope").unwrap(),
            },
            start,
            KeyId::new("k3").unwrap(),
        );
        assert!(matches!(unknown, Err(PlanError::UnknownKey(_))));
    }

    #[test]
    fn revoking_the_signer_creates_a_successor_immediately() {
        let policy = KeySetPolicy::default_for(KeySetName::Access);
        let start = UnixMillis::from_secs(1_000);
        let mut keys = bootstrap(&policy, start);
        let revoke = plan(
            &keys,
            &policy,
            &Trigger::Revoke {
                kid: KeyId::new("k0").unwrap(),
            },
            start,
            KeyId::new("k1").unwrap(),
        )
        .unwrap();
        apply(&mut keys, &revoke, start);
        assert_eq!(signer_at(&keys, start).unwrap().kid.as_str(), "k1");
    }
}

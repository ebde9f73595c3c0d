//! Revocation entries and the matcher of DESIGN §5.
//!
//! A token is revoked if its `jti` is listed, or if an entry for its session, user,
//! tenant, family or `all` has `revoked_at ≥` the token's issuance instant (compared in
//! milliseconds, so a user who logs out everywhere and logs in again within the same
//! second keeps the new token), or if its signing key is revoked.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

/// What a revocation entry targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    Jti,
    Session,
    User,
    Tenant,
    Family,
    Key,
    All,
}

impl RevocationKind {
    const COUNT: usize = 7;

    /// Every kind, in a fixed order.
    pub const ALL: [RevocationKind; Self::COUNT] = [
        RevocationKind::Jti,
        RevocationKind::Session,
        RevocationKind::User,
        RevocationKind::Tenant,
        RevocationKind::Family,
        RevocationKind::Key,
        RevocationKind::All,
    ];

    /// The snake_case name (as in JSON, database columns and metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Session => "session",
            RevocationKind::User => "user",
            RevocationKind::Tenant => "tenant",
            RevocationKind::Family => "family",
            RevocationKind::Key => "key",
            RevocationKind::All => "all",
        }
    }

    /// The kind named `name` by [`RevocationKind::as_str`].
    pub fn from_name(name: &str) -> Option<RevocationKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    const fn index(self) -> usize {
        match self {
            RevocationKind::Jti => 0,
            RevocationKind::Session => 1,
            RevocationKind::User => 2,
            RevocationKind::Tenant => 3,
            RevocationKind::Family => 4,
            RevocationKind::Key => 5,
            RevocationKind::All => 6,
        }
    }
}

/// One revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    pub kind: RevocationKind,
    /// The jti, session id, user id, tenant id, family id or kid; empty for `All`.
    pub value: String,
    /// Confines the entry to one tenant's tokens; `None` matches every tenant.
    pub tenant_id: Option<String>,
    pub revoked_at: UnixMillis,
    /// After this instant no token the entry could match is still alive.
    pub drop_after: UnixMillis,
}

/// What the matcher needs to know about a token.
#[derive(Clone, Copy, Debug)]
pub struct TokenFacts<'a> {
    pub jti: &'a str,
    /// The session, for token types minted by one (access tokens).
    pub session_id: Option<&'a str>,
    pub subject: &'a str,
    pub tenant_id: &'a str,
    pub family_id: Option<&'a str>,
    pub kid: &'a str,
    /// Issuance instant in milliseconds.
    pub issued_at: UnixMillis,
}

/// The live revocation entries, indexed for matching in a few hash probes that allocate
/// nothing: per kind, by value, then the (usually single) entries of each tenant scope.
///
/// Serialised as a plain list of entries: the index is rebuilt on load (JSON maps need
/// string keys, and the list is the stable, readable form for bundle cache files).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<RevocationEntry>", into = "Vec<RevocationEntry>")]
pub struct RevocationSet {
    by_kind: Vec<HashMap<String, Vec<RevocationEntry>>>,
    n_entries: usize,
}

impl RevocationSet {
    /// Returns the number of live entries.
    pub fn len(&self) -> usize {
        self.n_entries
    }

    /// Returns true when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }

    /// Adds `entry`; an entry for the same target keeps the later `revoked_at`.
    pub fn insert(&mut self, entry: RevocationEntry) {
        if self.by_kind.is_empty() {
            self.by_kind = vec![HashMap::new(); RevocationKind::COUNT];
        }
        let scopes = self.by_kind[entry.kind.index()]
            .entry(entry.value.clone())
            .or_default();
        match scopes
            .iter_mut()
            .find(|existing| existing.tenant_id == entry.tenant_id)
        {
            Some(existing) => {
                if entry.revoked_at > existing.revoked_at {
                    *existing = entry;
                }
            }
            None => {
                scopes.push(entry);
                self.n_entries += 1;
            }
        }
    }

    /// Forgets entries whose `drop_after` has passed.
    pub fn prune(&mut self, now: UnixMillis) {
        for map in &mut self.by_kind {
            map.retain(|_, scopes| {
                scopes.retain(|entry| entry.drop_after > now);
                !scopes.is_empty()
            });
        }
        self.n_entries = self.entries().count();
    }

    /// Returns every entry (for snapshots).
    pub fn entries(&self) -> impl Iterator<Item = &RevocationEntry> {
        self.by_kind.iter().flat_map(HashMap::values).flatten()
    }

    /// Returns the entry that revokes the token described by `facts`, if any.
    pub fn matching(&self, facts: &TokenFacts<'_>) -> Option<&RevocationEntry> {
        if self.n_entries == 0 {
            return None;
        }
        let issued_at = facts.issued_at;
        // A jti names one token, so its entry applies whatever the instants.
        if let Some(entry) = self.find(RevocationKind::Jti, facts.tenant_id, facts.jti) {
            return Some(entry);
        }
        let cutoff_kinds = [
            (RevocationKind::Session, facts.session_id),
            (RevocationKind::User, Some(facts.subject)),
            (RevocationKind::Tenant, Some(facts.tenant_id)),
            (RevocationKind::Key, Some(facts.kid)),
            (RevocationKind::All, Some("")),
            (RevocationKind::Family, facts.family_id),
        ];
        // A token without a session (or family) matches no session (or family) entry,
        // not even one filed under an empty id.
        cutoff_kinds
            .into_iter()
            .filter_map(|(kind, value)| self.find(kind, facts.tenant_id, value?))
            .find(|entry| entry.revoked_at >= issued_at)
    }

    /// Returns the latest cutoff that revokes everything of `tenant_id` issued or verified
    /// at or before it: its tenant entry (emergency revocation) or an `all` entry that
    /// applies to it. A verifier caching answers about opaque credentials compares its
    /// answers' verification instants with it.
    pub fn tenant_cutoff(&self, tenant_id: &str) -> Option<UnixMillis> {
        if self.n_entries == 0 {
            return None;
        }
        [
            (RevocationKind::Tenant, tenant_id),
            (RevocationKind::All, ""),
        ]
        .into_iter()
        .filter_map(|(kind, value)| self.find(kind, tenant_id, value))
        .map(|entry| entry.revoked_at)
        .max()
    }

    /// Returns the latest entry of `kind` for `value` that applies to `tenant_id`: scoped
    /// to that tenant or platform-wide. The later revocation wins, so a cutoff is never
    /// moved backwards.
    fn find(&self, kind: RevocationKind, tenant_id: &str, value: &str) -> Option<&RevocationEntry> {
        self.by_kind
            .get(kind.index())?
            .get(value)?
            .iter()
            .filter(|entry| {
                entry
                    .tenant_id
                    .as_deref()
                    .is_none_or(|scope| scope == tenant_id)
            })
            .max_by_key(|entry| entry.revoked_at)
    }
}

/// Two sets are equal when they hold the same entries, however their index was built.
impl PartialEq for RevocationSet {
    fn eq(&self, other: &Self) -> bool {
        self.n_entries == other.n_entries
            && self.entries().all(|entry| {
                other
                    .by_kind
                    .get(entry.kind.index())
                    .and_then(|map| map.get(&entry.value))
                    .is_some_and(|scopes| scopes.contains(entry))
            })
    }
}

impl Eq for RevocationSet {}

impl From<Vec<RevocationEntry>> for RevocationSet {
    fn from(entries: Vec<RevocationEntry>) -> Self {
        let mut set = RevocationSet::default();
        for entry in entries {
            set.insert(entry);
        }
        set
    }
}

impl From<RevocationSet> for Vec<RevocationEntry> {
    fn from(set: RevocationSet) -> Self {
        set.by_kind
            .into_iter()
            .flat_map(HashMap::into_values)
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: RevocationKind, value: &str, revoked_at: i64) -> RevocationEntry {
        RevocationEntry {
            kind,
            value: value.into(),
            tenant_id: None,
            revoked_at: UnixMillis(revoked_at),
            drop_after: UnixMillis(revoked_at + 1_000_000),
        }
    }

    fn facts(issued_at: i64) -> TokenFacts<'static> {
        TokenFacts {
            jti: "j1",
            session_id: Some("s1"),
            subject: "u1",
            tenant_id: "t1",
            family_id: Some("f1"),
            kid: "k1",
            issued_at: UnixMillis(issued_at),
        }
    }

    #[test]
    fn tenant_cutoff_is_the_latest_tenant_or_all_entry_that_applies() {
        let mut set = RevocationSet::default();
        assert_eq!(set.tenant_cutoff("t1"), None);
        set.insert(entry(RevocationKind::User, "t1", 900));
        assert_eq!(set.tenant_cutoff("t1"), None);
        set.insert(entry(RevocationKind::Tenant, "t1", 100));
        set.insert(entry(RevocationKind::Tenant, "t2", 500));
        assert_eq!(set.tenant_cutoff("t1"), Some(UnixMillis(100)));
        assert_eq!(set.tenant_cutoff("t3"), None);
        // An `all` entry confined to another tenant does not apply.
        set.insert(RevocationEntry {
            tenant_id: Some("t2".into()),
            ..entry(RevocationKind::All, "", 700)
        });
        assert_eq!(set.tenant_cutoff("t1"), Some(UnixMillis(100)));
        assert_eq!(set.tenant_cutoff("t2"), Some(UnixMillis(700)));
        set.insert(entry(RevocationKind::All, "", 300));
        assert_eq!(set.tenant_cutoff("t1"), Some(UnixMillis(300)));
        assert_eq!(set.tenant_cutoff("t3"), Some(UnixMillis(300)));
    }

    #[test]
    fn cutoff_entries_revoke_only_tokens_issued_at_or_before() {
        for kind in [
            RevocationKind::Session,
            RevocationKind::User,
            RevocationKind::Tenant,
            RevocationKind::Family,
            RevocationKind::Key,
        ] {
            let value = match kind {
                RevocationKind::Session => "s1",
                RevocationKind::User => "u1",
                RevocationKind::Tenant => "t1",
                RevocationKind::Family => "f1",
                _ => "k1",
            };
            let mut set = RevocationSet::default();
            set.insert(entry(kind, value, 5_000));
            assert!(set.matching(&facts(4_999)).is_some(), "{kind:?}");
            assert!(set.matching(&facts(5_000)).is_some(), "{kind:?}");
            // Same second, one millisecond later: a fresh login survives the logout.
            assert!(set.matching(&facts(5_001)).is_none(), "{kind:?}");
        }
    }

    #[test]
    fn jti_entry_revokes_regardless_of_instant_and_all_entry_revokes_everyone() {
        let mut set = RevocationSet::default();
        set.insert(entry(RevocationKind::Jti, "j1", 0));
        assert!(set.matching(&facts(10_000)).is_some());
        let mut set = RevocationSet::default();
        set.insert(entry(RevocationKind::All, "", 7_000));
        assert!(set.matching(&facts(6_000)).is_some());
        assert!(set.matching(&facts(8_000)).is_none());
    }

    #[test]
    fn tenant_scoped_entry_does_not_touch_other_tenants() {
        let mut set = RevocationSet::default();
        set.insert(RevocationEntry {
            tenant_id: Some("t2".into()),
            ..entry(RevocationKind::User, "u1", 5_000)
        });
        assert!(set.matching(&facts(1_000)).is_none());
    }

    #[test]
    fn an_id_revoked_in_one_tenant_never_revokes_the_same_id_in_another() {
        // Ids are chosen by tenants (a user `u1`, an app-supplied session id), so the same
        // value in another tenant is another principal.
        for (kind, value) in [
            (RevocationKind::Jti, "j1"),
            (RevocationKind::Session, "s1"),
            (RevocationKind::User, "u1"),
            (RevocationKind::Family, "f1"),
        ] {
            let mut set = RevocationSet::default();
            set.insert(RevocationEntry {
                tenant_id: Some("t2".into()),
                ..entry(kind, value, 5_000)
            });
            assert!(set.matching(&facts(1_000)).is_none(), "{kind:?} in t1");
            let in_t2 = TokenFacts {
                tenant_id: "t2",
                ..facts(1_000)
            };
            assert!(set.matching(&in_t2).is_some(), "{kind:?} in t2");
        }
    }

    #[test]
    fn set_round_trips_through_json_as_a_list() {
        let mut set = RevocationSet::default();
        set.insert(entry(RevocationKind::Jti, "a", 0));
        set.insert(RevocationEntry {
            tenant_id: Some("t1".into()),
            ..entry(RevocationKind::User, "u1", 5_000)
        });
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.starts_with('['), "{json}");
        let back: RevocationSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert!(back.matching(&facts(1_000)).is_some());
        assert_eq!(back.entries().count(), 2);
    }

    #[test]
    fn the_later_of_a_scoped_and_a_global_entry_applies() {
        let mut set = RevocationSet::default();
        set.insert(RevocationEntry {
            tenant_id: Some("t1".into()),
            ..entry(RevocationKind::User, "u1", 3_000)
        });
        set.insert(entry(RevocationKind::User, "u1", 6_000));
        set.insert(RevocationEntry {
            tenant_id: Some("t1".into()),
            ..entry(RevocationKind::User, "u1", 2_000)
        });
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.matching(&facts(5_000)).map(|entry| entry.revoked_at),
            Some(UnixMillis(6_000))
        );
        assert!(set.matching(&facts(6_001)).is_none());
        let mut pruned = set.clone();
        pruned.prune(UnixMillis(1_003_500));
        assert_eq!(pruned.len(), 1);
        assert_ne!(pruned, set);
        let mut emptied = set.clone();
        emptied.prune(UnixMillis(i64::MAX));
        assert_eq!(emptied, RevocationSet::default());
    }

    #[test]
    fn a_token_without_a_session_matches_no_session_entry() {
        // Action and service tokens have no session: an entry filed under an empty
        // session id must not revoke them all.
        let mut set = RevocationSet::default();
        set.insert(entry(RevocationKind::Session, "", 5_000));
        let sessionless = TokenFacts {
            session_id: None,
            family_id: None,
            ..facts(1_000)
        };
        assert!(set.matching(&sessionless).is_none());
        set.insert(entry(RevocationKind::User, "u1", 5_000));
        assert!(set.matching(&sessionless).is_some());
    }

    #[test]
    fn prune_drops_expired_entries() {
        let mut set = RevocationSet::default();
        set.insert(entry(RevocationKind::Jti, "a", 0));
        set.insert(entry(RevocationKind::Jti, "b", 5_000_000));
        set.prune(UnixMillis(2_000_000));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_million_jti_revocations_over_simulated_time_stay_bounded() {
        // One revocation every 10 ms for 10,000 s of simulated time (1,000,000 entries),
        // each dropped 15.5 minutes after its instant, pruned once a simulated minute:
        // the live set never exceeds the entries of one horizon plus one prune interval.
        let horizon_ms = 930_000;
        let prune_every_ms = 60_000;
        let mut set = RevocationSet::default();
        let mut largest = 0;
        for i in 0..1_000_000i64 {
            let now = i * 10;
            set.insert(RevocationEntry {
                kind: RevocationKind::Jti,
                value: format!("jti-{i}"),
                tenant_id: None,
                revoked_at: UnixMillis(now),
                drop_after: UnixMillis(now + horizon_ms),
            });
            if now % prune_every_ms == 0 {
                set.prune(UnixMillis(now));
            }
            largest = largest.max(set.len());
        }
        let bound = ((horizon_ms + prune_every_ms) / 10) as usize + 1;
        assert!(
            largest <= bound,
            "live set grew to {largest} (bound {bound})"
        );
        set.prune(UnixMillis(10_000_000 + horizon_ms));
        assert!(set.is_empty());
        // The newest entries still match until dropped.
        set.insert(entry(RevocationKind::Jti, "late", 0));
        assert!(
            set.matching(&TokenFacts {
                jti: "late",
                ..facts(1)
            })
            .is_some()
        );
    }
}

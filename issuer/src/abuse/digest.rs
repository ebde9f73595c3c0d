//! The summary of refused anonymous calls: one audit row per burst per peer, not one per
//! call.
//!
//! Contract: every call refused for want of a valid credential is `record`ed against its
//! peer. A peer's burst ends when the peer has been quiet for `quiet`, or is cut when it
//! has lasted `max_span` (so a steady attack still shows up in the log while it goes on);
//! `take_due` hands back the bursts that ended, `take_all` every open one (shutdown).
//! At most `max_peers` bursts are open at once; calls from further peers are counted in a
//! single "other peers" burst, so an attacker with many addresses cannot grow memory
//! without bound. Refusals of an authenticated caller (missing scope, wrong tenant) are
//! not summarised: they are attributable, and the caller audits them one by one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tessera_common::UnixMillis;

use super::bucket::Peer;

/// When a burst ends and how much is kept about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestPolicy {
    /// A burst ends after this long without a refusal.
    pub quiet: Duration,
    /// A burst longer than this is summarised and a new one begins.
    pub max_span: Duration,
    /// Most peers with an open burst.
    pub max_peers: usize,
    /// Most distinct RPC names kept per burst.
    pub max_rpcs: usize,
}

impl Default for DigestPolicy {
    /// Quiet after 3 s, a row a minute at most per peer while an attack lasts.
    fn default() -> Self {
        DigestPolicy {
            quiet: Duration::from_secs(3),
            max_span: Duration::from_secs(60),
            max_peers: 10_000,
            max_rpcs: 8,
        }
    }
}

/// Whose refusals a burst counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Peer(Peer),
    /// Peers that arrived while `max_peers` bursts were already open.
    OtherPeers,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Peer(peer) => write!(f, "{peer}"),
            Source::OtherPeers => f.write_str("other peers"),
        }
    }
}

/// One ended burst, ready for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenialSummary {
    pub source: Source,
    pub first_at: UnixMillis,
    pub last_at: UnixMillis,
    /// Calls refused, the rate-limited ones included.
    pub n_refused: u64,
    /// Of those, calls refused because the peer was over its budget.
    pub n_rate_limited: u64,
    /// The RPCs called, in name order (at most `max_rpcs`).
    pub rpcs: Vec<String>,
    /// True when more RPCs were called than `rpcs` lists.
    pub more_rpcs: bool,
}

// === impl DenialSummary ===

impl DenialSummary {
    /// Returns the audit target: the RPCs called, comma-separated.
    pub fn target(&self) -> String {
        let mut target = self.rpcs.join(",");
        if self.more_rpcs {
            target.push_str(",…");
        }
        target
    }

    /// Returns the audit reason, e.g. "300 refused calls from 127.0.0.1 (RPCs
    /// KeyService/ListKeys; 250 rate limited) between 2026-11-30T13:00:00.000Z and
    /// 2026-11-30T13:00:01.250Z".
    pub fn reason(&self) -> String {
        let calls = if self.n_refused == 1 { "call" } else { "calls" };
        format!(
            "{} refused {calls} from {} (RPCs {}; {} rate limited) between {} and {}",
            self.n_refused,
            self.source,
            self.target().replace(',', ", "),
            self.n_rate_limited,
            rfc3339(self.first_at),
            rfc3339(self.last_at),
        )
    }
}

/// An open burst.
#[derive(Debug)]
struct Burst {
    first_at: UnixMillis,
    last_at: UnixMillis,
    n_refused: u64,
    n_rate_limited: u64,
    rpcs: BTreeSet<String>,
    more_rpcs: bool,
}

/// The open bursts.
#[derive(Debug)]
pub struct DenialDigest {
    policy: DigestPolicy,
    bursts: HashMap<Source, Burst>,
}

// === impl DenialDigest ===

impl DenialDigest {
    pub fn new(policy: DigestPolicy) -> Self {
        DenialDigest {
            policy,
            bursts: HashMap::new(),
        }
    }

    /// Counts one refused call of `rpc` from `peer` at `now`.
    pub fn record(&mut self, peer: Peer, rpc: &str, rate_limited: bool, now: UnixMillis) {
        let source = if self.bursts.len() < self.policy.max_peers
            || self.bursts.contains_key(&Source::Peer(peer))
        {
            Source::Peer(peer)
        } else {
            Source::OtherPeers
        };
        let burst = self.bursts.entry(source).or_insert_with(|| Burst {
            first_at: now,
            last_at: now,
            n_refused: 0,
            n_rate_limited: 0,
            rpcs: BTreeSet::new(),
            more_rpcs: false,
        });
        burst.last_at = burst.last_at.max(now);
        burst.n_refused += 1;
        burst.n_rate_limited += u64::from(rate_limited);
        if burst.rpcs.contains(rpc) {
            return;
        }
        if burst.rpcs.len() < self.policy.max_rpcs {
            burst.rpcs.insert(rpc.to_owned());
        } else {
            burst.more_rpcs = true;
        }
    }

    /// Removes and returns the bursts that ended by `now` (quiet, or too long), oldest
    /// first.
    pub fn take_due(&mut self, now: UnixMillis) -> Vec<DenialSummary> {
        let policy = self.policy;
        let due: Vec<Source> = self
            .bursts
            .iter()
            .filter(|(_, burst)| {
                now.since(burst.last_at) >= policy.quiet
                    || now.since(burst.first_at) >= policy.max_span
            })
            .map(|(source, _)| *source)
            .collect();
        self.remove(due)
    }

    /// Removes and returns every open burst (at shutdown), oldest first.
    pub fn take_all(&mut self) -> Vec<DenialSummary> {
        let all: Vec<Source> = self.bursts.keys().copied().collect();
        self.remove(all)
    }

    /// Returns the number of open bursts.
    pub fn n_open(&self) -> usize {
        self.bursts.len()
    }

    fn remove(&mut self, sources: Vec<Source>) -> Vec<DenialSummary> {
        let mut summaries: Vec<DenialSummary> = sources
            .into_iter()
            .filter_map(|source| {
                let burst = self.bursts.remove(&source)?;
                Some(DenialSummary {
                    source,
                    first_at: burst.first_at,
                    last_at: burst.last_at,
                    n_refused: burst.n_refused,
                    n_rate_limited: burst.n_rate_limited,
                    rpcs: burst.rpcs.into_iter().collect(),
                    more_rpcs: burst.more_rpcs,
                })
            })
            .collect();
        summaries.sort_by_key(|summary| summary.first_at);
        summaries
    }
}

/// Formats an instant as RFC 3339 UTC with milliseconds (proleptic Gregorian calendar;
/// Howard Hinnant's `civil_from_days`).
pub(crate) fn rfc3339(at: UnixMillis) -> String {
    let millis = at.0.rem_euclid(1000);
    let seconds = at.0.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const POLICY: DigestPolicy = DigestPolicy {
        quiet: Duration::from_secs(3),
        max_span: Duration::from_secs(60),
        max_peers: 3,
        max_rpcs: 2,
    };

    fn peer(last: u8) -> Peer {
        Peer::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    fn at(seconds: i64) -> UnixMillis {
        UnixMillis::from_secs(1_764_507_600 + seconds)
    }

    #[test]
    fn a_burst_of_300_refusals_is_one_summary_once_the_peer_is_quiet() {
        let mut digest = DenialDigest::new(POLICY);
        for n in 0..300 {
            digest.record(peer(1), "KeyService/ListKeys", n >= 50, at(0));
        }
        digest.record(peer(1), "KeyService/ListKeys", true, at(1));
        assert!(
            digest.take_due(at(3)).is_empty(),
            "2 s quiet is not yet the end"
        );
        let summaries = digest.take_due(at(4));
        assert_eq!(summaries.len(), 1);
        let summary = &summaries[0];
        assert_eq!(summary.n_refused, 301);
        assert_eq!(summary.n_rate_limited, 251);
        assert_eq!((summary.first_at, summary.last_at), (at(0), at(1)));
        assert_eq!(
            summary.reason(),
            "301 refused calls from 192.0.2.1 (RPCs KeyService/ListKeys; 251 rate limited) \
             between 2025-11-30T13:00:00.000Z and 2025-11-30T13:00:01.000Z"
        );
        assert_eq!(digest.n_open(), 0);
        assert!(digest.take_due(at(100)).is_empty(), "summarised once");
    }

    #[test]
    fn a_steady_attack_is_summarised_every_max_span_while_it_lasts() {
        let mut digest = DenialDigest::new(POLICY);
        let mut n_summaries = 0;
        let mut n_counted = 0;
        for second in 0..180 {
            digest.record(peer(1), "TokenService/IssueAccessToken", false, at(second));
            for summary in digest.take_due(at(second)) {
                n_summaries += 1;
                n_counted += summary.n_refused;
            }
        }
        assert_eq!(n_summaries, 2, "one per minute while it goes on");
        for summary in digest.take_due(at(200)) {
            n_counted += summary.n_refused;
        }
        assert_eq!(n_counted, 180, "every refusal counted exactly once");
    }

    #[test]
    fn peers_are_summarised_separately_and_overflow_into_other_peers() {
        let mut digest = DenialDigest::new(POLICY);
        for last in 1..=10 {
            digest.record(
                peer(last),
                "KeyService/ListKeys",
                false,
                at(i64::from(last)),
            );
        }
        assert_eq!(
            digest.n_open(),
            4,
            "max_peers bursts plus the overflow burst"
        );
        let summaries = digest.take_all();
        let sources: Vec<String> = summaries.iter().map(|s| s.source.to_string()).collect();
        assert_eq!(
            sources,
            ["192.0.2.1", "192.0.2.2", "192.0.2.3", "other peers"]
        );
        assert_eq!(summaries[3].n_refused, 7);
    }

    #[test]
    fn rpc_names_are_bounded_per_burst() {
        let mut digest = DenialDigest::new(POLICY);
        for rpc in ["C/c", "A/a", "B/b", "A/a"] {
            digest.record(peer(1), rpc, false, at(0));
        }
        let summary = digest.take_all().remove(0);
        assert_eq!(summary.rpcs, ["A/a", "C/c"]);
        assert!(summary.more_rpcs);
        assert_eq!(summary.target(), "A/a,C/c,…");
        assert!(
            summary
                .reason()
                .starts_with("4 refused calls from 192.0.2.1 (RPCs A/a, C/c, …; 0 rate limited)")
        );
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UnixMillis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(rfc3339(UnixMillis(-1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339(UnixMillis(1_764_508_897_456)),
            "2025-11-30T13:21:37.456Z"
        );
    }
}

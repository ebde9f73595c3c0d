//! Token buckets of refused calls, one per peer, in a map of bounded size.
//!
//! Contract: a peer starts with `burst` tokens; every call refused for want of a valid
//! credential takes one; tokens come back at `refill_per_second` up to `burst`. A peer with
//! no token left is over budget until the next token is due, and is told when that is.
//! Calls with a valid credential never take a token. Time is an argument: the buckets hold
//! instants from the caller's `Clock`, never read a clock themselves.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tessera_common::UnixMillis;

/// Thousandths of a token: integer arithmetic keeps refills exact at any call rate.
const MILLI: u64 = 1000;

/// How many refused calls a peer may make: `burst` at once, then `refill_per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketPolicy {
    pub burst: u32,
    pub refill_per_second: u32,
    /// Most peers tracked at once. When an attacker with many addresses fills the map, the
    /// least recently used peers are forgotten (and so start again with a full bucket):
    /// memory stays bounded at the price of some leniency under that attack.
    pub max_peers: u64,
}

impl Default for BucketPolicy {
    /// 50 refused calls at once, then 10 a second, for up to 100,000 peers (about 10 MB):
    /// far above a misconfigured client's retry loop, far below a credential-guessing run.
    fn default() -> Self {
        BucketPolicy {
            burst: 50,
            refill_per_second: 10,
            max_peers: 100_000,
        }
    }
}

/// Where calls come from, as far as rate limiting is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// An IPv4 address, or an IPv6 /64 prefix (one host usually holds a whole /64, so
    /// counting single IPv6 addresses would give an attacker 2^64 buckets).
    Ip(IpAddr),
    /// A Unix-socket or otherwise unknown peer: all of them share one bucket.
    Local,
}

impl Peer {
    /// Returns the peer of a connection from `address` (`None`: not over IP).
    pub fn from_address(address: Option<IpAddr>) -> Peer {
        match address.map(|address| address.to_canonical()) {
            Some(IpAddr::V6(address)) => {
                let prefix = u128::from(address) & (u128::MAX << 64);
                Peer::Ip(IpAddr::V6(prefix.into()))
            }
            Some(address) => Peer::Ip(address),
            None => Peer::Local,
        }
    }

    /// Returns the peer that sent `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Peer {
        Peer::from_address(request.remote_addr().map(|address| address.ip()))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(IpAddr::V6(prefix)) => write!(f, "{prefix}/64"),
            Peer::Ip(address) => write!(f, "{address}"),
            Peer::Local => f.write_str("local"),
        }
    }
}

/// One peer's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TokenBucket {
    millitokens: u64,
    updated_at: UnixMillis,
}

// === impl TokenBucket ===

impl TokenBucket {
    fn full(policy: &BucketPolicy, now: UnixMillis) -> Self {
        TokenBucket {
            millitokens: capacity(policy),
            updated_at: now,
        }
    }

    /// Adds the tokens earned since the last update. A clock that steps back earns nothing
    /// and does not move `updated_at` back (no double refill when it steps forward again).
    fn refill(&mut self, policy: &BucketPolicy, now: UnixMillis) {
        let elapsed = u64::try_from(now.since(self.updated_at).as_millis()).unwrap_or(u64::MAX);
        let earned = elapsed.saturating_mul(u64::from(policy.refill_per_second));
        self.millitokens = self
            .millitokens
            .saturating_add(earned)
            .min(capacity(policy));
        self.updated_at = self.updated_at.max(now);
    }

    /// Returns how long until a whole token is available, `None` when one is.
    fn wait_for_token(&self, policy: &BucketPolicy) -> Option<Duration> {
        let missing = MILLI
            .checked_sub(self.millitokens)
            .filter(|missing| *missing > 0)?;
        // Earning `refill_per_second` millitokens takes one millisecond.
        let per_millisecond = u64::from(policy.refill_per_second.max(1));
        Some(Duration::from_millis(missing.div_ceil(per_millisecond)))
    }

    fn try_take(&mut self, policy: &BucketPolicy, now: UnixMillis) -> Result<(), Duration> {
        self.refill(policy, now);
        match self.wait_for_token(policy) {
            Some(wait) => Err(wait),
            None => {
                self.millitokens -= MILLI;
                Ok(())
            }
        }
    }
}

fn capacity(policy: &BucketPolicy) -> u64 {
    u64::from(policy.burst.max(1)) * MILLI
}

/// The buckets of every peer seen recently.
pub struct PeerLimiter {
    policy: BucketPolicy,
    buckets: moka::sync::Cache<Peer, Arc<Mutex<TokenBucket>>>,
}

// === impl PeerLimiter ===

impl PeerLimiter {
    /// Builds an empty limiter. A peer idle for long enough to have refilled its bucket is
    /// dropped from the map: forgetting it changes nothing.
    pub fn new(policy: BucketPolicy) -> Self {
        let refill_seconds = u64::from(policy.burst.max(1) / policy.refill_per_second.max(1));
        PeerLimiter {
            policy,
            buckets: moka::sync::Cache::builder()
                .max_capacity(policy.max_peers)
                .time_to_idle(Duration::from_secs(refill_seconds + 1))
                .build(),
        }
    }

    /// Returns how long `peer` must wait when it has no token left, `None` when it has one
    /// (or is unknown). Takes nothing.
    pub fn over_budget(&self, peer: Peer, now: UnixMillis) -> Option<Duration> {
        let bucket = self.buckets.get(&peer)?;
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.refill(&self.policy, now);
        bucket.wait_for_token(&self.policy)
    }

    /// Takes a token from `peer` for a refused call; `Err(wait)` when it had none.
    pub fn charge(&self, peer: Peer, now: UnixMillis) -> Result<(), Duration> {
        let bucket = self.buckets.get_with(peer, || {
            Arc::new(Mutex::new(TokenBucket::full(&self.policy, now)))
        });
        // A poisoned lock still guards a consistent bucket: every update is one assignment.
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.try_take(&self.policy, now)
    }

    /// Returns the number of peers tracked (approximate until pending evictions run).
    pub fn n_peers(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const POLICY: BucketPolicy = BucketPolicy {
        burst: 5,
        refill_per_second: 10,
        max_peers: 1_000,
    };

    fn peer(last: u8) -> Peer {
        Peer::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn a_peer_gets_its_burst_then_waits_for_the_refill() {
        let limiter = PeerLimiter::new(POLICY);
        let now = UnixMillis(1_000_000);
        assert_eq!(limiter.over_budget(peer(1), now), None, "unknown peer");
        for _ in 0..5 {
            assert_eq!(limiter.charge(peer(1), now), Ok(()));
        }
        assert_eq!(
            limiter.charge(peer(1), now),
            Err(Duration::from_millis(100))
        );
        assert_eq!(
            limiter.over_budget(peer(1), now.plus(Duration::from_millis(40))),
            Some(Duration::from_millis(60))
        );
        // One token is back after 100 ms, and only one.
        let later = now.plus(Duration::from_millis(100));
        assert_eq!(limiter.over_budget(peer(1), later), None);
        assert_eq!(limiter.charge(peer(1), later), Ok(()));
        assert!(limiter.charge(peer(1), later).is_err());
        // Other peers are not affected.
        assert_eq!(limiter.charge(peer(2), now), Ok(()));
    }

    #[test]
    fn the_bucket_refills_to_the_burst_and_no_further() {
        let limiter = PeerLimiter::new(POLICY);
        let now = UnixMillis(0);
        assert_eq!(limiter.charge(peer(1), now), Ok(()));
        let much_later = now.plus(Duration::from_secs(3600));
        for _ in 0..5 {
            assert_eq!(limiter.charge(peer(1), much_later), Ok(()));
        }
        assert!(limiter.charge(peer(1), much_later).is_err());
    }

    #[test]
    fn a_clock_stepping_back_earns_no_tokens() {
        let limiter = PeerLimiter::new(POLICY);
        let now = UnixMillis(10_000);
        for _ in 0..5 {
            limiter.charge(peer(1), now).expect("burst");
        }
        let earlier = UnixMillis(0);
        assert!(limiter.charge(peer(1), earlier).is_err());
        assert!(limiter.over_budget(peer(1), now).is_some());
    }

    #[test]
    fn many_attacker_addresses_do_not_grow_the_map_beyond_its_bound() {
        let limiter = PeerLimiter::new(BucketPolicy {
            max_peers: 100,
            ..POLICY
        });
        let now = UnixMillis(0);
        for n in 0..5_000u32 {
            let address = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + n));
            let _ = limiter.charge(Peer::Ip(address), now);
        }
        assert!(limiter.n_peers() <= 100, "{} peers", limiter.n_peers());
    }

    #[test]
    fn ipv6_peers_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let one: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        let of = |address: Ipv6Addr| Peer::from_address(Some(IpAddr::V6(address)));
        assert_eq!(of(one), of(same_64));
        assert_ne!(of(one), of(other_64));
        assert_eq!(of(one).to_string(), "2001:db8:1:2::/64");
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(of(mapped), peer(7));
        assert_eq!(Peer::from_address(None).to_string(), "local");
    }
}

//! What binds an action token to its consumer: an IP allowlist of addresses and CIDR
//! ranges, and a hash of the user agent. Pure: parsing and matching only.
//!
//! The user agent is kept only as `base64url(SHA-256(user agent))` in the token (the
//! claim `user_agent_hash`), so a link leaks no browser fingerprint, and the comparison
//! is constant-time.

use std::net::IpAddr;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// Most entries an allowlist may hold.
pub const MAX_ALLOWLIST_ENTRIES: usize = 16;
/// Longest user agent accepted (browsers send a few hundred bytes).
pub const MAX_USER_AGENT_BYTES: usize = 1024;

/// One allowlist entry: an address and a prefix length (the whole address when the
/// entry was a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// An entry that is neither an address nor a CIDR range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range")]
pub struct BadIpRange(pub String);

impl IpRange {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address.
    pub fn parse(text: &str) -> Result<IpRange, BadIpRange> {
        let bad = || BadIpRange(text.chars().take(64).collect());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (address, Some(prefix.parse::<u8>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpRange { network, prefix })
    }

    /// Returns whether `address` lies in the range. An IPv4-mapped IPv6 address counts as
    /// its IPv4 address (a dual-stack listener reports IPv4 peers that way).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// Returns whether `client_ip` is in any of `allowlist`'s ranges. An entry that does not
/// parse (a token signed by a future version) admits nothing; no client address admits
/// nothing.
pub fn ip_allowed(allowlist: &[String], client_ip: Option<IpAddr>) -> bool {
    let Some(client_ip) = client_ip else {
        return false;
    };
    allowlist
        .iter()
        .filter_map(|entry| IpRange::parse(entry).ok())
        .any(|range| range.contains(client_ip))
}

/// Returns the claim value binding a token to `user_agent`.
pub fn user_agent_hash(user_agent: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, user_agent.as_bytes()))
}

/// Returns whether `user_agent` is the one `expected_hash` was made from (constant time).
pub fn user_agent_matches(expected_hash: &str, user_agent: Option<&str>) -> bool {
    let Some(user_agent) = user_agent else {
        return false;
    };
    let actual = user_agent_hash(user_agent);
    actual.as_bytes().ct_eq(expected_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let range = IpRange::parse("10.1.0.0/16").unwrap();
        assert!(range.contains(ip("10.1.200.3")));
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(range.contains(ip("::ffff:10.1.0.9")), "ipv4-mapped counts");
        let single = IpRange::parse("192.0.2.7").unwrap();
        assert!(single.contains(ip("192.0.2.7")));
        assert!(!single.contains(ip("192.0.2.8")));
        let everything = IpRange::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains(ip("203.0.113.1")));
        let v6 = IpRange::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
            "host",
            "10.0.0/8",
            "10.0.0.0/8/8",
        ] {
            assert!(IpRange::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn allowlist_needs_a_client_address_in_a_range() {
        let allowlist = vec!["10.0.0.0/8".to_owned(), "not-a-range".to_owned()];
        assert!(ip_allowed(&allowlist, Some(ip("10.9.9.9"))));
        assert!(!ip_allowed(&allowlist, Some(ip("11.0.0.1"))));
        assert!(!ip_allowed(&allowlist, None));
    }

    #[test]
    fn user_agent_binding_compares_hashes() {
        let hash = user_agent_hash("Mozilla/5.0 (X11)");
        assert_eq!(hash.len(), 43);
        assert!(user_agent_matches(&hash, Some("Mozilla/5.0 (X11)")));
        assert!(!user_agent_matches(&hash, Some("Mozilla/5.0 (X12)")));
        assert!(!user_agent_matches(&hash, None));
    }
}

//! Per-source admission: a token bucket per source host for new SUBSCRIBEs, so one host (or
//! one forged source) cannot take the node's whole SUBSCRIBE budget. A refused SUBSCRIBE gets
//! `503` with Retry-After and is counted (`sip_shed_total{reason="source_rate"}`). The cap on
//! live subscriptions per source host (`notifier.max_subscriptions_per_source`) is kept in
//! the store, so that it holds across the tier; it exempts the same sources.
//!
//! Carriers put many phones behind one address (an SBC, a NAT): set the rate for the largest
//! such group, or exempt those addresses (`notifier.source_exempt`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Source hosts tracked at once; beyond this, buckets that have refilled are forgotten (a full
/// bucket is the same as no bucket), and if none has, the oldest half goes.
const MAX_SOURCES: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by source host.
pub struct SourceBuckets {
    rate: f64,
    burst: f64,
    exempt: Vec<(IpAddr, u8)>,
    buckets: HashMap<IpAddr, Bucket>,
}

impl SourceBuckets {
    /// `rate` SUBSCRIBEs per second per host with bursts of `burst`; a rate of 0 admits all.
    pub fn new(rate: f64, burst: f64, exempt: Vec<(IpAddr, u8)>) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            exempt,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip`; false when its bucket is empty.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 || is_exempt(ip, &self.exempt) {
            return true;
        }
        let ip = ip.to_canonical();
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.prune(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        if self.buckets.len() >= MAX_SOURCES {
            let mut ages: Vec<Instant> = self.buckets.values().map(|b| b.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.at > cut);
        }
    }
}

/// Parses `a.b.c.d`, `a.b.c.d/n`, `v6` or `v6/n`.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or prefix"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        None => max,
    };
    Ok((ip, len))
}

/// Whether `ip` lies in one of the `exempt` prefixes.
pub fn is_exempt(ip: IpAddr, exempt: &[(IpAddr, u8)]) -> bool {
    exempt.iter().any(|&(net, len)| in_prefix(ip, net, len))
}

fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let t0 = Instant::now();
        let mut b = SourceBuckets::new(10.0, 5.0, Vec::new());
        let admitted = (0..20).filter(|_| b.admit(ip("192.0.2.1"), t0)).count();
        assert_eq!(admitted, 5);
        assert!(
            b.admit(ip("192.0.2.2"), t0),
            "another host has its own bucket"
        );
        // 10/s: after 300 ms three more.
        let t1 = t0 + Duration::from_millis(300);
        let admitted = (0..20).filter(|_| b.admit(ip("192.0.2.1"), t1)).count();
        assert_eq!(admitted, 3);
        // The v4-mapped form is the same host.
        assert!(!b.admit(ip("::ffff:192.0.2.1"), t1));
    }

    #[test]
    fn exempt_prefixes_and_a_zero_rate_admit_everything() {
        let t0 = Instant::now();
        let mut b = SourceBuckets::new(1.0, 1.0, vec![parse_prefix("10.0.0.0/8").unwrap()]);
        assert!((0..100).all(|_| b.admit(ip("10.9.8.7"), t0)));
        assert!(b.admit(ip("11.0.0.1"), t0));
        assert!(!b.admit(ip("11.0.0.1"), t0));
        let mut off = SourceBuckets::new(0.0, 1.0, Vec::new());
        assert!((0..100).all(|_| off.admit(ip("11.0.0.1"), t0)));
    }

    #[test]
    fn prefixes_parse_or_say_why_not() {
        assert_eq!(parse_prefix("192.0.2.0/24"), Ok((ip("192.0.2.0"), 24)));
        assert_eq!(parse_prefix("2001:db8::/32"), Ok((ip("2001:db8::"), 32)));
        assert_eq!(parse_prefix("192.0.2.7"), Ok((ip("192.0.2.7"), 32)));
        assert!(parse_prefix("192.0.2.0/33").is_err());
        assert!(parse_prefix("example.com").is_err());
        assert!(in_prefix(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!in_prefix(ip("2001:db9::1"), ip("2001:db8::"), 32));
        assert!(in_prefix(ip("203.0.113.9"), ip("0.0.0.0"), 0));
    }
}

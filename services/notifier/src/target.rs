//! Where a NOTIFY may go: the address policy that keeps the server from being aimed at third
//! parties, and the DNS cache that next hops named by host go through.
//!
//! A SUBSCRIBE chooses its NOTIFYs' destination (Contact, Record-Route), and over UDP its
//! source address can be forged, so both are attacker input. The notifier sends to the
//! packet's source when the dialog has no route set (see `notify::route`); any other
//! destination must be the source's own host or a public address, unless the operator allows
//! private ones (`notifier.allow_private_targets`, for phones and proxies on a private LAN).
//!
//! Lookups are cached for [`POSITIVE_TTL`] and bounded by [`LOOKUP_TIMEOUT`]; a failed lookup
//! serves the last good answer if there is one (RFC 8767's serve-stale) and is otherwise a
//! [`TargetError::Unresolved`], which callers retry: a DNS outage must never delete
//! subscriptions.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a resolved name is used without asking again.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// How long a failed lookup is remembered (no answer to serve): lookups of a dead name are
/// not repeated for every NOTIFY of a fan-out.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The longest a lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Names kept; beyond this the cache starts over (names are per proxy, not per phone).
const MAX_NAMES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The name did not resolve (now): retry later.
    #[error("cannot resolve {0}")]
    Unresolved(String),
    /// The address is not one NOTIFYs may be sent to.
    #[error("NOTIFY target {0} is {1}, which this server does not send to")]
    Refused(SocketAddr, &'static str),
}

/// Why an address is not public, or `None` for a public unicast address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("not a unicast address")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if ip.is_multicast() {
        Some("not a unicast address")
    } else {
        None
    }
}

/// Whether a NOTIFY for a subscription whose requests came from `source` may go to `to`:
/// the source's own host always, a public address always, anything else only when
/// `allow_private` is set.
pub fn check(to: SocketAddr, source: SocketAddr, allow_private: bool) -> Result<(), TargetError> {
    if same_host(to.ip(), source.ip()) || allow_private {
        return Ok(());
    }
    match non_public(to.ip()) {
        Some(why) => Err(TargetError::Refused(to, why)),
        None => Ok(()),
    }
}

fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

type LookupFuture = Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>>;
type Lookup = dyn Fn(String, u16) -> LookupFuture + Send + Sync;

struct Entry {
    addr: Option<SocketAddr>,
    /// The last good answer, served when a refresh fails.
    stale: Option<SocketAddr>,
    fresh_until: Instant,
}

/// Cached name → address lookups for NOTIFY next hops.
pub struct DnsCache {
    lookup: Arc<Lookup>,
    entries: Mutex<HashMap<(String, u16), Entry>>,
}

impl Default for DnsCache {
    fn default() -> Self {
        Self::with_lookup(|host, port| {
            Box::pin(async move {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut it| it.next())
            })
        })
    }
}

impl DnsCache {
    /// A cache over the given lookup (the system resolver by default; tests inject one).
    pub fn with_lookup(
        lookup: impl Fn(String, u16) -> LookupFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            lookup: Arc::new(lookup),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The address of `host` (an IP literal, bracketed or not, or a name) at `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, TargetError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_ascii_lowercase(), port);
        let now = Instant::now();
        let stale = {
            let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(e) if e.fresh_until > now => {
                    return e
                        .addr
                        .or(e.stale)
                        .ok_or_else(|| TargetError::Unresolved(host.to_owned()));
                }
                Some(e) => e.addr.or(e.stale),
                None => None,
            }
        };
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, (self.lookup)(key.0.clone(), port))
            .await
            .ok()
            .flatten();
        metrics::counter!(
            "dns_lookups_total",
            "outcome" => match (answer, stale) {
                (Some(_), _) => "resolved",
                (None, Some(_)) => "stale",
                (None, None) => "failed",
            }
        )
        .increment(1);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_NAMES && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                addr: answer,
                stale: answer.or(stale),
                fresh_until: now
                    + if answer.is_some() {
                        POSITIVE_TTL
                    } else {
                        NEGATIVE_TTL
                    },
            },
        );
        answer
            .or(stale)
            .ok_or_else(|| TargetError::Unresolved(host.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_source_host_is_always_a_valid_target_and_others_must_be_public() {
        let src = addr("127.0.0.1:5062");
        assert_eq!(check(addr("127.0.0.1:9999"), src, false), Ok(()));
        for bad in [
            "127.0.0.2:5060",
            "10.1.2.3:5060",
            "192.168.0.1:5060",
            "172.16.5.5:5060",
            "169.254.1.1:5060",
            "100.64.0.1:5060",
            "0.0.0.0:5060",
            "224.0.1.75:5060",
            "[::1]:5060",
            "[fe80::1]:5060",
            "[fd00::1]:5060",
            "[::ffff:10.0.0.1]:5060",
        ] {
            assert!(
                matches!(check(addr(bad), src, false), Err(TargetError::Refused(..))),
                "{bad} must be refused"
            );
            assert_eq!(
                check(addr(bad), src, true),
                Ok(()),
                "{bad} allowed when configured"
            );
        }
        assert_eq!(check(addr("192.0.2.1:5060"), src, false), Ok(()));
        assert_eq!(check(addr("[2001:db8::1]:5060"), src, false), Ok(()));
        // A v4-mapped source is the same host as its v4 form.
        assert_eq!(
            check(addr("10.0.0.7:5060"), addr("[::ffff:10.0.0.7]:5060"), false),
            Ok(())
        );
    }

    #[tokio::test]
    async fn lookups_are_cached_and_a_failure_serves_the_last_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let (c, u) = (Arc::clone(&calls), Arc::clone(&up));
        let cache = DnsCache::with_lookup(move |_, port| {
            c.fetch_add(1, Ordering::SeqCst);
            let ok = u.load(Ordering::SeqCst);
            Box::pin(async move { ok.then(|| SocketAddr::new([192, 0, 2, 9].into(), port)) })
        });
        let want = addr("192.0.2.9:5060");
        assert_eq!(cache.resolve("proxy.example", 5060).await, Ok(want));
        assert_eq!(cache.resolve("PROXY.example", 5060).await, Ok(want));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second lookup is cached"
        );
        up.store(false, Ordering::SeqCst);
        // Expire the entry by hand rather than wait out the TTL.
        cache
            .entries
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|e| e.fresh_until = Instant::now());
        assert_eq!(
            cache.resolve("proxy.example", 5060).await,
            Ok(want),
            "serve stale"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache.resolve("dead.example", 5060).await,
            Err(TargetError::Unresolved("dead.example".into()))
        );
        assert_eq!(
            cache.resolve("dead.example", 5060).await,
            Err(TargetError::Unresolved("dead.example".into()))
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "a failure is negatively cached"
        );
    }

    #[tokio::test]
    async fn a_lookup_that_hangs_times_out_as_unresolved() {
        let cache = DnsCache::with_lookup(|_, _| Box::pin(std::future::pending()));
        assert_eq!(
            cache.resolve("slow.example", 5060).await,
            Err(TargetError::Unresolved("slow.example".into()))
        );
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup() {
        let cache = DnsCache::with_lookup(|_, _| panic!("no lookup for literals"));
        assert_eq!(
            cache.resolve("[2001:db8::1]", 5070).await,
            Ok(addr("[2001:db8::1]:5070"))
        );
        assert_eq!(
            cache.resolve("192.0.2.1", 5060).await,
            Ok(addr("192.0.2.1:5060"))
        );
    }
}

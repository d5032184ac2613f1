//! Fetch admission: what the content tier can serve, and the credits it grants for it.
//!
//! Phones fetch documents when a NOTIFY points them at ones they lack. This module
//!
//! * gates the fetches themselves: at most `max_fetch_rate` per second are admitted on
//!   average (a token bucket that starts with a second's worth and holds at most five);
//!   beyond it a fetch gets `503` with a randomised `Retry-After`, so the ceiling holds
//!   whatever the notifiers do;
//! * measures what it serves: fetches in flight and an average of their latency;
//! * grants fetch credits to the notifiers at the rate it can serve: the ceiling, scaled
//!   down while fetches take longer than `fetch_latency_target` (and back up when they do
//!   not), divided by how many fetches one credit has been causing (a NOTIFY may point at
//!   several documents).
//!
//! In one process the notifier draws credits from it directly ([`CreditSource`]); across
//! processes the gRPC seam hands out [`FetchAdmission::grant_rate`] to the nodes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uaprof_api::{Accrual, CreditSource};

use crate::telemetry as m;

/// How often the grant rate is adjusted to what the fetches show.
const ADAPT_EVERY: Duration = Duration::from_millis(500);
/// Lowest share of the ceiling the grant rate falls to (so that it can climb back).
const MIN_SHARE: f64 = 0.05;
/// How fast the latency average follows new fetches (per fetch).
const LATENCY_WEIGHT: f64 = 0.05;
/// Seconds of the ceiling the fetch gate can hold: the ceiling holds on average over this
/// long. Credits are granted below the ceiling, so paced phones leave unused room that
/// absorbs the bunching of their fetches (a NOTIFY burst after a scheduling hiccup).
const GATE_DEPTH_SECONDS: f64 = 5.0;
/// Share of the ceiling granted as credits. Phones fetch a moment after their NOTIFY, some
/// sooner and some later, so fetches arrive less evenly than credits are spent; the rest of
/// the ceiling absorbs that, so that paced phones are not refused.
const HEADROOM: f64 = 0.85;

/// A token bucket: `rate` per second, at most [`GATE_DEPTH_SECONDS`] of it held.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Adapt {
    /// Share of the ceiling granted now (MIN_SHARE..=1).
    share: f64,
    last: Instant,
    fetches_at_last: u64,
    credits_at_last: f64,
    /// Fetches caused per credit granted, averaged.
    fetches_per_credit: f64,
}

/// The content tier's fetch admission. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FetchAdmission {
    max_rate: Option<f64>,
    latency_target: Duration,
    gate: Mutex<Bucket>,
    adapt: Mutex<Adapt>,
    in_flight: AtomicU64,
    /// Most fetches in flight at once so far.
    peak: AtomicU64,
    fetches: AtomicU64,
    /// f64 bits: average fetch latency in seconds.
    latency: AtomicU64,
    /// Credits handed out so far (f64 bits), to learn fetches per credit.
    credits_granted: AtomicU64,
    /// In-process accrual: when credits were last drawn.
    drawn: Mutex<Option<Instant>>,
}

/// Held while a fetch is served; records its latency when dropped.
#[derive(Debug)]
pub struct FetchGuard<'a> {
    admission: &'a FetchAdmission,
    started: Instant,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        let a = self.admission;
        let serving = a.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(m::FETCHES_IN_FLIGHT).set(serving as f64);
        let took = self.started.elapsed().as_secs_f64();
        metrics::histogram!(m::FETCH_SECONDS).record(took);
        let old = f64::from_bits(a.latency.load(Ordering::Relaxed));
        let new = old + (took - old) * LATENCY_WEIGHT;
        a.latency.store(new.to_bits(), Ordering::Relaxed);
    }
}

impl FetchAdmission {
    /// `max_fetch_rate`: fetches per second admitted at most (`None`: no ceiling, and no
    /// pacing of the notifiers either).
    pub fn new(max_fetch_rate: Option<u32>, latency_target: Duration) -> Self {
        let now = Instant::now();
        let max_rate = max_fetch_rate.map(f64::from);
        Self {
            max_rate,
            latency_target,
            gate: Mutex::new(Bucket {
                tokens: max_rate.unwrap_or(0.0),
                last: now,
            }),
            adapt: Mutex::new(Adapt {
                share: 1.0,
                last: now,
                fetches_at_last: 0,
                credits_at_last: 0.0,
                fetches_per_credit: 1.0,
            }),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            latency: AtomicU64::new(0f64.to_bits()),
            credits_granted: AtomicU64::new(0f64.to_bits()),
            drawn: Mutex::new(None),
        }
    }

    /// Admits one fetch now, or refuses it (`None`: answer 503) when the ceiling is reached.
    pub fn admit_fetch(&self) -> Option<FetchGuard<'_>> {
        let now = Instant::now();
        if let Some(rate) = self.max_rate {
            let mut g = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            let since = now.saturating_duration_since(g.last).as_secs_f64();
            g.tokens = (g.tokens + since * rate).min((rate * GATE_DEPTH_SECONDS).max(1.0));
            g.last = now;
            if g.tokens < 1.0 {
                metrics::counter!(m::FETCHES_REFUSED).increment(1);
                return None;
            }
            g.tokens -= 1.0;
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let now_serving = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let peak = self
            .peak
            .fetch_max(now_serving, Ordering::Relaxed)
            .max(now_serving);
        metrics::gauge!(m::FETCHES_IN_FLIGHT).set(now_serving as f64);
        metrics::gauge!(m::FETCHES_IN_FLIGHT_PEAK).set(peak as f64);
        metrics::counter!(m::FETCHES_ADMITTED).increment(1);
        Some(FetchGuard {
            admission: self,
            started: now,
        })
    }

    /// Fetches being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Credits per second the tier can grant now (`None`: unlimited).
    pub fn grant_rate(&self) -> Option<f64> {
        let max = self.max_rate?;
        let now = Instant::now();
        let mut a = self.adapt.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(a.last) >= ADAPT_EVERY {
            let latency = f64::from_bits(self.latency.load(Ordering::Relaxed));
            let target = self.latency_target.as_secs_f64();
            // Multiplicative decrease while fetches are slow, additive increase otherwise.
            a.share = if latency > target {
                (a.share * 0.8).max(MIN_SHARE)
            } else {
                (a.share + 0.05).min(1.0)
            };
            let fetches = self.fetches.load(Ordering::Relaxed);
            let credits = f64::from_bits(self.credits_granted.load(Ordering::Relaxed));
            let df = (fetches - a.fetches_at_last) as f64;
            let dc = credits - a.credits_at_last;
            if dc >= 10.0 {
                let observed = (df / dc).clamp(1.0, 16.0);
                a.fetches_per_credit += (observed - a.fetches_per_credit) * 0.3;
            }
            a.fetches_at_last = fetches;
            a.credits_at_last = credits;
            a.last = now;
            metrics::gauge!(m::FETCH_LATENCY_AVERAGE).set(latency);
        }
        let rate = max * HEADROOM * a.share / a.fetches_per_credit;
        metrics::gauge!(m::CREDIT_RATE).set(rate);
        Some(rate)
    }

    /// Books `n` credits as handed out (they will cause fetches).
    pub fn granted(&self, n: f64) {
        let mut cur = self.credits_granted.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + n).to_bits();
            match self.credits_granted.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        metrics::counter!(m::CREDITS_GRANTED).increment(n as u64);
    }
}

/// The notifier in the same process draws credits directly.
impl CreditSource for FetchAdmission {
    fn accrue(&self, now: Instant) -> Accrual {
        let Some(rate) = self.grant_rate() else {
            return Accrual::Unlimited;
        };
        let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
        let since = drawn.map_or(0.0, |d| now.saturating_duration_since(d).as_secs_f64());
        *drawn = Some(now);
        let n = rate * since;
        self.granted(n);
        Accrual::Credits(n)
    }

    fn rate(&self) -> Option<f64> {
        self.grant_rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ceiling_admits_everything_and_grants_unlimited() {
        let a = FetchAdmission::new(None, Duration::from_millis(250));
        assert!((0..10_000).all(|_| a.admit_fetch().is_some()));
        assert_eq!(a.grant_rate(), None);
        assert_eq!(a.accrue(Instant::now()), Accrual::Unlimited);
    }

    #[test]
    fn the_ceiling_holds_with_a_second_of_burst() {
        let a = FetchAdmission::new(Some(100), Duration::from_millis(250));
        let admitted = (0..1000).filter_map(|_| a.admit_fetch()).count();
        assert_eq!(admitted, 100, "a second's worth, then refusals");
        assert_eq!(a.in_flight(), 0, "guards dropped");
        assert_eq!(a.grant_rate(), Some(100.0 * HEADROOM));
    }

    #[test]
    fn slow_fetches_lower_the_grant_rate() {
        let a = FetchAdmission::new(Some(1000), Duration::from_millis(10));
        a.latency.store(1.0f64.to_bits(), Ordering::Relaxed);
        a.adapt.lock().expect("lock").last = Instant::now() - ADAPT_EVERY;
        let r = a.grant_rate().expect("rate");
        assert!((r - 800.0 * HEADROOM).abs() < 1e-6, "{r}");
    }
}

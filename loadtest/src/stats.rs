//! What a run measures: counters, log-bucketed latency histograms, and a timeline.
//!
//! The histogram is HDR-style: values (µs) below 64 have exact buckets, above that each
//! power of two is split into 64 sub-buckets, so any percentile is within ~1.6 % of the
//! true value whatever the range, in a fixed 2.6k-slot array that merges by addition.

use serde::Serialize;

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Enough powers of two for 2^40 µs (12 days): nothing in a bounded run gets near it.
const BUCKETS: usize = SUB * 41;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    n: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            n: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = ((v >> shift) as usize) & (SUB - 1);
    (((shift + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// Highest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let sub = (i % SUB) as u64;
    (((SUB as u64) | sub) << shift) + ((1u64 << shift) - 1)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.n += o.n;
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The value at quantile `q` (0..=1): an upper bound within one bucket, never above max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |v: u64| v as f64 / 1000.0;
        LatencySummary {
            count: self.n,
            mean_ms: if self.n == 0 {
                0.0
            } else {
                self.sum as f64 / self.n as f64 / 1000.0
            },
            p50_ms: ms(self.quantile(0.50)),
            p95_ms: ms(self.quantile(0.95)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything counted during a run. Plain integers: one shard owns its copy and the
/// controller adds them up at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub phones_booted: u64,
    pub phones_provisioned: u64,
    pub phones_failed: u64,
    pub phones_changed: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub subscribes_sent: u64,
    pub subscribe_retransmissions: u64,
    pub refreshes_sent: u64,
    pub unsubscribes_sent: u64,
    pub responses_2xx: u64,
    pub responses_204_suppressed: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    pub responses_503: u64,
    pub responses_481: u64,
    pub responses_other: u64,
    pub timeouts_subscribe: u64,
    pub timeouts_first_notify: u64,
    pub notifies_received: u64,
    pub notifies_retransmitted_by_server: u64,
    pub notifies_terminated: u64,
    pub notifies_with_documents: u64,
    pub notifies_empty: u64,
    pub notifies_unknown_dialog: u64,
    pub notifies_after_refresh: u64,
    pub bad_bodies: u64,
    pub fetches_started: u64,
    pub fetches_ok: u64,
    pub fetch_http_errors: u64,
    pub fetch_transport_errors: u64,
    pub fetch_retries: u64,
    pub hash_mismatches: u64,
    pub size_mismatches: u64,
    pub hashes_verified: u64,
    /// Fetches of the changed document by a phone that had already fetched it: each is a
    /// change NOTIFY delivered twice (change-storm).
    pub change_refetches: u64,
    pub documents_inline: u64,
    pub unsupported_urls: u64,
    pub subscription_retries: u64,
    pub malformed_received: u64,
    pub stray_responses: u64,
    pub send_errors: u64,
    /// Messages a silent phone (`--ghosts`) received and ignored.
    pub ghost_drops: u64,
}

macro_rules! add_all {
    ($a:expr, $b:expr, $($f:ident),*) => { $( $a.$f += $b.$f; )* };
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        add_all!(
            self,
            o,
            phones_booted,
            phones_provisioned,
            phones_failed,
            phones_changed,
            msgs_sent,
            msgs_received,
            subscribes_sent,
            subscribe_retransmissions,
            refreshes_sent,
            unsubscribes_sent,
            responses_2xx,
            responses_204_suppressed,
            responses_4xx,
            responses_5xx,
            responses_503,
            responses_481,
            responses_other,
            timeouts_subscribe,
            timeouts_first_notify,
            notifies_received,
            notifies_retransmitted_by_server,
            notifies_terminated,
            notifies_with_documents,
            notifies_empty,
            notifies_unknown_dialog,
            notifies_after_refresh,
            bad_bodies,
            fetches_started,
            fetches_ok,
            fetch_http_errors,
            fetch_transport_errors,
            fetch_retries,
            hash_mismatches,
            size_mismatches,
            hashes_verified,
            change_refetches,
            documents_inline,
            unsupported_urls,
            subscription_retries,
            malformed_received,
            stray_responses,
            send_errors,
            ghost_drops
        );
    }
}

/// The latency histograms of a run.
#[derive(Clone, Default)]
pub struct Latencies {
    /// First transmission of an initial SUBSCRIBE → its 2xx.
    pub subscribe_to_200: Histogram,
    /// 2xx of the initial SUBSCRIBE → first NOTIFY (0 when the NOTIFY came first).
    pub ok_to_first_notify: Histogram,
    /// NOTIFY with documents → last document fetched and verified (includes the
    /// `effective-by` spread the phone applied).
    pub notify_to_fetched: Histogram,
    /// One HTTP GET, request written → body complete.
    pub http_get: Histogram,
    /// Refresh SUBSCRIBE → its final response.
    pub refresh_to_response: Histogram,
    /// Phone boot → phone provisioned (all its subscriptions' documents fetched).
    pub boot_to_provisioned: Histogram,
    /// change-storm: change published → this phone fetched the new version.
    pub change_to_fetched: Histogram,
}

impl Latencies {
    pub fn merge(&mut self, o: &Latencies) {
        self.subscribe_to_200.merge(&o.subscribe_to_200);
        self.ok_to_first_notify.merge(&o.ok_to_first_notify);
        self.notify_to_fetched.merge(&o.notify_to_fetched);
        self.http_get.merge(&o.http_get);
        self.refresh_to_response.merge(&o.refresh_to_response);
        self.boot_to_provisioned.merge(&o.boot_to_provisioned);
        self.change_to_fetched.merge(&o.change_to_fetched);
    }
}

/// Per-slot activity, for the plots.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Slot {
    pub subscribes: u32,
    pub ok: u32,
    pub notifies: u32,
    pub fetches: u32,
    pub provisioned: u32,
    pub failures: u32,
    pub retransmissions: u32,
    pub msgs: u32,
    pub sub_lat_sum_us: u64,
    pub sub_lat_n: u32,
    pub sub_lat_max_us: u64,
    pub fetch_lat_sum_us: u64,
    pub fetch_lat_n: u32,
    pub fetch_lat_max_us: u64,
}

/// Activity over time in fixed slots; the slot width grows with the time limit so the
/// array stays small (at most `MAX_SLOTS`).
#[derive(Debug, Clone)]
pub struct Timeline {
    pub slot_us: u64,
    pub slots: Vec<Slot>,
}

/// Plots do not need more points than a screen is wide.
const MAX_SLOTS: u64 = 2000;

impl Timeline {
    pub fn new(max_time_us: u64) -> Self {
        let slot_us = (max_time_us / MAX_SLOTS).max(100_000);
        let n = (max_time_us / slot_us + 2) as usize;
        Self {
            slot_us,
            slots: vec![Slot::default(); n],
        }
    }

    pub fn at(&mut self, now: u64) -> &mut Slot {
        let i = ((now / self.slot_us) as usize).min(self.slots.len() - 1);
        &mut self.slots[i]
    }

    pub fn merge(&mut self, o: &Timeline) {
        for (a, b) in self.slots.iter_mut().zip(&o.slots) {
            a.subscribes += b.subscribes;
            a.ok += b.ok;
            a.notifies += b.notifies;
            a.fetches += b.fetches;
            a.provisioned += b.provisioned;
            a.failures += b.failures;
            a.retransmissions += b.retransmissions;
            a.msgs += b.msgs;
            a.sub_lat_sum_us += b.sub_lat_sum_us;
            a.sub_lat_n += b.sub_lat_n;
            a.sub_lat_max_us = a.sub_lat_max_us.max(b.sub_lat_max_us);
            a.fetch_lat_sum_us += b.fetch_lat_sum_us;
            a.fetch_lat_n += b.fetch_lat_n;
            a.fetch_lat_max_us = a.fetch_lat_max_us.max(b.fetch_lat_max_us);
        }
    }

    /// Drops the empty tail after the run ended at `end_us`.
    pub fn truncate(&mut self, end_us: u64) {
        let n = ((end_us / self.slot_us) as usize + 1).min(self.slots.len());
        self.slots.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456,
            10_000_000,
            1_000_000_000_000,
        ] {
            let i = index(v);
            assert!(i >= last, "monotonic at {v}");
            last = i;
            assert!(upper(i) >= v, "upper bound holds at {v}");
            assert!(upper(i) - v <= v / 60 + 1, "within ~1.6% at {v}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let within = |got: u64, want: u64| got >= want && got - want <= want / 50;
        assert!(within(h.quantile(0.5), 500_000));
        assert!(within(h.quantile(0.99), 990_000));
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut g = Histogram::default();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 1001);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}

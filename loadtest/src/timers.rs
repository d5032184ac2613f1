//! Time in the simulator: microseconds since the run started (`u64`), passed in as `now`.
//!
//! * [`ClientTx`]: the non-INVITE client transaction timers of RFC 3261 §17.1.2.2
//!   (Timer E retransmits from T1 doubling to T2 on UDP, Timer F gives up at 64×T1).
//! * [`backoff`]: the wait before re-trying a failed subscription.
//! * [`TimerQueue`]: a min-heap of deadlines with lazy cancellation by generation.
//! * [`Rng`]: a seeded SplitMix64, so a run is reproducible from `--seed`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub const MS: u64 = 1_000;
pub const SEC: u64 = 1_000_000;

/// RFC 3261 timer values, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct SipTimers {
    pub t1: u64,
    pub t2: u64,
}

impl Default for SipTimers {
    fn default() -> Self {
        // RFC 3261 §17.1.1.1 defaults.
        Self {
            t1: 500 * MS,
            t2: 4 * SEC,
        }
    }
}

/// What a client transaction wants when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxAction {
    /// Send the request again; the next timer is at the given time.
    Retransmit { next: u64 },
    /// Timer F expired: the transaction failed with a timeout.
    GiveUp,
}

/// A non-INVITE client transaction's timer state (RFC 3261 §17.1.2.2).
#[derive(Debug, Clone, Copy)]
pub struct ClientTx {
    /// When Timer F fires.
    pub timer_f: u64,
    /// Current Timer E interval; `0` on a reliable transport (no retransmissions).
    interval: u64,
    t2: u64,
    /// When the next timer (E or F) is due.
    pub next: u64,
}

impl ClientTx {
    /// Starts a transaction sent at `now`.
    pub fn start(now: u64, t: SipTimers, reliable: bool) -> Self {
        let timer_f = now + 64 * t.t1;
        if reliable {
            Self {
                timer_f,
                interval: 0,
                t2: t.t2,
                next: timer_f,
            }
        } else {
            Self {
                timer_f,
                interval: t.t1,
                t2: t.t2,
                next: now + t.t1,
            }
        }
    }

    /// A provisional response arrived: retransmit at T2 from now on (§17.1.2.2).
    pub fn provisional(&mut self, now: u64) {
        if self.interval != 0 {
            self.interval = self.t2;
            self.next = (now + self.t2).min(self.timer_f);
        }
    }

    /// The timer due at `self.next` fired at `now`.
    pub fn on_timer(&mut self, now: u64) -> TxAction {
        if now >= self.timer_f || self.interval == 0 {
            return TxAction::GiveUp;
        }
        self.interval = (self.interval * 2).min(self.t2);
        self.next = (now + self.interval).min(self.timer_f);
        TxAction::Retransmit { next: self.next }
    }
}

/// Back-off before re-trying a failed subscription, in microseconds.
///
/// RFC 6080 §5.1.1 asks a device whose subscription fails to retry with exponential
/// back-off; we use the concrete schedule of RFC 5626 §4.5: `min(max, base × 2^failures)`,
/// and with jitter a uniform draw in [50 %, 100 %] of that. Without jitter every phone that
/// failed together retries together (lockstep), which is what `--jitter` exists to show.
/// `retry_after` (a 503's Retry-After) is a floor. `unit` is a uniform draw in [0, 1).
pub fn backoff(
    failures: u32,
    base: u64,
    max: u64,
    jitter: bool,
    unit: f64,
    retry_after: Option<u64>,
) -> u64 {
    let wait = base
        .saturating_mul(1u64 << failures.saturating_sub(1).min(40))
        .min(max);
    let wait = if jitter {
        wait / 2 + (wait as f64 / 2.0 * unit) as u64
    } else {
        wait
    };
    wait.max(retry_after.unwrap_or(0))
}

/// A deadline queue: `pop_due` returns items whose time has come, earliest first.
#[derive(Debug)]
pub struct TimerQueue<T: Ord> {
    heap: BinaryHeap<Reverse<(u64, T)>>,
}

impl<T: Ord> Default for TimerQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> TimerQueue<T> {
    pub fn push(&mut self, at: u64, item: T) {
        self.heap.push(Reverse((at, item)));
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    pub fn pop_due(&mut self, now: u64) -> Option<(u64, T)> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// SplitMix64: tiny, fast, and good enough for jitter and spreading.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n].
    pub fn upto(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % (n + 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_retransmission_schedule_is_rfc3261() {
        let t = SipTimers::default();
        let mut tx = ClientTx::start(0, t, false);
        let mut sends = vec![0];
        loop {
            let at = tx.next;
            match tx.on_timer(at) {
                TxAction::Retransmit { .. } => sends.push(at),
                TxAction::GiveUp => {
                    assert_eq!(at, 32 * SEC, "Timer F = 64×T1");
                    break;
                }
            }
        }
        // 0.5, 1, 2, 4, 4, 4 ... s apart (T1 doubling, capped at T2).
        let ms: Vec<u64> = sends.iter().map(|s| s / MS).collect();
        assert_eq!(
            ms,
            [
                0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
    }

    #[test]
    fn reliable_transport_only_times_out() {
        let mut tx = ClientTx::start(10, SipTimers::default(), true);
        assert_eq!(tx.next, 10 + 32 * SEC);
        assert_eq!(tx.on_timer(tx.next), TxAction::GiveUp);
    }

    #[test]
    fn provisional_moves_to_t2() {
        let mut tx = ClientTx::start(0, SipTimers::default(), false);
        tx.provisional(100 * MS);
        assert_eq!(tx.next, 4100 * MS);
        assert_eq!(
            tx.on_timer(tx.next),
            TxAction::Retransmit { next: 8100 * MS }
        );
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (b, max) = (30 * SEC, 1800 * SEC);
        let plain: Vec<u64> = (1..=8)
            .map(|n| backoff(n, b, max, false, 0.7, None) / SEC)
            .collect();
        assert_eq!(plain, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        // Jitter: within [50 %, 100 %].
        assert_eq!(backoff(2, b, max, true, 0.0, None), 30 * SEC);
        assert_eq!(backoff(2, b, max, true, 0.5, None), 45 * SEC);
        assert!(backoff(2, b, max, true, 0.999_999, None) < 60 * SEC);
        // Retry-After is a floor; huge failure counts do not overflow.
        assert_eq!(backoff(1, b, max, false, 0.0, Some(90 * SEC)), 90 * SEC);
        assert_eq!(backoff(200, b, max, false, 0.0, None), max);
    }

    #[test]
    fn timer_queue_orders_by_deadline() {
        let mut q = TimerQueue::default();
        q.push(30, 'c');
        q.push(10, 'a');
        q.push(20, 'b');
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(25), Some((10, 'a')));
        assert_eq!(q.pop_due(25), Some((20, 'b')));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn rng_is_seeded() {
        let a: Vec<u64> = (0..3)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..3)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.upto(5) <= 5 && r.unit() < 1.0));
    }
}

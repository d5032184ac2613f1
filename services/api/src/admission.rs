//! Fetch credits: the content tier's say in how fast NOTIFYs that cause fetches may leave.
//!
//! A NOTIFY that points a phone at documents it does not have causes fetches. The content tier
//! measures what it can serve and grants credits at that rate; a notifier node spends one
//! credit per such NOTIFY. In one process the content tier is the [`CreditSource`] itself;
//! across processes the gRPC seam grants credits over a stream, split across the notifier
//! nodes; without either, [`Unlimited`] (no pacing) or a [`FixedRate`] applies.

use std::sync::Mutex;
use std::time::Instant;

/// What accrued since the last call to [`CreditSource::accrue`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accrual {
    /// No admission applies: every NOTIFY may leave.
    Unlimited,
    /// This many credits arrived.
    Credits(f64),
}

/// Where a notifier node's fetch credits come from.
pub trait CreditSource: Send + Sync + 'static {
    /// Credits that arrived since the previous call.
    fn accrue(&self, now: Instant) -> Accrual;

    /// The rate credits arrive at, per second; `None` when unlimited. For wait estimates.
    fn rate(&self) -> Option<f64>;

    /// How many NOTIFYs wait for a credit on this node: the grantor splits its capacity
    /// across nodes by it.
    fn demand(&self, waiting: u64) {
        let _ = waiting;
    }
}

/// No admission: every NOTIFY may leave at once (a content tier with no configured ceiling).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl CreditSource for Unlimited {
    fn accrue(&self, _now: Instant) -> Accrual {
        Accrual::Unlimited
    }

    fn rate(&self) -> Option<f64> {
        None
    }
}

/// A fixed rate of credits per second (the static budget a notifier falls back to when it
/// cannot reach the content tier's grants).
#[derive(Debug)]
pub struct FixedRate {
    per_second: f64,
    last: Mutex<Option<Instant>>,
}

impl FixedRate {
    pub fn new(per_second: f64) -> Self {
        Self {
            per_second: per_second.max(0.0),
            last: Mutex::new(None),
        }
    }
}

impl CreditSource for FixedRate {
    fn accrue(&self, now: Instant) -> Accrual {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let since = last.map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        *last = Some(now);
        Accrual::Credits(self.per_second * since)
    }

    fn rate(&self) -> Option<f64> {
        Some(self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fixed_rate_accrues_with_time() {
        let r = FixedRate::new(100.0);
        let t0 = Instant::now();
        assert_eq!(r.accrue(t0), Accrual::Credits(0.0));
        assert_eq!(
            r.accrue(t0 + Duration::from_millis(250)),
            Accrual::Credits(25.0)
        );
        assert_eq!(r.rate(), Some(100.0));
        assert_eq!(Unlimited.accrue(t0), Accrual::Unlimited);
    }
}

//! The NOTIFY pipeline (design §5b): every NOTIFY except the one answering a SUBSCRIBE
//! leaves through it.
//!
//! ```text
//!  walks, follow-ups, wanted, retries ──push──► scheduler (3 bounded queues, credits)
//!        ──poll──► deliver (turn + CSeq, resolve, build) ──► engine (transaction)
//!        ──outcome──► store (end turn, confirm) ──► wanted again / retry ──push──┘
//! ```
//!
//! * [`scheduler`]: the pure state machine that decides what leaves next.
//! * [`Pipeline`]: the handle every producer pushes [`Want`]s into, and the shared
//!   [`CreditPool`] (the SUBSCRIBE path takes credits from it too).
//! * [`run`]: the driver task: feeds the scheduler, polls it against credits, starts
//!   deliveries with bounded concurrency, publishes depth, age and credit metrics.
//! * `deliver`: one want to one NOTIFY (or to nothing, when the subscriber has that state).
//!
//! A want names a subscription, not content: what a NOTIFY says is resolved when it leaves,
//! so the newest content always wins, and the dialog's turn (the store's) keeps one NOTIFY in
//! flight per dialog across the tier with a CSeq taken at send time.

pub(crate) mod deliver;
pub mod scheduler;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uaprof_api::{Accrual, CreditSource};

pub use crate::want::{MAX_ATTEMPTS, Priority, Progress, Token, Want, Why};
use scheduler::{Bounds, Scheduler};

use crate::Ctx;

/// The wait before attempt `n` (1-based) of a failed NOTIFY: 1 s doubling to 32 s, with a
/// random part so that retries of many dialogs do not fall into step.
pub fn backoff(attempt: u8) -> Duration {
    let base = Duration::from_secs(1 << u32::from(attempt.saturating_sub(1)).min(5));
    base + base.mul_f64(rand::random::<f64>() * 0.5)
}

/// Fetch credits shared by the scheduler and the SUBSCRIBE path.
pub struct CreditPool {
    source: Arc<dyn CreditSource>,
    state: Mutex<PoolState>,
}

struct PoolState {
    credits: f64,
    unlimited: bool,
}

impl CreditPool {
    pub fn new(source: Arc<dyn CreditSource>) -> Self {
        Self {
            source,
            state: Mutex::new(PoolState {
                credits: 0.0,
                unlimited: false,
            }),
        }
    }

    /// Most credits held at once: a second's worth, so that unused credit does not pile up
    /// into a burst the content tier did not offer.
    fn cap(&self) -> f64 {
        self.source.rate().map_or(f64::INFINITY, |r| r.max(1.0))
    }

    /// Runs `f` on the refilled balance.
    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut f64) -> R) -> R {
        let cap = self.cap();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.source.accrue(now) {
            Accrual::Unlimited => st.unlimited = true,
            Accrual::Credits(n) => {
                st.unlimited = false;
                st.credits = (st.credits + n).min(cap);
            }
        }
        if st.unlimited {
            let mut plenty = f64::MAX;
            return f(&mut plenty);
        }
        f(&mut st.credits)
    }

    /// Takes one credit if one is at hand.
    pub fn try_take(&self, now: Instant) -> bool {
        self.with(now, |c| {
            if *c >= 1.0 {
                *c -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Gives back a credit spent on a NOTIFY that needed none after all.
    pub fn refund(&self) {
        let cap = self.cap();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.credits = (st.credits + 1.0).min(cap);
    }

    /// The rate credits arrive at; `None` when unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.source.rate()
    }

    fn balance(&self) -> f64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.unlimited {
            f64::INFINITY
        } else {
            st.credits
        }
    }
}

/// Sizes of the queues, in [`Priority::ALL`] order. A want is about a hundred bytes, so the
/// change queue holds a large fan-out's next stretch in a few tens of MiB; the age bounds
/// are what the pressure that refuses new SUBSCRIBEs is measured against.
const QUEUE_BOUNDS: [Bounds; 3] = [
    Bounds {
        capacity: 65_536,
        max_age: Duration::from_secs(30),
    },
    Bounds {
        capacity: 262_144,
        max_age: Duration::from_secs(300),
    },
    Bounds {
        capacity: 65_536,
        max_age: Duration::from_secs(600),
    },
];

/// How often the driver looks again while an item waits for credit (credits accrue
/// continuously; this bounds how late one is used).
const CREDIT_POLL: Duration = Duration::from_millis(10);
/// Longest the driver sleeps with nothing to do (metrics stay fresh).
const IDLE_POLL: Duration = Duration::from_secs(1);

struct Queued {
    priority: Priority,
    want: Want,
    needs_credit: bool,
    not_before: Instant,
    slot: OwnedSemaphorePermit,
}

/// The handle producers push wants through. Cheap to share.
pub struct Pipeline {
    tx: mpsc::UnboundedSender<Queued>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Queued>>>,
    /// Room in each queue: a push waits for a slot, which the item frees when it leaves.
    slots: [Arc<Semaphore>; 3],
    credits: Arc<CreditPool>,
    /// f64 bits: how far the first-NOTIFY queue runs over its age bound (0: not at all).
    first_pressure: AtomicU64,
}

impl Pipeline {
    pub fn new(credits: Arc<CreditPool>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            slots: QUEUE_BOUNDS.map(|b| Arc::new(Semaphore::new(b.capacity))),
            credits,
            first_pressure: AtomicU64::new(0),
        }
    }

    pub fn credits(&self) -> &Arc<CreditPool> {
        &self.credits
    }

    /// Queues `want` to leave no earlier than `not_before`, waiting while its queue is full.
    /// `needs_credit`: the NOTIFY may point the phone at documents it lacks.
    pub async fn push(
        &self,
        priority: Priority,
        want: Want,
        needs_credit: bool,
        not_before: Instant,
    ) {
        let Ok(slot) = Arc::clone(&self.slots[priority as usize])
            .acquire_owned()
            .await
        else {
            return;
        };
        // A send error means the driver stopped (shutdown): the want ends with it.
        let _ = self.tx.send(Queued {
            priority,
            want,
            needs_credit,
            not_before,
            slot,
        });
    }

    /// Whether a push at `priority` would find room now.
    pub fn has_room(&self, priority: Priority) -> bool {
        self.slots[priority as usize].available_permits() > 0
    }

    /// How far over its age bound the first-NOTIFY queue runs (0 when it keeps up): the
    /// SUBSCRIBE path refuses that share of new subscriptions with 503.
    pub fn first_pressure(&self) -> f64 {
        f64::from_bits(self.first_pressure.load(Ordering::Relaxed))
    }
}

/// How often the driver publishes queue gauges, credit demand and first-queue pressure.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// Runs the driver until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let Some(mut rx) = ctx
        .pipeline
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let mut sched: Scheduler<(Want, OwnedSemaphorePermit)> = Scheduler::new(QUEUE_BOUNDS);
    let deliveries = Arc::new(Semaphore::new(ctx.config.fanout_concurrency));
    let freed = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let mut published = Instant::now()
        .checked_sub(PUBLISH_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let now = Instant::now();
        while let Ok(q) = rx.try_recv() {
            let Queued {
                priority,
                want,
                needs_credit,
                not_before,
                slot,
            } = q;
            // The slots keep every queue within its capacity, so this cannot be full.
            let _ = sched.push(priority, (want, slot), needs_credit, not_before, now);
        }
        while tasks.try_join_next().is_some() {}
        let room = deliveries.available_permits();
        let releases = ctx.pipeline.credits.with(now, |c| sched.poll(now, room, c));
        for r in releases {
            let Ok(permit) = Arc::clone(&deliveries).try_acquire_owned() else {
                break;
            };
            let (want, slot) = r.payload;
            drop(slot);
            metrics::histogram!("pipeline_wait_seconds", "priority" => r.priority.label())
                .record(r.waited.as_secs_f64());
            let ctx = Arc::clone(&ctx);
            let freed = Arc::clone(&freed);
            let span = want.token.as_ref().and_then(|t| t.progress().notify_span());
            tasks.spawn(async move {
                let delivery = deliver::deliver(&ctx, want, r.priority, r.credited);
                match span {
                    Some(span) => delivery.instrument(span).await,
                    None => delivery.await,
                }
                drop(permit);
                freed.notify_one();
            });
        }
        // Gauges and the demand report are read every 100 ms; a storm runs this loop
        // thousands of times a second.
        if now.duration_since(published) >= PUBLISH_EVERY {
            publish(&ctx, &sched, now);
            published = now;
        }
        let wait = if sched.wants_credit() {
            CREDIT_POLL
        } else {
            sched
                .next_ready_at()
                .map_or(IDLE_POLL, |at| at.saturating_duration_since(now))
                .min(IDLE_POLL)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(q) = rx.recv() => {
                let Queued { priority, want, needs_credit, not_before, slot } = q;
                let _ = sched.push(priority, (want, slot), needs_credit, not_before, Instant::now());
            }
            () = freed.notified(), if deliveries.available_permits() == 0 || room == 0 => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    tasks.shutdown().await;
}

fn publish<T>(ctx: &Ctx, sched: &Scheduler<T>, now: Instant) {
    for p in Priority::ALL {
        gauge!("pipeline_queue_depth", "priority" => p.label()).set(sched.depth(p) as f64);
        gauge!("pipeline_queue_age_seconds", "priority" => p.label())
            .set(sched.oldest_age(p, now).as_secs_f64());
    }
    let credits = &ctx.pipeline.credits;
    let balance = credits.balance();
    gauge!("pipeline_credits").set(if balance.is_finite() { balance } else { -1.0 });
    credits.source.demand(sched.credit_demand() as u64);
    let pressure = sched.pressure(Priority::First, credits.rate());
    ctx.pipeline
        .first_pressure
        .store(pressure.to_bits(), Ordering::Relaxed);
    gauge!("pipeline_first_pressure").set(pressure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_settles_when_every_token_is_dropped() {
        let p = Arc::new(Progress::default());
        assert!(p.settled(Duration::ZERO).await);
        let a = p.token();
        let b = p.token();
        assert_eq!(p.outstanding(), 2);
        assert!(!p.settled(Duration::from_millis(10)).await);
        drop(a);
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.settled(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(b);
        assert!(waiter.await.expect("join"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_secs(1) && backoff(1) <= Duration::from_millis(1500));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(20) <= Duration::from_secs(48));
    }

    #[test]
    fn credit_pool_spends_grants_and_caps_them() {
        let pool = CreditPool::new(Arc::new(uaprof_api::FixedRate::new(10.0)));
        let t0 = Instant::now();
        assert!(!pool.try_take(t0), "nothing accrued yet");
        // A minute of accrual is capped at a second's worth.
        assert!(pool.try_take(t0 + Duration::from_secs(60)));
        assert!((pool.balance() - 9.0).abs() < 1e-9);
        pool.refund();
        assert!((pool.balance() - 10.0).abs() < 1e-9);
        let unlimited = CreditPool::new(Arc::new(uaprof_api::Unlimited));
        assert!((0..1000).all(|_| unlimited.try_take(t0)));
    }
}

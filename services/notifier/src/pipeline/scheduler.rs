//! The NOTIFY scheduler: which queued NOTIFY leaves next, as a pure state machine.
//!
//! Three bounded queues, by priority: the URL-bearing first NOTIFY of a new subscription
//! (after a bodiless one went out at once), change fan-out, and refreshes and re-sends.
//! An item may wait for a time (a rollout window spreads a change, a retry backs off) and
//! may need a fetch credit (a NOTIFY that points phones at documents causes fetches, which
//! the content tier admits at the rate it can serve). [`Scheduler::poll`] hands out what
//! may leave now, highest priority first, spending one credit per item that needs one from
//! the balance it is given (the caller's credit pool, which the SUBSCRIBE path shares).
//!
//! Time is a parameter and nothing here does I/O, so the tests step virtual time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

pub use crate::want::Priority;

/// Bounds of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Items held at most; a push beyond it is refused (the caller sheds or waits).
    pub capacity: usize,
    /// How long an item is expected to wait at most; [`Scheduler::pressure`] compares the
    /// projected wait with it.
    pub max_age: Duration,
}

/// The queue is full.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

struct Item<T> {
    payload: T,
    needs_credit: bool,
    /// When it became ready (enqueued, or its wait ended): its age counts from here.
    ready_at: Instant,
}

/// Items waiting for a time, ordered by it (then by arrival, for a stable order).
struct Later<T> {
    at: Instant,
    seq: u64,
    payload: T,
    needs_credit: bool,
}

impl<T> PartialEq for Later<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Later<T> {}
impl<T> PartialOrd for Later<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Later<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Queue<T> {
    bounds: Bounds,
    ready: VecDeque<Item<T>>,
    later: BinaryHeap<Reverse<Later<T>>>,
    /// Ready items that need a credit (kept as a count: the driver asks every round).
    credit_ready: usize,
}

impl<T> Queue<T> {
    fn len(&self) -> usize {
        self.ready.len() + self.later.len()
    }

    /// Moves items whose time has come to the ready list.
    fn promote(&mut self, now: Instant) {
        while self.later.peek().is_some_and(|Reverse(l)| l.at <= now) {
            let Some(Reverse(l)) = self.later.pop() else {
                break;
            };
            self.credit_ready += usize::from(l.needs_credit);
            self.ready.push_back(Item {
                payload: l.payload,
                needs_credit: l.needs_credit,
                ready_at: l.at,
            });
        }
    }
}

pub struct Scheduler<T> {
    queues: [Queue<T>; 3],
    seq: u64,
}

/// What [`Scheduler::poll`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub struct Release<T> {
    pub priority: Priority,
    pub payload: T,
    /// One credit was spent on it (refund it if the NOTIFY turns out to need none).
    pub credited: bool,
    /// How long it was ready before leaving.
    pub waited: Duration,
}

impl<T> Scheduler<T> {
    /// `bounds` per priority, in [`Priority::ALL`] order.
    pub fn new(bounds: [Bounds; 3]) -> Self {
        Self {
            queues: bounds.map(|b| Queue {
                bounds: b,
                ready: VecDeque::new(),
                later: BinaryHeap::new(),
                credit_ready: 0,
            }),
            seq: 0,
        }
    }

    /// Queues `payload`, to leave no earlier than `not_before`.
    pub fn push(
        &mut self,
        priority: Priority,
        payload: T,
        needs_credit: bool,
        not_before: Instant,
        now: Instant,
    ) -> Result<(), Full<T>> {
        let q = &mut self.queues[priority.index()];
        if q.len() >= q.bounds.capacity {
            return Err(Full(payload));
        }
        if not_before <= now {
            q.credit_ready += usize::from(needs_credit);
            q.ready.push_back(Item {
                payload,
                needs_credit,
                ready_at: now,
            });
        } else {
            self.seq += 1;
            q.later.push(Reverse(Later {
                at: not_before,
                seq: self.seq,
                payload,
                needs_credit,
            }));
        }
        Ok(())
    }

    /// Up to `max` items that may leave now, highest priority first, spending a credit
    /// from `credits` for each that needs one. Within a queue the order is first-ready
    /// first-out; an item that needs a credit while less than one is held stops its queue
    /// (nothing overtakes it there), and lower queues are looked at only once higher ones
    /// are empty or blocked.
    pub fn poll(&mut self, now: Instant, max: usize, credits: &mut f64) -> Vec<Release<T>> {
        let mut out = Vec::new();
        for p in Priority::ALL {
            let q = &mut self.queues[p.index()];
            q.promote(now);
            while out.len() < max {
                let Some(front) = q.ready.front() else { break };
                if front.needs_credit && *credits < 1.0 {
                    break;
                }
                let Some(item) = q.ready.pop_front() else {
                    break;
                };
                if item.needs_credit {
                    *credits -= 1.0;
                    q.credit_ready -= 1;
                }
                out.push(Release {
                    priority: p,
                    payload: item.payload,
                    credited: item.needs_credit,
                    waited: now.saturating_duration_since(item.ready_at),
                });
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// When an item waiting for a time becomes ready next.
    pub fn next_ready_at(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.later.peek().map(|Reverse(l)| l.at))
            .min()
    }

    /// Whether some ready item waits for a credit.
    pub fn wants_credit(&self) -> bool {
        self.queues
            .iter()
            .any(|q| q.ready.front().is_some_and(|i| i.needs_credit))
    }

    /// Items held (ready and waiting) in a queue.
    pub fn depth(&self, p: Priority) -> usize {
        self.queues[p.index()].len()
    }

    /// Ready items of every queue that need a credit: the demand reported to the grantor.
    pub fn credit_demand(&self) -> usize {
        self.queues.iter().map(|q| q.credit_ready).sum()
    }

    /// How long the oldest ready item of a queue has waited.
    pub fn oldest_age(&self, p: Priority, now: Instant) -> Duration {
        self.queues[p.index()]
            .ready
            .front()
            .map(|i| now.saturating_duration_since(i.ready_at))
            .unwrap_or_default()
    }

    /// How far over its age bound a queue is expected to run: 0 when its items (and those
    /// of higher queues, which go first) drain at `credit_rate` per second within its
    /// `max_age`, growing by 1 for each further `max_age` the backlog needs. Drives the
    /// graded refusal of new subscriptions.
    pub fn pressure(&self, p: Priority, credit_rate: Option<f64>) -> f64 {
        let Some(rate) = credit_rate.filter(|r| *r > 0.0) else {
            return 0.0;
        };
        let ahead: usize = Priority::ALL
            .iter()
            .filter(|q| **q <= p)
            .map(|q| self.depth(*q))
            .sum();
        let wait = ahead as f64 / rate;
        let bound = self.queues[p.index()]
            .bounds
            .max_age
            .as_secs_f64()
            .max(1e-3);
        ((wait - bound) / bound).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(capacity: usize) -> [Bounds; 3] {
        let b = Bounds {
            capacity,
            max_age: Duration::from_secs(10),
        };
        [b, b, b]
    }

    fn labels(r: Vec<Release<&'static str>>) -> Vec<&'static str> {
        r.into_iter().map(|r| r.payload).collect()
    }

    #[test]
    fn higher_priorities_leave_first_and_fifo_within_one() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(10));
        let mut credits = 100.0;
        for (p, x) in [
            (Priority::Background, "b1"),
            (Priority::Change, "c1"),
            (Priority::First, "f1"),
            (Priority::Change, "c2"),
            (Priority::First, "f2"),
        ] {
            s.push(p, x, true, t0, t0).expect("room");
        }
        assert_eq!(labels(s.poll(t0, 3, &mut credits)), ["f1", "f2", "c1"]);
        assert_eq!(labels(s.poll(t0, 10, &mut credits)), ["c2", "b1"]);
        assert!(s.poll(t0, 10, &mut credits).is_empty());
        assert_eq!(credits, 95.0);
    }

    #[test]
    fn credit_demand_counts_ready_items_needing_credit_as_they_come_and_go() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut s = Scheduler::new(bounds(10));
        let mut credits = 0.0;
        s.push(Priority::First, "now", true, t0, t0).expect("room");
        s.push(Priority::Change, "soon", true, later, t0)
            .expect("room");
        s.push(Priority::Change, "free", false, t0, t0)
            .expect("room");
        assert_eq!(s.credit_demand(), 1, "the later one is not ready yet");
        // "now" blocks the First queue; "free" leaves; "soon" becomes ready behind nothing
        // that needs a credit in its queue, but there is no credit.
        assert_eq!(labels(s.poll(later, 10, &mut credits)), ["free"]);
        assert_eq!(s.credit_demand(), 2);
        credits = 1.0;
        assert_eq!(labels(s.poll(later, 10, &mut credits)), ["now"]);
        assert_eq!(s.credit_demand(), 1);
        credits = 5.0;
        assert_eq!(labels(s.poll(later, 10, &mut credits)), ["soon"]);
        assert_eq!(s.credit_demand(), 0);
    }

    #[test]
    fn credits_gate_only_items_that_need_them() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(10));
        let mut credits = 0.0;
        s.push(Priority::Change, "url", true, t0, t0).expect("room");
        s.push(Priority::Background, "plain", false, t0, t0)
            .expect("room");
        // No credit: the change waits, the item needing none still leaves.
        assert_eq!(labels(s.poll(t0, 10, &mut credits)), ["plain"]);
        assert!(s.wants_credit());
        assert_eq!(s.credit_demand(), 1);
        credits = 0.5;
        assert!(
            s.poll(t0, 10, &mut credits).is_empty(),
            "half a credit is not a credit"
        );
        credits += 0.5;
        let r = s.poll(t0, 10, &mut credits);
        assert_eq!(r.len(), 1);
        assert!(r[0].credited);
        assert_eq!(credits, 0.0);
        assert!(!s.wants_credit());
    }

    #[test]
    fn an_item_waiting_for_credit_is_not_overtaken_in_its_queue() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(10));
        let mut credits = 0.0;
        s.push(Priority::Change, "needs", true, t0, t0)
            .expect("room");
        s.push(Priority::Change, "free", false, t0, t0)
            .expect("room");
        assert!(
            s.poll(t0, 10, &mut credits).is_empty(),
            "per-queue order holds"
        );
        credits = 1.0;
        assert_eq!(labels(s.poll(t0, 10, &mut credits)), ["needs", "free"]);
    }

    #[test]
    fn items_wait_for_their_time_in_virtual_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(10));
        let mut c = 0.0;
        let at = |ms| t0 + Duration::from_millis(ms);
        s.push(Priority::Change, "late", false, at(300), t0)
            .expect("room");
        s.push(Priority::Change, "early", false, at(100), t0)
            .expect("room");
        s.push(Priority::Change, "now", false, t0, t0)
            .expect("room");
        assert_eq!(labels(s.poll(t0, 10, &mut c)), ["now"]);
        assert_eq!(s.next_ready_at(), Some(at(100)));
        assert!(s.poll(at(99), 10, &mut c).is_empty());
        let r = s.poll(at(150), 10, &mut c);
        assert_eq!(r[0].payload, "early");
        assert_eq!(
            r[0].waited,
            Duration::from_millis(50),
            "age counts from readiness"
        );
        assert_eq!(s.next_ready_at(), Some(at(300)));
        assert_eq!(labels(s.poll(at(300), 10, &mut c)), ["late"]);
        assert_eq!(s.next_ready_at(), None);
    }

    #[test]
    fn queues_are_bounded() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(2));
        s.push(Priority::First, 1, true, t0, t0).expect("room");
        s.push(Priority::First, 2, true, t0 + Duration::from_secs(1), t0)
            .expect("room");
        assert_eq!(s.push(Priority::First, 3, true, t0, t0), Err(Full(3)));
        assert_eq!(s.depth(Priority::First), 2);
        // Other queues have their own bound.
        s.push(Priority::Change, 4, true, t0, t0).expect("room");
    }

    #[test]
    fn age_and_pressure_follow_the_backlog() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(bounds(1000));
        for i in 0..100 {
            s.push(Priority::First, i, true, t0, t0).expect("room");
        }
        assert_eq!(
            s.oldest_age(Priority::First, t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // 100 items at 20/s take 5 s: within the 10 s bound.
        assert_eq!(s.pressure(Priority::First, Some(20.0)), 0.0);
        // At 5/s they take 20 s: one bound over.
        assert!((s.pressure(Priority::First, Some(5.0)) - 1.0).abs() < 1e-9);
        // Unlimited credits: no pressure.
        assert_eq!(s.pressure(Priority::First, None), 0.0);
        // Lower queues count what waits above them.
        assert!(s.pressure(Priority::Change, Some(5.0)) > 0.0);
        assert_eq!(s.pressure(Priority::First, Some(0.0)), 0.0);
    }
}

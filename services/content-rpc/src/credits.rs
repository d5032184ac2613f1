//! Fetch credits over gRPC: the content node's [`Broker`] and the notifier's
//! [`RemoteCredits`].
//!
//! Each notifier node keeps one `Credits` stream open and reports, every [`TICK`], how many
//! NOTIFYs that cause fetches wait on it. Every tick the broker grants its node's grant rate
//! times the tick, split across the connected nodes in proportion to their demand plus one
//! (a node with nothing waiting still gets a little, for the first NOTIFYs of phones that
//! subscribe there). A notifier that loses the stream falls back to a static rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use content::FetchAdmission;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use uaprof_api::{Accrual, CreditSource, FixedRate};

use crate::client::RemoteContent;
use crate::proto;

/// How often demand is reported and credits are granted.
pub const TICK: Duration = Duration::from_millis(100);
/// Grants waiting to be sent to one node; a node that does not read them loses them.
const GRANT_QUEUE: usize = 16;
/// A notifier whose last grant is older than this uses its static fallback rate.
const STALE: Duration = Duration::from_secs(1);
/// Wait before a notifier re-opens a lost stream.
const RECONNECT: Duration = Duration::from_secs(1);

struct Node {
    name: String,
    demand: u64,
    tx: mpsc::Sender<Result<proto::CreditGrant, Status>>,
}

/// The content node's side: the connected notifier nodes and their demand.
pub struct Broker {
    admission: Arc<FetchAdmission>,
    nodes: Mutex<HashMap<u64, Node>>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker granting from `admission`; its ticker runs until `shutdown`.
    pub fn start(admission: Arc<FetchAdmission>, shutdown: CancellationToken) -> Arc<Self> {
        let broker = Arc::new(Self {
            admission,
            nodes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(Arc::clone(&broker).tick(shutdown));
        broker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one notifier's stream: reads its demand until it ends.
    pub fn attach(
        self: &Arc<Self>,
        mut demand: Streaming<proto::CreditDemand>,
    ) -> mpsc::Receiver<Result<proto::CreditGrant, Status>> {
        let (tx, rx) = mpsc::channel(GRANT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Node {
                name: String::new(),
                demand: 0,
                tx,
            },
        );
        metrics::gauge!(crate::telemetry::CREDIT_STREAMS).increment(1.0);
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                // On shutdown the demand stream is dropped too, which ends the call for the
                // client at once instead of leaving it half open until the drain grace.
                let d = tokio::select! {
                    _ = broker.shutdown.cancelled() => break,
                    d = demand.next() => match d {
                        Some(Ok(d)) => d,
                        _ => break,
                    },
                };
                if let Some(n) = broker.lock().get_mut(&id) {
                    n.demand = d.waiting;
                    if n.name.is_empty() {
                        tracing::info!(node = d.node, "notifier node drawing fetch credits");
                        n.name = d.node;
                    }
                }
            }
            broker.lock().remove(&id);
            metrics::gauge!(crate::telemetry::CREDIT_STREAMS).decrement(1.0);
        });
        rx
    }

    async fn tick(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Dropping the senders ends every grant stream, so a server shutting
                    // down is not held up by the notifiers' open streams (they reconnect to
                    // another node, or fall back to their static rate).
                    self.lock().clear();
                    return;
                }
                _ = every.tick() => {}
            }
            let now = Instant::now();
            let dt = now.saturating_duration_since(last).as_secs_f64();
            last = now;
            let rate = self.admission.grant_rate();
            let nodes = self.lock();
            let weight: f64 = nodes.values().map(|n| n.demand as f64 + 1.0).sum();
            let mut granted = 0.0;
            for n in nodes.values() {
                let grant = match rate {
                    None => proto::CreditGrant {
                        credits: 0.0,
                        rate: 0.0,
                        unlimited: true,
                    },
                    Some(r) => {
                        let share = (n.demand as f64 + 1.0) / weight;
                        granted += r * dt * share;
                        proto::CreditGrant {
                            credits: r * dt * share,
                            rate: r * share,
                            unlimited: false,
                        }
                    }
                };
                // A node that cannot take a grant now loses it; the capacity is not lent.
                let _ = n.tx.try_send(Ok(grant));
            }
            drop(nodes);
            if granted > 0.0 {
                self.admission.granted(granted);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    balance: f64,
    unlimited: bool,
    rate: f64,
    last_grant: Option<Instant>,
}

/// The notifier's side: credits granted by the content tier, or a static rate while the
/// stream is down.
#[derive(Debug)]
pub struct RemoteCredits {
    held: Mutex<Held>,
    demand: AtomicU64,
    fallback: FixedRate,
    fallback_rate: f64,
}

impl RemoteCredits {
    /// Opens (and keeps re-opening) the stream to the content tier until `shutdown`.
    pub fn start(
        client: RemoteContent,
        node: String,
        fallback_rate: f64,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            held: Mutex::new(Held::default()),
            demand: AtomicU64::new(0),
            fallback: FixedRate::new(fallback_rate),
            fallback_rate,
        });
        tokio::spawn(Arc::clone(&me).run(client, node, shutdown));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self, held: &Held, now: Instant) -> bool {
        held.last_grant
            .is_some_and(|t| now.saturating_duration_since(t) < STALE)
    }

    async fn run(
        self: Arc<Self>,
        client: RemoteContent,
        node: String,
        shutdown: CancellationToken,
    ) {
        loop {
            let me = Arc::clone(&self);
            let name = node.clone();
            let stop = shutdown.clone();
            let demand = ticking(
                move || proto::CreditDemand {
                    node: name.clone(),
                    waiting: me.demand.load(Ordering::Relaxed),
                },
                stop,
            );
            match client.credits(demand).await {
                Ok(mut grants) => {
                    tracing::info!("drawing fetch credits from the content tier");
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            g = grants.next() => g,
                        };
                        match next {
                            Some(Ok(g)) => {
                                let mut h = self.lock();
                                h.unlimited = g.unlimited;
                                h.rate = g.rate;
                                // Hold at most a second's worth, as the pool does.
                                h.balance = (h.balance + g.credits).min(g.rate.max(1.0));
                                h.last_grant = Some(Instant::now());
                            }
                            Some(Err(e)) => {
                                tracing::warn!(%e, "fetch credit stream failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot open the fetch credit stream; using the static rate")
                }
            }
            metrics::counter!(crate::telemetry::CREDIT_RECONNECTS).increment(1);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }
}

/// A stream yielding `next()` every [`TICK`] until `stop`.
fn ticking<T: Send + 'static>(
    mut next: impl FnMut() -> T + Send + 'static,
    stop: CancellationToken,
) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if tx.send(next()).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl CreditSource for RemoteCredits {
    fn accrue(&self, now: Instant) -> Accrual {
        let mut h = self.lock();
        if !self.connected(&h, now) {
            drop(h);
            return self.fallback.accrue(now);
        }
        if h.unlimited {
            return Accrual::Unlimited;
        }
        // Keep the fallback's clock current so that a later fall-back starts from now.
        let _ = self.fallback.accrue(now);
        Accrual::Credits(std::mem::take(&mut h.balance))
    }

    fn rate(&self) -> Option<f64> {
        let h = self.lock();
        if !self.connected(&h, Instant::now()) {
            return Some(self.fallback_rate);
        }
        (!h.unlimited).then_some(h.rate)
    }

    fn demand(&self, waiting: u64) {
        self.demand.store(waiting, Ordering::Relaxed);
    }
}

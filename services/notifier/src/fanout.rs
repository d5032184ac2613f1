//! The change-feed consumer and the fan-out worker: document changes in, NOTIFYs out.
//!
//! Two loops, joined by durable work in the subscription store ([`FanoutJob`]):
//!
//! * **consume**: takes a batch from the change feed, coalesces it to one job per key (the
//!   highest version, with its effective-by), records the jobs in every partition that may
//!   hold subscribers of the key ([`SubscriptionStore::enqueue_fanout`]) and only then
//!   commits the feed. A node that dies after the commit has left the work in the store.
//! * **work**: on each node, walks the pending jobs of the partitions the node owns: for
//!   every subscription depending on the key it re-resolves the content and sends a NOTIFY
//!   only when the entity tag differs from the one the subscriber confirmed — so a
//!   redelivered change re-notifies nobody who already has that version (invariant 3). A
//!   job is removed once every NOTIFY of its walk has ended, unless a newer change for the
//!   key arrived, which keeps it pending; such a job is walked again once the key has been
//!   quiet for a moment, so a burst for one key costs two NOTIFYs per subscription: its
//!   first change at once, and the state after the burst. If
//!   the node dies mid-walk, the partition's next owner walks the job again (invariant 2);
//!   only the NOTIFYs that were in flight at the crash can reach a phone twice.
//!
//! Memory is bounded by the page size, the number of walks and the NOTIFY concurrency, not
//! by how many subscriptions a change matches.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use opentelemetry::trace::TraceContextExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uaprof_api::{ChangeSource, FeedError, ProfileChange, ProfileKey};

use crate::Ctx;
use crate::pipeline::{Priority, Progress, Want, Why};
use crate::store::FanoutJob;

/// Changes taken from the feed per batch; a batch is recorded and committed as one unit.
const FEED_BATCH: usize = 256;
/// How long one poll of the feed waits for a change before looping (bounds shutdown latency).
const FEED_WAIT: Duration = Duration::from_millis(500);
/// Back-off after a store or resolver failure; the work is retried, never skipped.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Jobs walked at once per node. Each holds one page of ids; the NOTIFYs they send share
/// `fanout_concurrency`. Enough that one slow class change does not hold up device changes.
const MAX_WALKS: usize = 64;
/// How often the worker looks for work nobody announced (a lost announcement, a job left
/// pending by a walk that found a newer version).
const JOB_POLL: Duration = Duration::from_secs(1);
/// How often every owned partition is read for pending work, whatever was announced.
const FULL_SWEEP: Duration = Duration::from_secs(10);
/// Jobs read from the store per look.
const JOBS_PER_LOOK: usize = 4096;

/// Runs both loops until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, feed: Box<dyn ChangeSource>, shutdown: CancellationToken) {
    let worker = tokio::spawn(work(Arc::clone(&ctx), shutdown.clone()));
    consume(ctx, feed, shutdown).await;
    let _ = worker.await;
}

async fn consume(ctx: Arc<Ctx>, mut feed: Box<dyn ChangeSource>, shutdown: CancellationToken) {
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            b = feed.next_batch(FEED_BATCH, FEED_WAIT) => b,
        };
        let mut targets = Vec::new();
        let (mut jobs, seq, span) = match batch {
            Ok(changes) if changes.is_empty() => continue,
            Ok(changes) => {
                counter!("fanout_changes_total").increment(changes.len() as u64);
                let last = changes.iter().map(|c| c.seq).max().unwrap_or_default();
                targets = resync_targets(&changes);
                (coalesce(&changes), last, batch_span(&changes))
            }
            Err(FeedError::Gap {
                after,
                resume_after,
            }) => {
                warn!(
                    after,
                    resume_after, "change feed gap: reconciling every subscription"
                );
                let all = FanoutJob {
                    target: None,
                    version: resume_after,
                    effective_by: None,
                    rollout_window: None,
                    traceparent: None,
                };
                (
                    vec![all],
                    resume_after,
                    info_span!("fanout.batch", changes = 0),
                )
            }
            Err(FeedError::Closed) => return,
            Err(e) => {
                warn!(%e, "change feed unavailable");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
                continue;
            }
        };
        let traceparent = traceparent_of(&span);
        for job in &mut jobs {
            job.traceparent.clone_from(&traceparent);
        }
        prewarm(&ctx, &jobs);
        if !record(&ctx, &jobs, &shutdown)
            .instrument(span.clone())
            .await
        {
            return;
        }
        if !sync_targets(&ctx, &targets, &shutdown)
            .instrument(span.clone())
            .await
        {
            return;
        }
        commit(&ctx, feed.as_mut(), seq, &shutdown)
            .instrument(span)
            .await;
    }
}

/// Other changes' traces linked from one batch span. A batch holds up to `FEED_BATCH`
/// changes; past a few dozen links a trace view shows nothing more useful, and the SDK's
/// default limit (128 links a span) would drop the rest anyway.
const MAX_BATCH_LINKS: usize = 32;

/// The span of one fan-out batch: a child of the first change's trace (the `traceparent`
/// its Kafka record carried), linked to the traces of the others.
fn batch_span(changes: &[ProfileChange]) -> tracing::Span {
    let span = info_span!("fanout.batch", changes = changes.len());
    let mut contexts = changes
        .iter()
        .filter_map(|c| c.traceparent.as_deref())
        .map(|tp| {
            let carrier =
                std::collections::HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
        })
        .filter(|cx| cx.span().span_context().is_valid());
    if let Some(first) = contexts.next() {
        // Fails only when no tracer is installed, and then there is nothing to join.
        let _ = span.set_parent(first);
    }
    for cx in contexts.take(MAX_BATCH_LINKS) {
        span.add_link(cx.span().span_context().clone());
    }
    span
}

/// The W3C `traceparent` of `span`, when it is part of an exported trace.
fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// The span of one walk: a child of the batch that recorded its job, when it had a trace.
fn walk_span(p: u16, job: &FanoutJob) -> tracing::Span {
    let span = info_span!(
        "fanout.walk",
        partition = p,
        target = job.target.as_ref().map(tracing::field::display),
        version = job.version
    );
    if let Some(tp) = &job.traceparent {
        let carrier = std::collections::HashMap::from([("traceparent".to_owned(), tp.clone())]);
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        if cx.span().span_context().is_valid() {
            // Fails only when no tracer is installed, and then there is nothing to join.
            let _ = span.set_parent(cx);
        }
    }
    span
}

/// Tells the content tier which keys' documents the coming walks will make phones fetch, so
/// it can load them before the first NOTIFY leaves. Advisory: it runs beside the walk and a
/// failure only costs the cache misses it would have saved.
fn prewarm(ctx: &Arc<Ctx>, jobs: &[FanoutJob]) {
    let keys: Vec<ProfileKey> = jobs.iter().filter_map(|j| j.target.clone()).collect();
    if keys.is_empty() {
        return;
    }
    let resolver = Arc::clone(&ctx.resolver);
    tokio::spawn(async move {
        match resolver.prewarm(&keys).await {
            Ok(loaded) => {
                counter!("fanout_prewarm_total", "outcome" => "ok").increment(1);
                debug!(keys = keys.len(), loaded, "content tier prewarmed");
            }
            Err(e) => {
                counter!("fanout_prewarm_total", "outcome" => "error").increment(1);
                debug!(%e, "prewarm failed");
            }
        }
    });
}

/// One job per key: the highest version, and the effective-by of the change that set it.
fn coalesce(changes: &[ProfileChange]) -> Vec<FanoutJob> {
    let mut by_key: BTreeMap<&ProfileKey, FanoutJob> = BTreeMap::new();
    for c in changes {
        let e = by_key.entry(&c.key).or_insert_with(|| FanoutJob {
            target: Some(c.key.clone()),
            version: 0,
            effective_by: None,
            rollout_window: None,
            traceparent: None,
        });
        if c.version >= e.version {
            e.version = c.version;
            e.effective_by = c.effective_by.or(e.effective_by);
            e.rollout_window = c.rollout_window.or(e.rollout_window);
        }
    }
    by_key.into_values().collect()
}

/// Records the jobs durably, retrying until the store takes them. `false` on shutdown.
async fn record(ctx: &Ctx, jobs: &[FanoutJob], shutdown: &CancellationToken) -> bool {
    loop {
        let write = ctx.store.enqueue_fanout(jobs);
        match write.instrument(info_span!("store.enqueue_fanout")).await {
            Ok(()) => {
                counter!("fanout_jobs_recorded_total").increment(jobs.len() as u64);
                return true;
            }
            Err(e) => {
                counter!("store_errors_total", "op" => "enqueue_fanout").increment(1);
                warn!(%e, "cannot record fan-out work; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    }
}

/// The devices whose resync target the changes may have changed, once each.
fn resync_targets(changes: &[ProfileChange]) -> Vec<ProfileKey> {
    let mut keys: Vec<ProfileKey> = changes
        .iter()
        .filter(|c| c.resync && matches!(c.key, ProfileKey::Device(_)))
        .map(|c| c.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Brings the devices' check-sync records in line with their resync targets before the
/// changes are committed (so a node that dies meanwhile leaves them to the next reader of
/// the feed), retrying what may pass. `false` on shutdown.
async fn sync_targets(ctx: &Ctx, devices: &[ProfileKey], shutdown: &CancellationToken) -> bool {
    for device in devices {
        loop {
            match crate::checksync::sync_target(ctx, device).await {
                Ok(()) => break,
                Err(e) => {
                    counter!("store_errors_total", "op" => "check_sync_target").increment(1);
                    warn!(%e, %device, "resync target not applied yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                    }
                }
            }
        }
    }
    true
}

async fn commit(ctx: &Ctx, feed: &mut dyn ChangeSource, seq: u64, shutdown: &CancellationToken) {
    if !feed.keeps_positions() {
        while !shutdown.is_cancelled() {
            match ctx.store.set_feed_offset(seq).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(%e, "cannot record feed offset; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }
    if let Err(e) = feed.commit(seq).await {
        warn!(%e, seq, "feed commit failed; the batch may be delivered again");
    }
    gauge!("fanout_feed_offset").set(seq as f64);
}

/// How a walk ended.
enum Walked {
    /// Every subscription was visited and every NOTIFY ended.
    Complete,
    /// The partition moved to another node, or shutdown: the job stays for its next owner.
    Abandoned,
}

type JobId = (u16, Option<ProfileKey>);

/// A job for a key that was walked a moment ago (or whose walk found a newer version on
/// finishing): it is walked once its version has been stable for [`SETTLE`], so a burst of
/// changes costs a subscriber two NOTIFYs (the first change at once, the state after the
/// burst), not one per batch of the burst that the feed delivered.
struct Settling {
    version: u64,
    changed_at: Instant,
    since: Instant,
}

/// Quiet time after which a superseded job is walked again: the changes of one burst arrive
/// closer together than this.
const SETTLE: Duration = Duration::from_millis(300);
/// Longest a superseded job waits for its key to go quiet.
const MAX_SETTLE: Duration = Duration::from_secs(3);

struct Worker {
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    permits: Arc<Semaphore>,
    running: HashSet<JobId>,
    settling: std::collections::HashMap<JobId, Settling>,
    /// When each key's last complete walk ended (kept for [`SETTLE`]).
    walked_at: std::collections::HashMap<JobId, Instant>,
    walks: JoinSet<(u16, FanoutJob, Walked)>,
    recheck: Vec<u16>,
}

async fn work(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut w = Worker {
        permits: Arc::new(Semaphore::new(ctx.config.fanout_concurrency)),
        ctx,
        shutdown,
        running: HashSet::new(),
        settling: std::collections::HashMap::new(),
        walked_at: std::collections::HashMap::new(),
        walks: JoinSet::new(),
        recheck: Vec::new(),
    };
    let mut last_sweep = Instant::now();
    loop {
        while let Some(done) = w.walks.try_join_next() {
            w.walked(done).await;
        }
        gauge!("fanout_walks_running").set(w.walks.len() as f64);
        if w.shutdown.is_cancelled() {
            break;
        }
        if last_sweep.elapsed() >= FULL_SWEEP {
            // Partitions this node does not own are skipped by the store.
            w.recheck.extend(0..crate::store::redis::PARTITIONS);
            w.settling.retain(|_, s| s.since.elapsed() < FULL_SWEEP);
            last_sweep = Instant::now();
        }
        if !w.walked_at.is_empty() {
            w.walked_at.retain(|_, at| at.elapsed() < SETTLE);
        }
        w.recheck.extend(w.settling.keys().map(|(p, _)| *p));
        w.recheck.sort_unstable();
        w.recheck.dedup();
        match w.ctx.store.pending_fanout(&w.recheck, JOBS_PER_LOOK).await {
            Ok(jobs) => {
                w.recheck.clear();
                for (p, job) in jobs {
                    w.consider(p, job);
                }
            }
            Err(e) => {
                counter!("store_errors_total", "op" => "pending_fanout").increment(1);
                warn!(%e, "cannot read pending fan-out work; retrying");
            }
        }
        let wait = if w.settling.is_empty() {
            JOB_POLL
        } else {
            SETTLE / 3
        };
        tokio::select! {
            _ = w.shutdown.cancelled() => {}
            Some(done) = w.walks.join_next(), if !w.walks.is_empty() => w.walked(done).await,
            () = w.ctx.store.fanout_wakeup(wait) => {}
        }
    }
    // Walks end at once on shutdown (their jobs stay pending for the next owner).
    while w.walks.join_next().await.is_some() {}
}

impl Worker {
    /// Starts a walk of a pending job unless it is running, settling or over the bound.
    fn consider(&mut self, p: u16, job: FanoutJob) {
        let id = (p, job.target.clone());
        if self.running.contains(&id) {
            return;
        }
        let now = Instant::now();
        if !self.settling.contains_key(&id)
            && self
                .walked_at
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < SETTLE)
        {
            self.settling.insert(
                id.clone(),
                Settling {
                    version: job.version,
                    changed_at: now,
                    since: now,
                },
            );
        }
        if let Some(s) = self.settling.get_mut(&id) {
            if s.version != job.version {
                s.version = job.version;
                s.changed_at = now;
            }
            let quiet = now.duration_since(s.changed_at) >= SETTLE;
            if !quiet && now.duration_since(s.since) < MAX_SETTLE {
                return;
            }
            self.settling.remove(&id);
        }
        if self.walks.len() >= MAX_WALKS {
            self.recheck.push(p);
            return;
        }
        debug!(partition = p, target = ?job.target, version = job.version, "walk starts");
        self.running.insert(id);
        let ctx = Arc::clone(&self.ctx);
        let permits = Arc::clone(&self.permits);
        let stop = self.shutdown.clone();
        let span = walk_span(p, &job);
        self.walks.spawn(async move {
            let walked = walk(&ctx, p, &job, &permits, &stop).instrument(span).await;
            (p, job, walked)
        });
    }

    /// Books a walk that ended: a complete one removes its job, unless a newer change for
    /// the key arrived during the walk; that one settles, then is walked again.
    async fn walked(&mut self, done: Result<(u16, FanoutJob, Walked), tokio::task::JoinError>) {
        let Ok((p, job, walked)) = done else { return };
        let id = (p, job.target.clone());
        self.running.remove(&id);
        if !matches!(walked, Walked::Complete) {
            return;
        }
        let done = finish(&self.ctx, p, &job, &self.shutdown).await;
        debug!(partition = p, target = ?job.target, version = job.version, done, "walk ends");
        let now = Instant::now();
        if done {
            self.walked_at.insert(id, now);
        } else {
            self.settling.insert(
                id,
                Settling {
                    version: job.version,
                    changed_at: now,
                    since: now,
                },
            );
            self.recheck.push(p);
        }
    }
}

/// Removes a finished job; `false` if it must be walked again (a newer version arrived).
async fn finish(ctx: &Ctx, p: u16, job: &FanoutJob, shutdown: &CancellationToken) -> bool {
    loop {
        match ctx.store.finish_fanout(p, job).await {
            Ok(true) => {
                counter!("fanout_jobs_total", "result" => "done").increment(1);
                return true;
            }
            Ok(false) => {
                counter!("fanout_jobs_total", "result" => "superseded").increment(1);
                return false;
            }
            Err(e) => {
                warn!(%e, partition = p, "cannot mark fan-out work done; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return true,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    }
}

/// Walks the subscriptions of one job in one partition, page by page, queueing one want per
/// subscription (spread over the job's rollout window), and waits until every want ended.
async fn walk(
    ctx: &Arc<Ctx>,
    p: u16,
    job: &FanoutJob,
    _permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Walked {
    let started = Instant::now();
    let progress = Arc::new(Progress::traced(tracing::Span::current()));
    let mut after = None;
    let mut visited = 0u64;
    // A rollout window spreads the sends; each NOTIFY then lets the phone fetch within a
    // tenth of it (at most a minute), so the fetches follow the sends.
    let window = job.rollout_window.map(|w| Duration::from_secs(w.into()));
    let effective_by = job
        .effective_by
        .or(job.rollout_window.map(|w| (w / 10).clamp(1, 60)));
    loop {
        if !ctx.store.owns_partition(p) {
            return abandoned(p);
        }
        let limit = ctx.config.fanout_page;
        let page = match &job.target {
            Some(key) => ctx.store.by_key_in(p, key, after, limit).await,
            None => ctx.store.scan_partition(p, after, limit).await,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                counter!("store_errors_total", "op" => "fanout_page").increment(1);
                warn!(%e, partition = p, "index read failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Walked::Abandoned,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => continue,
                }
            }
        };
        for id in page.ids {
            visited += 1;
            let not_before = match window {
                Some(w) => started + w.mul_f64(rand::random::<f64>()),
                None => started,
            };
            let want = Want {
                effective_by,
                token: Some(progress.token()),
                ..Want::new(id, Why::Change)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Walked::Abandoned,
                () = ctx.pipeline.push(Priority::Change, want, true, not_before) => {}
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    // Every want ends in the pipeline (sent and answered, unchanged, gone, given up).
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Walked::Abandoned,
            done = progress.settled(SETTLE_CHECK) => if done { break },
        }
        if !ctx.store.owns_partition(p) {
            return abandoned(p);
        }
    }
    if job.target.is_none() || visited > 1000 {
        info!(partition = p, target = ?job.target, version = job.version, visited, elapsed = ?started.elapsed(), "fan-out walk done");
    }
    Walked::Complete
}

/// How often a walk waiting for its wants checks that it still owns the partition.
const SETTLE_CHECK: Duration = Duration::from_secs(1);

fn abandoned(p: u16) -> Walked {
    counter!("fanout_jobs_total", "result" => "abandoned").increment(1);
    debug!(
        partition = p,
        "partition lost mid-walk; its new owner finishes the job"
    );
    Walked::Abandoned
}

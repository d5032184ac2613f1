//! The change-feed consumer: document changes in, NOTIFYs out.
//!
//! For each batch of changes it walks the key index in pages, re-resolves each affected
//! subscription, and sends a NOTIFY only when the entity tag differs from the one the
//! subscriber confirmed — so a redelivered event re-notifies nobody who already has that
//! version (invariant 3), and bursts for one key coalesce into one NOTIFY per dialog.
//!
//! The feed position is committed only after every NOTIFY of the batch has *ended* (2xx,
//! failure or timeout). If the node dies mid-fan-out, the batch is delivered again and the
//! subscribers who did not confirm the new version are notified (invariant 2).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use profile_event::state::SubState;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uaprof_api::{ChangeSource, FeedError, ProfileChange, ProfileKey, ResolveRequest};

use crate::Ctx;
use crate::engine::{EngineMsg, NotifyKind};
use crate::store::{StoreError, SubId};

/// Changes taken from the feed per batch; a batch is committed as one unit.
const FEED_BATCH: usize = 256;
/// How long one poll of the feed waits for a change before looping (bounds shutdown latency).
const FEED_WAIT: Duration = Duration::from_millis(500);
/// Back-off after a store or resolver failure; the work is retried, never skipped.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(ctx: Arc<Ctx>, mut feed: Box<dyn ChangeSource>, shutdown: CancellationToken) {
    // Where this consumer's feed starts; shards taken over later are measured against it.
    let mut position = loop {
        match ctx.store.feed_offset().await {
            Ok(p) => break p,
            Err(e) => {
                warn!(%e, "cannot read the feed offset; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    };
    loop {
        if !adopt(&ctx, position, &shutdown).await {
            return;
        }
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            b = feed.next_batch(FEED_BATCH, FEED_WAIT) => b,
        };
        let result = match batch {
            Ok(changes) if changes.is_empty() => continue,
            Ok(changes) => {
                let last = changes.iter().map(|c| c.seq).max().unwrap_or_default();
                counter!("fanout_changes_total").increment(changes.len() as u64);
                if !process(&ctx, &changes, &shutdown).await {
                    return;
                }
                Some(last)
            }
            Err(FeedError::Gap {
                after,
                resume_after,
            }) => {
                warn!(
                    after,
                    resume_after, "change feed gap: reconciling every subscription"
                );
                if !reconcile(&ctx, None, &shutdown).await {
                    return;
                }
                Some(resume_after)
            }
            Err(FeedError::Closed) => return,
            Err(e) => {
                warn!(%e, "change feed unavailable");
                tokio::time::sleep(RETRY_BACKOFF).await;
                None
            }
        };
        if let Some(seq) = result {
            commit(&ctx, feed.as_mut(), seq, &shutdown).await;
            position = position.max(seq);
        }
    }
}

/// Takes on the shards this node was handed (a node died or left, or the tier grew). A
/// shard whose recorded position is behind ours may have missed changes its previous owner
/// never fanned out: every subscription in it is checked against current content, and only
/// those whose confirmed entity tag differs are notified. Returns `false` on shutdown.
async fn adopt(ctx: &Arc<Ctx>, position: u64, shutdown: &CancellationToken) -> bool {
    let acquired = match ctx.store.take_acquired().await {
        Ok(a) => a,
        Err(e) => {
            warn!(%e, "cannot take on new shards yet");
            return true;
        }
    };
    for (shard, offset) in acquired {
        if offset < position {
            info!(shard, offset, position, "reconciling a shard taken over");
            counter!("fanout_shards_reconciled_total").increment(1);
            if !reconcile(ctx, Some(shard), shutdown).await {
                return false;
            }
        }
        loop {
            match ctx.store.set_shard_offset(shard, position).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(%e, shard, "cannot record shard offset; retrying");
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
    while !shutdown.is_cancelled() {
        match ctx.store.set_feed_offset(seq).await {
            Ok(()) => break,
            Err(e) => {
                warn!(%e, "cannot record feed offset; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
    if let Err(e) = feed.commit(seq).await {
        warn!(%e, seq, "feed commit failed; the batch may be delivered again");
    }
    gauge!("fanout_feed_offset").set(seq as f64);
}

/// Fans out one batch. Returns `false` if shutdown interrupted it (nothing is committed).
async fn process(ctx: &Arc<Ctx>, changes: &[ProfileChange], shutdown: &CancellationToken) -> bool {
    // One walk per key; the latest effective-by given for a key wins.
    let mut keys: BTreeMap<&ProfileKey, Option<u32>> = BTreeMap::new();
    for c in changes {
        let e = keys.entry(&c.key).or_default();
        if c.effective_by.is_some() {
            *e = c.effective_by;
        }
    }
    let permits = Arc::new(Semaphore::new(ctx.config.fanout_concurrency));
    let mut jobs = JoinSet::new();
    for (key, effective_by) in keys {
        let mut after = None;
        loop {
            let page = match ctx.store.by_key(key, after, ctx.config.fanout_page).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(%e, %key, "index read failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(RETRY_BACKOFF) => continue,
                    }
                }
            };
            for id in page.ids {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return false,
                    },
                };
                let ctx = Arc::clone(ctx);
                let stop = shutdown.clone();
                jobs.spawn(async move {
                    let _permit = permit;
                    notify_until_done(&ctx, id, effective_by, &stop).await;
                });
                // Reap finished jobs so the set stays as small as the permit count.
                while let Some(r) = jobs.try_join_next() {
                    let _ = r;
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    while jobs.join_next().await.is_some() {}
    !shutdown.is_cancelled()
}

/// Walks every subscription, or those of one shard (after a feed gap or a takeover, when
/// we no longer know what changed).
async fn reconcile(ctx: &Arc<Ctx>, shard: Option<u16>, shutdown: &CancellationToken) -> bool {
    let mut after = None;
    let mut n = 0u64;
    loop {
        let limit = ctx.config.fanout_page;
        let page = match shard {
            Some(s) => ctx.store.scan_shard(s, after, limit).await,
            None => ctx.store.scan(after, limit).await,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn!(%e, "scan failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => continue,
                }
            }
        };
        let mut jobs = JoinSet::new();
        for id in page.ids {
            n += 1;
            let job_ctx = Arc::clone(ctx);
            let stop = shutdown.clone();
            jobs.spawn(async move { notify_until_done(&job_ctx, id, None, &stop).await });
            if jobs.len() >= ctx.config.fanout_concurrency {
                jobs.join_next().await;
            }
        }
        while jobs.join_next().await.is_some() {}
        if shutdown.is_cancelled() {
            return false;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    info!(subscriptions = n, ?shard, "reconciliation done");
    true
}

/// Notifies one subscription of its current state, retrying transient failures, and waits
/// until the NOTIFY transaction has ended.
async fn notify_until_done(
    ctx: &Ctx,
    id: SubId,
    effective_by: Option<u32>,
    stop: &CancellationToken,
) {
    loop {
        match notify_one(ctx, id, effective_by).await {
            Ok(Some(done)) => {
                let _ = done.await;
                return;
            }
            Ok(None) => return,
            Err(e) => {
                counter!("store_errors_total", "op" => "fanout").increment(1);
                warn!(%e, sub = %id, "fan-out step failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("resolve: {0}")]
    Resolve(#[from] uaprof_api::ResolveError),
}

/// `Ok(Some(rx))`: a NOTIFY was handed to the engine and `rx` fires when it ends;
/// `Ok(None)`: nothing to send (gone, expired, or the subscriber already has this state).
async fn notify_one(
    ctx: &Ctx,
    id: SubId,
    effective_by: Option<u32>,
) -> Result<Option<oneshot::Receiver<()>>, StepError> {
    let Some(sub) = ctx.store.get(id).await? else {
        counter!("fanout_notifies_total", "result" => "gone").increment(1);
        return Ok(None);
    };
    let now_ms = ctx.clock.now_ms();
    let remaining = sub.expires_at_ms.saturating_sub(now_ms) / 1000;
    if remaining == 0 {
        // The expiry sweep owns this one.
        return Ok(None);
    }
    let resolution = ctx
        .resolver
        .resolve(&ResolveRequest {
            profile_type: sub.profile_type,
            subject: sub.subject.clone(),
            vendor: sub.vendor.clone(),
            model: sub.model.clone(),
            version: sub.version.clone(),
        })
        .await?;
    let etag = resolution.entity_tag();
    if sub.confirmed_etag.as_deref() == Some(etag.as_str()) {
        counter!("fanout_notifies_total", "result" => "unchanged").increment(1);
        return Ok(None);
    }
    let route = match crate::notify::route(ctx, &sub).await {
        Ok(r) => r,
        Err(e) => {
            warn!(%e, sub = %id, "unroutable subscriber; removing");
            ctx.store.remove(id).await?;
            counter!("subscriptions_removed_total", "reason" => "unroutable").increment(1);
            return Ok(None);
        }
    };
    let Some(cseq) = ctx
        .store
        .next_cseq(id, Some(resolution.depends_on.clone()))
        .await?
    else {
        return Ok(None);
    };
    let expires = u32::try_from(remaining).unwrap_or(u32::MAX);
    let mut out = crate::notify::prepare(
        ctx,
        &sub,
        &route,
        cseq,
        SubState::Active { expires },
        &resolution,
        effective_by,
        NotifyKind::Change,
    )
    .await;
    let (tx, rx) = oneshot::channel();
    out.done = Some(tx);
    counter!("fanout_notifies_total", "result" => "sent").increment(1);
    if ctx.engine.send(EngineMsg::Notify(out)).await.is_err() {
        return Ok(None);
    }
    Ok(Some(rx))
}

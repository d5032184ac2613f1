//! One [`Want`] to one NOTIFY: the subscription's state when it leaves, in the dialog's turn.
//!
//! The engine reports how the NOTIFY ended (`crate::wire::Origin::Pipeline`), and the
//! store-update worker ends the turn and queues what follows (a retry, a wanted NOTIFY).

use std::time::{Duration, Instant};

use metrics::counter;
use profile_event::state::SubState;
use tracing::{debug, warn};
use uaprof_api::{ResolveError, ResolveRequest};

use super::{MAX_ATTEMPTS, Priority, Want, Why, backoff};
use crate::Ctx;
use crate::store::{PackageName, StoreError, SubId, Turn};
use crate::wire::{EngineMsg, NotifyKind, Origin, OutNotify};

/// How soon to try again when another NOTIFY of the dialog is in flight: about a round trip.
const TURN_RETRY: Duration = Duration::from_millis(250);
/// Back-off after a store failure (the content tier's are in [`backoff`]).
const STORE_RETRY: Duration = Duration::from_millis(500);

fn count(why: Why, result: &'static str) {
    counter!("fanout_notifies_total", "result" => result, "why" => why.label()).increment(1);
}

/// Queues `want` again after `delay` (keeping its place in a walk), at `priority`.
async fn again(ctx: &Ctx, want: Want, priority: Priority, needs_credit: bool, delay: Duration) {
    ctx.pipeline
        .push(priority, want, needs_credit, Instant::now() + delay)
        .await;
}

/// Whether a want that failed `attempt` times is given up. A follow-up never is: its phone
/// was told of no document yet, and nothing else would tell it (the subscription's next
/// change may be months away), so it keeps trying at the longest back-off while the
/// subscription lives.
fn gives_up(why: Why, attempt: u8) -> bool {
    attempt >= MAX_ATTEMPTS && why != Why::FollowUp
}

/// Queues `want` again with back-off after a failure that may pass (the content tier or DNS
/// unavailable), until [`MAX_ATTEMPTS`]; then this NOTIFY is given up, the subscription kept
/// (a follow-up is never given up, see [`gives_up`]).
async fn retry_later(
    ctx: &Ctx,
    mut want: Want,
    priority: Priority,
    credited: bool,
    what: &str,
    e: String,
) {
    want.attempt = want.attempt.saturating_add(1);
    if gives_up(want.why, want.attempt) {
        warn!(sub = %want.sub, error = %e, "{what}; giving up on this NOTIFY");
        return count(want.why, "gave_up");
    }
    // The back-off stops growing at the last attempt's.
    want.attempt = want.attempt.min(MAX_ATTEMPTS - 1);
    debug!(sub = %want.sub, error = %e, "{what}; retrying");
    let delay = backoff(want.attempt);
    again(ctx, want, priority, credited, delay).await;
}

/// Delivers one want; `credited`: a fetch credit was spent on it (given back if unused).
pub(crate) async fn deliver(ctx: &Ctx, want: Want, priority: Priority, credited: bool) {
    let refund = |ctx: &Ctx| {
        if credited {
            ctx.pipeline.credits().refund();
        }
    };
    let id = want.sub;
    let mut sub = match ctx.store.get(id).await {
        Ok(Some(sub)) => sub,
        Ok(None) => {
            refund(ctx);
            return count(want.why, "gone");
        }
        Err(e) => {
            refund(ctx);
            counter!("store_errors_total", "op" => "deliver").increment(1);
            warn!(%e, sub = %id, "cannot read a subscription to notify; retrying");
            return again(ctx, want, priority, credited, STORE_RETRY).await;
        }
    };
    let now_ms = ctx.clock.now_ms();
    let remaining = sub.expires_at_ms.saturating_sub(now_ms) / 1000;
    if remaining == 0 {
        // The expiry sweep ends it.
        refund(ctx);
        return count(want.why, "expired");
    }
    let request = ResolveRequest {
        profile_type: sub.profile_type,
        subject: sub.subject.clone(),
        vendor: sub.vendor.clone(),
        model: sub.model.clone(),
        version: sub.version.clone(),
    };
    let resolution = match ctx.resolver.resolve(&request).await {
        Ok(r) => r,
        Err(ResolveError::Invalid(e)) => {
            // Asking again gives the same answer: skip this one, never stall the rest.
            refund(ctx);
            warn!(sub = %id, error = %e, "subscription cannot be resolved; skipped");
            return count(want.why, "unresolvable");
        }
        Err(e) => {
            refund(ctx);
            let what = "content tier unavailable";
            return retry_later(ctx, want, priority, credited, what, e.to_string()).await;
        }
    };
    let etag = resolution.entity_tag();
    if sub.confirmed_etag.as_deref() == Some(etag.as_str()) {
        refund(ctx);
        return count(want.why, "unchanged");
    }
    let check_sync = sub.package == PackageName::CheckSync;
    if check_sync && let Some(target) = &resolution.resync {
        // The operator's target wins over what a plug-and-play SUBSCRIBE remembered.
        sub = crate::checksync::for_target(sub, target);
    }
    let route = match crate::notify::route(ctx, &sub).await {
        Ok(r) => r,
        Err(e) if e.is_transient() => {
            // A DNS failure says nothing about the subscriber: try again later, and leave
            // the subscription to expire if it never resolves again.
            refund(ctx);
            let what = "next hop does not resolve";
            return retry_later(ctx, want, priority, credited, what, e.to_string()).await;
        }
        Err(e) if check_sync => {
            // A record is no dialog: it waits for its target to be corrected.
            refund(ctx);
            counter!("check_sync_notifies_total", "outcome" => "unroutable").increment(1);
            warn!(%e, device = %sub.subject, "check-sync target unroutable; not sent");
            return count(want.why, "unroutable");
        }
        Err(e) => {
            refund(ctx);
            warn!(%e, sub = %id, "unroutable subscriber; removing");
            if let Err(e) = ctx.store.remove(id).await {
                warn!(%e, sub = %id, "removal failed");
            }
            counter!("subscriptions_removed_total", "reason" => "unroutable").increment(1);
            return count(want.why, "unroutable");
        }
    };
    let cseq = match ctx
        .store
        .begin_notify(id, Some(resolution.depends_on.clone()))
        .await
    {
        Ok(Turn::Granted(c)) => c,
        Ok(Turn::Busy) => {
            // Another NOTIFY of this dialog is in flight; look again when it has ended.
            refund(ctx);
            count(want.why, "busy");
            return again(ctx, want, priority, credited, TURN_RETRY).await;
        }
        Ok(Turn::Gone) => {
            refund(ctx);
            return count(want.why, "gone");
        }
        Err(e) => {
            refund(ctx);
            counter!("store_errors_total", "op" => "begin_notify").increment(1);
            warn!(%e, sub = %id, "cannot take the dialog's turn; retrying");
            return again(ctx, want, priority, credited, STORE_RETRY).await;
        }
    };
    let expires = u32::try_from(remaining).unwrap_or(u32::MAX);
    if check_sync {
        let out =
            crate::notify::check_sync(ctx, &sub, &route, cseq, etag, resolution.resync.as_ref());
        return send(ctx, out, want, priority).await;
    }
    let kind = match want.why {
        Why::Change => NotifyKind::Change,
        _ => NotifyKind::Refresh,
    };
    let out = crate::notify::prepare(
        ctx,
        &sub,
        &route,
        cseq,
        SubState::Active { expires },
        &resolution,
        want.effective_by,
        kind,
    )
    .await;
    send(ctx, out, want, priority).await;
}

/// Hands a built NOTIFY to the engine, with its share of the in-flight budget.
async fn send(ctx: &Ctx, mut out: OutNotify, want: Want, priority: Priority) {
    // In-flight memory is a budget of bytes: a NOTIFY to a phone that is gone holds its
    // share until Timer F, without stopping the others.
    let kib = u32::try_from(out.bytes.len() / 1024 + 1).unwrap_or(u32::MAX);
    let Ok(budget) = std::sync::Arc::clone(&ctx.inflight_budget)
        .acquire_many_owned(kib)
        .await
    else {
        return;
    };
    out.budget = Some(budget);
    let why = want.why;
    out.origin = Origin::Pipeline(Box::new(want), priority);
    count(why, "sent");
    // An error means the engine stopped (shutdown): the turn lapses, the want ends here.
    let _ = ctx.engine.send(EngineMsg::Notify(out)).await;
}

/// What the store-update worker does once a NOTIFY of `sub` has ended and its turn is over:
/// with `retry` (5xx/408/486), the want is queued again with back-off, up to
/// [`MAX_ATTEMPTS`]; otherwise, when a NOTIFY was `wanted` meanwhile, one carrying the
/// dialog's newest state is queued. Dropping a want ends it (a walk counts it done).
pub(crate) async fn after(
    ctx: &Ctx,
    sub: SubId,
    want: Option<(Box<Want>, Priority)>,
    retry: bool,
    wanted: bool,
) {
    if retry && let Some((mut w, priority)) = want {
        w.attempt = w.attempt.saturating_add(1);
        if !gives_up(w.why, w.attempt) {
            counter!("notify_retries_total").increment(1);
            w.attempt = w.attempt.min(MAX_ATTEMPTS - 1);
            let delay = backoff(w.attempt);
            // A follow-up stays one (and so is never given up); anything else is a retry.
            if w.why != Why::FollowUp {
                w.why = Why::Retry;
            }
            let priority = priority.max(Priority::Change);
            ctx.pipeline
                .push(priority, *w, true, Instant::now() + delay)
                .await;
            return;
        }
        count(w.why, "gave_up");
        return;
    }
    if wanted {
        ctx.pipeline
            .push(
                Priority::Background,
                Want::new(sub, Why::Wanted),
                true,
                Instant::now(),
            )
            .await;
    }
}

/// A retry for a NOTIFY that answered a SUBSCRIBE (it has no want of its own).
pub(crate) fn retry_of(id: SubId) -> (Box<Want>, Priority) {
    (Box::new(Want::new(id, Why::Retry)), Priority::Background)
}

/// Maps a store error during an outcome write to a log line (the turn then lapses).
pub(crate) fn outcome_failed(e: &StoreError, id: SubId) {
    counter!("store_errors_total", "op" => "end_notify").increment(1);
    warn!(%e, sub = %id, "NOTIFY outcome not recorded; the dialog's turn lapses by itself");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_follow_up_is_never_given_up() {
        for why in [Why::Change, Why::Wanted, Why::Retry] {
            assert!(!gives_up(why, MAX_ATTEMPTS - 1));
            assert!(gives_up(why, MAX_ATTEMPTS), "{why:?}");
        }
        assert!(!gives_up(Why::FollowUp, MAX_ATTEMPTS));
        assert!(!gives_up(Why::FollowUp, u8::MAX));
    }
}

//! The expiry sweep: subscriptions past their expiry get `terminated;reason=timeout` and are
//! removed (RFC 6665 §4.2.2). `take_due` removes atomically, so a subscription is ended once.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use profile_event::state::{SubState, TerminationReason};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uaprof_api::Resolution;

use crate::Ctx;
use crate::store::PackageName;
use crate::wire::{EngineMsg, NotifyKind};

/// Subscriptions ended per store call: bounds one write and one burst of NOTIFYs.
const SWEEP_BATCH: usize = 1000;
/// Longest sleep between sweeps; also how late an expiry can be noticed after a clock jump.
const MAX_IDLE: Duration = Duration::from_secs(1);

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let now = ctx.clock.now_ms();
        let due = match ctx.store.take_due(now, SWEEP_BATCH).await {
            Ok(d) => d,
            Err(e) => {
                counter!("store_errors_total", "op" => "expiry").increment(1);
                warn!(%e, "expiry sweep failed");
                Vec::new()
            }
        };
        let full = due.len() == SWEEP_BATCH;
        for sub in due {
            if sub.package == PackageName::CheckSync {
                // A remembered plug-and-play phone has no dialog to end: it is forgotten.
                counter!("check_sync_forgotten_total").increment(1);
                continue;
            }
            counter!("subscriptions_removed_total", "reason" => "expired").increment(1);
            let state = SubState::Terminated {
                reason: TerminationReason::Timeout,
                retry_after: None,
            };
            let cseq = crate::store::next_cseq(sub.local_cseq, ctx.clock.now_ms());
            let route = match crate::notify::route(&ctx, &sub).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(%e, sub = %sub.id, "cannot route timeout NOTIFY");
                    continue;
                }
            };
            let out = crate::notify::prepare(
                &ctx,
                &sub,
                &route,
                cseq,
                state,
                &Resolution::default(),
                None,
                NotifyKind::Terminate,
            )
            .await;
            if ctx.engine.send(EngineMsg::Notify(out)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        let next = ctx.store.next_expiry().await.ok().flatten();
        let wait = next
            .map(|at| Duration::from_millis(at.saturating_sub(ctx.clock.now_ms())))
            .unwrap_or(MAX_IDLE)
            .clamp(Duration::from_millis(10), MAX_IDLE);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

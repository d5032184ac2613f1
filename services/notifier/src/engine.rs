//! The engine: one task that owns the transaction layer and every NOTIFY in flight.
//!
//! Listeners hand it parsed messages; it runs them through the sans-IO server transactions
//! (so a retransmitted SUBSCRIBE is absorbed or answered from cache, never handled twice),
//! starts a bounded handler task per new SUBSCRIBE, and turns handler replies and NOTIFYs
//! from fan-out and expiry into wire messages and client transactions. Keeping all
//! transaction state on one task makes it lock-free; the heavy work (parsing, store writes,
//! resolving, building bodies) happens on other tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{counter, gauge, histogram};
use sip_core::message;
use sip_core::transaction::{
    ClientAction, ClientEvent, ClientId, ClientTransactions, ServerKey, ServerTransactions,
    ServerVerdict, Timers,
};
use sip_core::transport::Peer;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Ctx;
use crate::limits::SourceBuckets;
use crate::store::SubId;
use crate::transport::Outbound;
use crate::wire::{
    CheckSyncRequest, EngineMsg, NotifyKind, Origin, OutNotify, Reply, overload_response,
    retry_after_in,
};

/// Capacity of the engine's inbound channel. At 20k messages/s this is about half a second of
/// traffic: enough to ride out a scheduling hiccup, small enough that a saturated engine sheds
/// (with 503) within a retransmission interval instead of queueing stale work.
pub const ENGINE_QUEUE: usize = 8192;

/// The NOTIFY transaction of a dialog now in flight (its details are in `sent`).
struct InFlight {
    client: ClientId,
    /// At most one NOTIFY waits behind the one in flight (RFC 6665 §4.2.2: one outstanding
    /// NOTIFY per dialog); a newer one replaces it, which is how bursts coalesce.
    queued: Option<OutNotify>,
}

struct Sent {
    sub: SubId,
    etag: Option<String>,
    terminal: bool,
    kind: NotifyKind,
    at: Instant,
    origin: Origin,
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
    peer: Peer,
    resend: Option<Box<CheckSyncRequest>>,
}

pub struct Engine {
    ctx: Arc<Ctx>,
    out: Arc<Outbound>,
    rx: mpsc::Receiver<EngineMsg>,
    tx: mpsc::Sender<EngineMsg>,
    server: ServerTransactions,
    client: ClientTransactions,
    sent: HashMap<ClientId, Sent>,
    inflight: HashMap<SubId, InFlight>,
    handlers: Arc<Semaphore>,
    max_handlers: usize,
    gate: DelayGate,
    sources: SourceBuckets,
    updates: Option<mpsc::Sender<StoreUpdate>>,
}

/// Sheds a share of new SUBSCRIBEs while the handlers' delay *stands* above a target. The
/// test is CoDel's: the smallest delay of an interval, so a burst that drains within it costs
/// nothing. The share is graded (PIE-like): it grows each interval the delay stands, in
/// proportion to how far above the target it is, and falls back each interval it does not,
/// so the 503s follow the overload instead of switching everything off and on (RFC 6357
/// explains why all-or-nothing rejection oscillates). The SUBSCRIBEs taken are answered
/// before the phones retransmit (T1); a permit count alone sheds only once thousands wait.
struct DelayGate {
    target: Duration,
    interval: Duration,
    window_start: Instant,
    window_min: Option<Duration>,
    /// Share of new SUBSCRIBEs refused, 0..=1.
    share: f64,
}

/// How much the shed share grows per interval with the delay at twice the target.
const SHED_STEP_UP: f64 = 0.2;
/// How much it falls per interval once the delay is back under the target.
const SHED_STEP_DOWN: f64 = 0.05;

impl DelayGate {
    fn new(target: Duration, now: Instant) -> Self {
        Self {
            target,
            interval: (target / 2).max(Duration::from_millis(50)),
            window_start: now,
            window_min: None,
            share: 0.0,
        }
    }

    fn observe(&mut self, delay: Duration, now: Instant) {
        self.window_min = Some(self.window_min.map_or(delay, |m| m.min(delay)));
        self.roll(now, false);
    }

    /// Whether to shed this SUBSCRIBE: `coin` is uniform in 0..1, `idle` says no handler is
    /// running (no delay can stand then).
    fn shed(&mut self, now: Instant, idle: bool, coin: f64) -> bool {
        self.roll(now, idle);
        coin < self.share
    }

    fn roll(&mut self, now: Instant, idle: bool) {
        if idle {
            self.share = 0.0;
        }
        if now.duration_since(self.window_start) < self.interval {
            return;
        }
        // A window with no answers keeps the share: handlers that answer nothing for a whole
        // interval are not evidence that the backlog has gone.
        if let Some(min) = self.window_min.take() {
            let over = min.as_secs_f64() / self.target.as_secs_f64();
            self.share = if over > 1.0 {
                (self.share + SHED_STEP_UP * (over - 1.0).min(5.0)).min(1.0)
            } else {
                (self.share - SHED_STEP_DOWN).max(0.0)
            };
        }
        self.window_start = now;
    }
}

/// Store writes that follow a NOTIFY's outcome. The engine must never wait on the store, so
/// it hands them to [`run_store_updates`] through a bounded channel.
enum StoreUpdate {
    /// The NOTIFY's transaction ended without ending the subscription: end the dialog's
    /// turn (confirming the entity tag on a 2xx), then retry it or send what was wanted.
    End {
        sub: SubId,
        confirmed: Option<String>,
        want: Option<(Box<crate::pipeline::Want>, crate::pipeline::Priority)>,
        retry: bool,
    },
    /// The NOTIFY failed in a way that ends the subscription (RFC 6665 §4.2.2).
    Remove(SubId),
}

/// Queued NOTIFY outcomes waiting for the store: a few seconds of completions at full rate,
/// and a city power-up's worth of first NOTIFYs (16k overflowed in a 100k-in-10-s storm on two
/// cores, costing lost confirmations). About 100 bytes each.
const STORE_UPDATE_QUEUE: usize = 131_072;
/// Outcome writes in flight at once: enough for the journal's group commit (or a Redis
/// pipeline) to batch them, few enough to bound tasks and memory.
const STORE_UPDATE_CONCURRENCY: usize = 256;

/// Applies NOTIFY outcomes to the store with bounded concurrency, and queues what follows.
async fn run_store_updates(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<StoreUpdate>) {
    let permits = Arc::new(Semaphore::new(STORE_UPDATE_CONCURRENCY));
    while let Some(update) = rx.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let _permit = permit;
            match update {
                StoreUpdate::End {
                    sub,
                    confirmed,
                    want,
                    retry,
                } => match ctx.store.end_notify(sub, confirmed).await {
                    Ok(wanted) => {
                        crate::pipeline::deliver::after(&ctx, sub, want, retry, wanted).await
                    }
                    Err(e) => crate::pipeline::deliver::outcome_failed(&e, sub),
                },
                StoreUpdate::Remove(id) => {
                    if let Err(e) = ctx.store.remove(id).await {
                        counter!("store_errors_total", "op" => "remove").increment(1);
                        tracing::warn!(%e, "NOTIFY outcome not recorded");
                    }
                }
            }
        });
    }
}

impl Engine {
    pub fn new(
        ctx: Arc<Ctx>,
        out: Arc<Outbound>,
        rx: mpsc::Receiver<EngineMsg>,
        tx: mpsc::Sender<EngineMsg>,
        timers: Timers,
    ) -> Self {
        let max_handlers = ctx.config.max_pending_requests;
        let max_server_transactions = ctx.config.max_server_transactions;
        let gate = DelayGate::new(ctx.config.shed_delay, Instant::now());
        // Validated with the config; a bad prefix cannot reach here.
        let exempt = ctx.config.source_exempt_prefixes().unwrap_or_default();
        let sources = SourceBuckets::new(ctx.config.source_rate, ctx.config.source_burst, exempt);
        Self {
            ctx,
            out,
            rx,
            tx,
            server: ServerTransactions::with_limit(timers, max_server_transactions),
            client: ClientTransactions::new(timers),
            sent: HashMap::new(),
            inflight: HashMap::new(),
            handlers: Arc::new(Semaphore::new(max_handlers)),
            max_handlers,
            gate,
            sources,
            updates: None,
        }
    }

    fn record(&mut self, update: StoreUpdate) {
        let Some(tx) = &self.updates else { return };
        if tx.try_send(update).is_err() {
            // A lost confirmation costs one redundant NOTIFY if a change is redelivered; a
            // lost removal leaves the dialog to expiry. Both are counted, neither blocks SIP.
            counter!("sip_shed_total", "reason" => "store_update_queue_full").increment(1);
        }
    }

    /// Runs until `stop` fires, or until `drain` has fired and nothing is left in flight.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken) {
        let (tx, rx) = mpsc::channel(STORE_UPDATE_QUEUE);
        self.updates = Some(tx);
        tokio::spawn(run_store_updates(Arc::clone(&self.ctx), rx));
        let mut draining = false;
        loop {
            if draining && self.is_idle() {
                info!("engine drained");
                return;
            }
            let deadline = [self.server.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    info!(in_flight = self.client.len(), "engine draining");
                }
                msg = self.rx.recv() => match msg {
                    Some(m) => {
                        self.on_msg(m, draining);
                        // Take whatever else is already queued before looking at timers.
                        for _ in 0..256 {
                            match self.rx.try_recv() {
                                Ok(m) => self.on_msg(m, draining),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = sleep => {}
            }
            self.on_timers(Instant::now());
        }
    }

    fn is_idle(&self) -> bool {
        self.client.is_empty() && self.handlers.available_permits() == self.max_handlers
    }

    fn on_msg(&mut self, msg: EngineMsg, draining: bool) {
        match msg {
            EngineMsg::Inbound {
                msg: rsip::SipMessage::Request(req),
                peer,
                received,
            } => self.on_request(req, peer, received, draining),
            EngineMsg::Inbound {
                msg: rsip::SipMessage::Response(resp),
                ..
            } => self.on_response(&resp),
            EngineMsg::Reply(reply) => {
                let now = Instant::now();
                self.gate.observe(now.duration_since(reply.started), now);
                self.server
                    .respond(&reply.key, reply.bytes.clone(), reply.dest.addr, true, now);
                self.out.send(reply.dest, reply.bytes);
                if let Some(n) = reply.notify {
                    self.send_notify(n);
                }
            }
            EngineMsg::Notify(n) => self.send_notify(n),
        }
    }

    fn on_request(&mut self, req: rsip::Request, peer: Peer, received: Instant, draining: bool) {
        let now = Instant::now();
        let method = req.method;
        if method == rsip::Method::Ack {
            // ACK only exists for INVITE transactions, which we never accept.
            return;
        }
        // Where answers go (computed only for requests that get one, not retransmissions).
        let answer_to = |req: &rsip::Request| Peer {
            addr: sip_core::via::response_destination(req, peer),
            ..peer
        };
        let key = match self.server.on_request(&req, peer, now) {
            ServerVerdict::New(key) => key,
            ServerVerdict::Merged(key) => {
                counter!("sip_merged_requests_total").increment(1);
                let resp = message::response_for(&req, 482, Some("Loop Detected"), None);
                return self.reply_now(key, answer_to(&req), message::to_bytes(&resp.into()));
            }
            ServerVerdict::Absorbed => {
                counter!("sip_retransmissions_absorbed_total").increment(1);
                return;
            }
            ServerVerdict::Replay {
                bytes,
                to,
                transport,
            } => {
                counter!("sip_retransmissions_absorbed_total").increment(1);
                self.out.send(
                    Peer {
                        transport,
                        addr: to,
                    },
                    bytes,
                );
                return;
            }
            ServerVerdict::Full => {
                counter!("sip_shed_total", "reason" => "transaction_table_full").increment(1);
                return self.out.send(answer_to(&req), overload_response(&req));
            }
            _ => return,
        };
        let dest = answer_to(&req);
        counter!("sip_requests_total", "method" => method_label(&method)).increment(1);
        match method {
            rsip::Method::Subscribe => {
                if draining {
                    let bytes = overload_response(&req);
                    return self.reply_now(key, dest, bytes);
                }
                // New dialogs only: a refresh belongs to a subscription already admitted.
                let new_dialog = sip_core::dialog::dialog_id_of(&req).is_none();
                if new_dialog && !self.sources.admit(peer.addr.ip(), now) {
                    counter!("sip_shed_total", "reason" => "source_rate").increment(1);
                    let bytes = overload_response(&req);
                    return self.reply_now(key, dest, bytes);
                }
                let idle = self.handlers.available_permits() == self.max_handlers;
                if self.gate.shed(now, idle, rand::random::<f64>()) {
                    counter!("sip_shed_total", "reason" => "queue_delay").increment(1);
                    // A short wait: the backlog behind this is under a second of work.
                    let mut resp = message::response_for(&req, 503, None, None);
                    resp.headers.push(retry_after_in(2, 12));
                    return self.reply_now(key, dest, message::to_bytes(&resp.into()));
                }
                let Ok(permit) = self.handlers.clone().try_acquire_owned() else {
                    counter!("sip_shed_total", "reason" => "handlers_busy").increment(1);
                    let bytes = overload_response(&req);
                    return self.reply_now(key, dest, bytes);
                };
                let ctx = Arc::clone(&self.ctx);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let (bytes, notify) = crate::subscribe::handle(&ctx, &req, peer).await;
                    let _ = tx
                        .send(EngineMsg::Reply(Reply {
                            started: received,
                            key,
                            dest,
                            bytes,
                            notify,
                        }))
                        .await;
                });
            }
            rsip::Method::Options => {
                let mut resp = message::response_for(&req, 200, None, None);
                crate::subscribe::add_capabilities(&mut resp);
                self.reply_now(key, dest, message::to_bytes(&resp.into()));
            }
            rsip::Method::Cancel => {
                // Our transactions answer at once; nothing is left to cancel.
                let resp = message::response_for(&req, 481, None, None);
                self.reply_now(key, dest, message::to_bytes(&resp.into()));
            }
            _ => {
                let mut resp = message::response_for(&req, 405, None, None);
                resp.headers
                    .push(rsip::Header::Allow(rsip::headers::Allow::from(
                        "SUBSCRIBE, OPTIONS",
                    )));
                self.reply_now(key, dest, message::to_bytes(&resp.into()));
            }
        }
    }

    fn reply_now(&mut self, key: ServerKey, dest: Peer, bytes: Bytes) {
        self.server
            .respond(&key, bytes.clone(), dest.addr, true, Instant::now());
        self.out.send(dest, bytes);
    }

    fn send_notify(&mut self, n: OutNotify) {
        let Some(f) = self.inflight.get_mut(&n.sub) else {
            return self.start_notify(n);
        };
        // The store's turn keeps one NOTIFY per dialog in flight; only a terminated NOTIFY
        // (which needs no turn: the subscription is already gone) can meet another here.
        // Nothing follows the end of a dialog, and a NOTIFY with the content already on its
        // way (or queued) tells the subscriber nothing new: both are merged away.
        let current = self.sent.get(&f.client);
        let ended =
            current.is_some_and(|c| c.terminal) || f.queued.as_ref().is_some_and(|q| q.terminal);
        let same = !n.terminal
            && n.etag.is_some()
            && (current.is_some_and(|c| c.etag == n.etag)
                || f.queued.as_ref().is_some_and(|q| q.etag == n.etag));
        let dropped = if ended || same {
            Some(n)
        } else {
            f.queued.replace(n)
        };
        if let Some(d) = dropped {
            counter!("notify_coalesced_total").increment(1);
            if !matches!(d.origin, Origin::Terminal) {
                // It held the dialog's turn: give it back.
                self.record(StoreUpdate::End {
                    sub: d.sub,
                    confirmed: None,
                    want: None,
                    retry: false,
                });
            }
        }
    }

    fn start_notify(&mut self, n: OutNotify) {
        let now = Instant::now();
        let id = self.client.start(n.branch, n.bytes.clone(), n.peer, now);
        self.out.send(n.peer, n.bytes);
        counter!("notify_sent_total", "kind" => n.kind.label()).increment(1);
        gauge!("notifier_notifies_inflight", "priority" => n.origin.priority_label())
            .increment(1.0);
        self.sent.insert(
            id,
            Sent {
                sub: n.sub,
                etag: n.etag,
                terminal: n.terminal,
                kind: n.kind,
                at: now,
                origin: n.origin,
                budget: n.budget,
                peer: n.peer,
                resend: n.resend,
            },
        );
        self.inflight.insert(
            n.sub,
            InFlight {
                client: id,
                queued: None,
            },
        );
        gauge!("notify_in_flight").set(self.sent.len() as f64);
    }

    fn on_response(&mut self, resp: &rsip::Response) {
        if let Some(ClientEvent::Final { id, status }) =
            self.client.on_response(resp, Instant::now())
        {
            if (status == 401 || status == 407) && self.answer_challenge(id, status, resp) {
                return;
            }
            self.finish(id, Some(status));
        }
    }

    /// Answers a check-sync NOTIFY's digest challenge once, with the operator's credentials
    /// for the phone: the same request (Call-ID, tags) on a new branch with the next CSeq.
    /// False when there is nothing to answer with, or it was answered before (a wrong
    /// password is reported, not retried).
    fn answer_challenge(&mut self, id: ClientId, status: u16, resp: &rsip::Response) -> bool {
        let Some(sent) = self.sent.get_mut(&id) else {
            return false;
        };
        let Some(mut request) = sent.resend.take() else {
            return false;
        };
        let (challenge_header, answer_header) = if status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let outcome = match (&request.credentials, request.answered) {
            (None, _) => Err(("no_credentials", "no credentials for the phone")),
            (Some(_), true) => Err(("credentials_refused", "the phone refused the answer")),
            (Some((user, password)), false) => {
                let is_digest = |v: &&str| {
                    v.trim_start()
                        .get(..7)
                        .is_some_and(|d| d.eq_ignore_ascii_case("digest "))
                };
                let challenges: Vec<&str> = message::headers_all(&resp.headers, challenge_header)
                    .filter(is_digest)
                    .collect();
                let answer = |c: &&str| {
                    uaprof_api::digest::answer_challenge(
                        c,
                        "NOTIFY",
                        &request.request_uri,
                        user,
                        password,
                        1,
                    )
                };
                // SHA-256 first when the phone offers both (RFC 8760 §2.4).
                let sha256 = challenges
                    .iter()
                    .filter(|c| c.to_ascii_uppercase().contains("SHA-256"))
                    .find_map(|c| answer(c).ok());
                match (sha256, challenges.first()) {
                    (Some(a), _) => Ok(a),
                    (None, Some(c)) => answer(c).map_err(|e| ("unanswerable", e)),
                    (None, None) => Err(("no_challenge", "no Digest challenge")),
                }
            }
        };
        let answer = match outcome {
            Ok(a) => a,
            Err((label, why)) => {
                counter!("check_sync_auth_failed_total", "reason" => label).increment(1);
                info!(sub = %sent.sub, status, reason = why, "check-sync NOTIFY challenged; not answered");
                return false;
            }
        };
        let Some(sent) = self.sent.remove(&id) else {
            return false;
        };
        gauge!("notifier_notifies_inflight", "priority" => sent.origin.priority_label())
            .decrement(1.0);
        request.cseq = request.cseq.saturating_add(1);
        request.answered = true;
        let branch = message::new_branch();
        let bytes = Bytes::from(request.build(&branch, Some((answer_header, &answer))));
        counter!("check_sync_challenges_answered_total").increment(1);
        let queued = self.end_inflight(sent.sub, id);
        self.start_notify(OutNotify {
            sub: sent.sub,
            peer: sent.peer,
            branch,
            bytes,
            etag: sent.etag,
            terminal: sent.terminal,
            kind: sent.kind,
            origin: sent.origin,
            budget: sent.budget,
            resend: Some(request),
        });
        if let Some(q) = queued
            && let Some(f) = self.inflight.get_mut(&sent.sub)
        {
            f.queued = Some(q);
        }
        true
    }

    fn on_timers(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        for action in self.client.handle_timeout(now) {
            match action {
                ClientAction::Retransmit { peer, bytes } => {
                    counter!("notify_retransmissions_total").increment(1);
                    self.out.send(peer, bytes);
                }
                ClientAction::TimedOut { id } => self.finish(id, None),
                _ => {}
            }
        }
        gauge!("sip_server_transactions").set(self.server.len() as f64);
    }

    /// Ends the dialog's NOTIFY transaction `id` in flight, returning the NOTIFY queued
    /// behind it.
    fn end_inflight(&mut self, sub: SubId, id: ClientId) -> Option<OutNotify> {
        match self.inflight.remove(&sub) {
            Some(f) if f.client == id => f.queued,
            Some(other) => {
                // Not ours (should not happen): put it back untouched.
                self.inflight.insert(sub, other);
                None
            }
            None => None,
        }
    }

    /// A NOTIFY transaction ended with `status` (`None`: Timer F fired).
    fn finish(&mut self, id: ClientId, status: Option<u16>) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        gauge!("notify_in_flight").set(self.sent.len() as f64);
        gauge!("notifier_notifies_inflight", "priority" => sent.origin.priority_label())
            .decrement(1.0);
        let outcome = match status {
            Some(s) if (200..300).contains(&s) => "2xx",
            Some(_) => "failure",
            None => "timeout",
        };
        counter!("notify_completed_total", "kind" => sent.kind.label(), "outcome" => outcome)
            .increment(1);
        histogram!("notify_round_trip_seconds").record(sent.at.elapsed().as_secs_f64());
        let queued = self.end_inflight(sent.sub, id);
        let check_sync = sent.kind == NotifyKind::CheckSync;
        if check_sync {
            let outcome = match status {
                Some(401 | 407) => "auth_failed",
                _ => outcome,
            };
            counter!("check_sync_notifies_total", "outcome" => outcome).increment(1);
        }
        // A check-sync record is no dialog a failure could end: it stays for the next change
        // (and is forgotten when its time is up).
        let remove = !check_sync
            && match status {
                None => true,
                Some(s) => profile_event::state::removes_subscription(s),
            };
        if let Some(next) = queued {
            self.start_notify(next);
        }
        let want = match sent.origin {
            // A terminated NOTIFY's subscription is gone already: nothing follows.
            Origin::Terminal => return,
            Origin::Subscribe => None,
            Origin::Pipeline(want, priority) => Some((want, priority)),
        };
        if remove {
            debug!(sub = %sent.sub, ?status, "NOTIFY failed; removing subscription");
            counter!("subscriptions_removed_total", "reason" => "notify_failed").increment(1);
            // The turn goes with the subscription; a walk's want ends here.
            self.record(StoreUpdate::Remove(sent.sub));
            return;
        }
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        // RFC 6665 leaves the rest to the notifier: a busy or failing phone (5xx, 408, 486)
        // is asked again later; any other answer ends this NOTIFY's attempts.
        let retry = status.is_some_and(|s| s >= 500 || s == 408 || s == 486);
        let want = match want {
            None if retry => Some(crate::pipeline::deliver::retry_of(sent.sub)),
            w => w,
        };
        self.record(StoreUpdate::End {
            sub: sent.sub,
            confirmed: if ok { sent.etag } else { None },
            want,
            retry,
        });
    }
}

fn method_label(m: &rsip::Method) -> &'static str {
    match m {
        rsip::Method::Subscribe => "SUBSCRIBE",
        rsip::Method::Options => "OPTIONS",
        rsip::Method::Notify => "NOTIFY",
        rsip::Method::Cancel => "CANCEL",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The share the gate sheds now, measured with evenly spread coins.
    fn share(gate: &mut DelayGate, now: Instant) -> f64 {
        let shed = (0..100)
            .filter(|i| gate.shed(now, false, f64::from(*i) / 100.0))
            .count();
        shed as f64 / 100.0
    }

    #[test]
    fn a_burst_that_drains_within_an_interval_sheds_nothing() {
        let t0 = Instant::now();
        let mut gate = DelayGate::new(200 * MS, t0);
        // One slow answer among fast ones: the interval's minimum is small.
        gate.observe(900 * MS, t0 + 10 * MS);
        gate.observe(5 * MS, t0 + 20 * MS);
        gate.observe(400 * MS, t0 + 120 * MS);
        assert_eq!(share(&mut gate, t0 + 130 * MS), 0.0);
    }

    #[test]
    fn a_standing_delay_sheds_a_growing_share_that_falls_back_gradually() {
        let t0 = Instant::now();
        let mut gate = DelayGate::new(200 * MS, t0);
        let mut shares = Vec::new();
        let mut t = t0;
        for _ in 0..4 {
            // Every answer of each interval takes 300 ms: 1.5 × the target.
            for _ in 0..10 {
                t += 11 * MS;
                gate.observe(300 * MS, t);
            }
            shares.push(share(&mut gate, t));
        }
        assert!(
            shares[0] > 0.0 && shares[0] < 0.5,
            "graded, not a cliff: {shares:?}"
        );
        assert!(
            shares.windows(2).all(|w| w[1] > w[0]),
            "grows while it stands: {shares:?}"
        );
        // No answers for a while: the share holds while handlers are still busy...
        let held = share(&mut gate, t + 300 * MS);
        assert_eq!(held, shares[3]);
        // ...and fast answers lower it step by step, not at once.
        t += 400 * MS;
        gate.observe(3 * MS, t);
        let lower = share(&mut gate, t);
        assert!(lower < held && lower > 0.0, "{lower} after {held}");
    }

    #[test]
    fn an_idle_engine_never_sheds() {
        let t0 = Instant::now();
        let mut gate = DelayGate::new(200 * MS, t0);
        gate.observe(900 * MS, t0 + 10 * MS);
        gate.observe(900 * MS, t0 + 150 * MS);
        assert!(share(&mut gate, t0 + 151 * MS) > 0.0);
        assert!(!gate.shed(t0 + 152 * MS, true, 0.0));
    }
}

//! SUBSCRIBE handling: RFC 6665 subscriptions for the profile event package (RFC 6080),
//! with conditional notification (RFC 5839).
//!
//! Every path ends in exactly one final response. A `200` is only built after the
//! subscription is durable in the store; the first NOTIFY's CSeq is part of the same write.

use std::time::Instant;

use bytes::Bytes;
use metrics::{counter, histogram};
use profile_event::accept::body_mode;
use profile_event::conditional::suppress_matches;
use profile_event::event::{ALLOW_EVENTS, Package, ProfileEvent, parse_event};
use profile_event::expiry::parse_expires;
use profile_event::state::{SubState, TerminationReason};
use rand::RngExt;
use sip_core::dialog::Dialog;
use sip_core::message::{self, has_header, header, header_params, headers_all};
use sip_core::transport::Peer;
use tracing::{Instrument, info_span};
use uaprof_api::{ProfileKey, ProfileType, Resolution, ResolveRequest};

use crate::Ctx;
use crate::config::UnknownSubscriberPolicy;
use crate::notify;
use crate::pipeline::{Priority, Want, Why};
use crate::store::{PackageName, StoreError, SubId, Subscription, Turn, cseq_floor, next_cseq};
use crate::wire::{NotifyKind, OutNotify};

/// A final non-2xx answer, with the headers it needs.
pub struct Reject {
    status: u16,
    reason: Option<String>,
    headers: Vec<rsip::Header>,
}

impl Reject {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: Some(reason.into()),
            headers: Vec::new(),
        }
    }

    fn with(mut self, h: rsip::Header) -> Self {
        self.headers.push(h);
        self
    }

    fn unavailable(what: &str) -> Self {
        Self::new(503, format!("{what} unavailable")).with(crate::wire::retry_after())
    }

    /// The share of new subscriptions refused while first NOTIFYs queue for longer than
    /// their bound: graded, so that refusals and retries do not swing all-or-nothing
    /// (RFC 6357 §3), with a randomised Retry-After so that they do not return in step.
    fn pacing(ctx: &Ctx) -> Option<Self> {
        let pressure = ctx.pipeline.first_pressure().min(1.0);
        let full = !ctx.pipeline.has_room(Priority::First);
        if full || (pressure > 0.0 && rand::random::<f64>() < pressure) {
            counter!("sip_shed_total", "reason" => "first_notify_queue").increment(1);
            return Some(
                Self::new(503, "Busy provisioning other phones").with(crate::wire::retry_after()),
            );
        }
        None
    }
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        counter!("store_errors_total", "op" => "subscribe").increment(1);
        tracing::warn!(%e, "store error while handling SUBSCRIBE");
        Reject::unavailable("Subscription store")
    }
}

/// Handles one new SUBSCRIBE transaction: the response bytes and the NOTIFY it causes.
#[tracing::instrument(name = "sip.subscribe", skip_all, fields(peer = %peer.addr, status))]
pub async fn handle(ctx: &Ctx, req: &rsip::Request, peer: Peer) -> (Bytes, Option<OutNotify>) {
    let started = Instant::now();
    let (status, bytes, notify) = match handle_inner(ctx, req, peer).await {
        Ok(Accepted {
            status,
            to_tag,
            expires,
            notify,
        }) => {
            let mut resp = message::response_for(req, status, None, Some(&to_tag));
            // RFC 3261 §12.1.1: a response that establishes a dialog copies every
            // Record-Route of the request, in order (the proxies on the path learn that
            // they stay on it). Harmless on a refresh, where the route set is already fixed.
            for rr in req.headers.iter() {
                if matches!(rr, rsip::Header::RecordRoute(_)) {
                    resp.headers.push(rr.clone());
                }
            }
            resp.headers
                .push(rsip::Header::Expires(rsip::headers::Expires::from(
                    expires.to_string(),
                )));
            resp.headers
                .push(rsip::Header::Contact(rsip::headers::Contact::from(
                    ctx.local.contact(peer.transport),
                )));
            (status, message::to_bytes(&resp.into()), notify)
        }
        Err(r) => {
            let mut resp = message::response_for(req, r.status, r.reason.as_deref(), None);
            resp.headers.extend(r.headers);
            (r.status, message::to_bytes(&resp.into()), None)
        }
    };
    tracing::Span::current().record("status", status);
    tracing::debug!(status, "SUBSCRIBE answered");
    counter!("sip_responses_sent_total", "status" => status.to_string()).increment(1);
    histogram!("subscribe_handling_seconds").record(started.elapsed().as_secs_f64());
    (bytes, notify)
}

struct Accepted {
    status: u16,
    to_tag: String,
    expires: u32,
    notify: Option<OutNotify>,
}

/// What the Event, Expires and Accept headers ask for, once validated.
struct Request<'a> {
    event: ProfileEvent,
    profile_type: ProfileType,
    expires: u32,
    accept: Option<Vec<String>>,
    suppress: Option<&'a str>,
}

fn parse_request<'a>(ctx: &Ctx, req: &'a rsip::Request) -> Result<Request<'a>, Reject> {
    // RFC 3261 §8.2.2.3: this server supports no extension a request may require, so any
    // option-tag in Require is refused with 420, listing the tags in Unsupported.
    let required: Vec<&str> = headers_all(&req.headers, "Require")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if !required.is_empty() {
        return Err(Reject::new(420, "Bad Extension").with(rsip::Header::Other(
            "Unsupported".into(),
            required.join(", "),
        )));
    }
    let Some(event) = header(&req.headers, "Event") else {
        return Err(Reject::new(400, "Missing Event header"));
    };
    let event = parse_event(event).map_err(|e| {
        let r = Reject::new(e.status(), e.to_string());
        if e.status() == 489 {
            r.with(allow_events())
        } else {
            r
        }
    })?;
    let profile_type = ProfileType::from_token(&event.profile_type)
        .filter(|t| ctx.config.profile_types.contains(t))
        .ok_or_else(|| {
            Reject::new(
                404,
                format!("Profile type {:?} not served", event.profile_type),
            )
        })?;
    let requested = match header(&req.headers, "Expires") {
        None => None,
        Some(v) => Some(parse_expires(v).ok_or_else(|| Reject::new(400, "Invalid Expires"))?),
    };
    let expires = ctx.config.expiry().grant(requested).map_err(|tb| {
        Reject::new(423, "Interval Too Brief").with(rsip::Header::MinExpires(
            rsip::headers::MinExpires::from(tb.min_expires.to_string()),
        ))
    })?;
    let accept_values: Vec<&str> = headers_all(&req.headers, "Accept").collect();
    let accept = if accept_values.is_empty() && !has_header(&req.headers, "Accept") {
        None
    } else {
        Some(accept_values.iter().map(|s| s.to_string()).collect())
    };
    let not_acceptable = || {
        Reject::new(406, "Not Acceptable").with(rsip::Header::Accept(rsip::headers::Accept::from(
            "message/external-body, multipart/mixed",
        )))
    };
    // RFC 3261 §20.1: an Accept header that is present but empty accepts no format at all
    // (only an absent one means the package's default).
    if accept.is_some() && accept_values.iter().all(|v| v.trim().is_empty()) {
        return Err(not_acceptable());
    }
    body_mode(&accept_values).map_err(|_| {
        Reject::new(406, "Not Acceptable").with(rsip::Header::Accept(rsip::headers::Accept::from(
            "message/external-body, multipart/mixed",
        )))
    })?;
    Ok(Request {
        event,
        profile_type,
        expires,
        accept,
        suppress: header(&req.headers, "Suppress-If-Match"),
    })
}

fn allow_events() -> rsip::Header {
    rsip::Header::Other("Allow-Events".into(), ALLOW_EVENTS.into())
}

/// Adds what an OPTIONS answer (or any capability query) should tell.
pub fn add_capabilities(resp: &mut rsip::Response) {
    resp.headers
        .push(rsip::Header::Allow(rsip::headers::Allow::from(
            "SUBSCRIBE, OPTIONS",
        )));
    resp.headers.push(allow_events());
    resp.headers
        .push(rsip::Header::Accept(rsip::headers::Accept::from(
            "message/external-body, multipart/mixed",
        )));
}

fn tag_param(req: &rsip::Request, header_name: &str) -> Option<String> {
    header(&req.headers, header_name)
        .and_then(message::tag_of)
        .map(str::to_owned)
}

fn cseq_number(req: &rsip::Request) -> Option<u32> {
    header(&req.headers, "CSeq")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn handle_inner(ctx: &Ctx, req: &rsip::Request, peer: Peer) -> Result<Accepted, Reject> {
    let parsed = parse_request(ctx, req)?;
    if let Some(auth) = &ctx.digest {
        let now = ctx.clock.now_ms() / 1000;
        let authorization = header(&req.headers, "Authorization");
        match auth.check("SUBSCRIBE", authorization, peer.transport, now) {
            crate::digest::Verdict::Pass(_) => {}
            crate::digest::Verdict::Challenge { stale } => {
                // RFC 3261 §22.1: a UAS challenges with 401 and WWW-Authenticate (never 407,
                // which is a proxy's).
                return Err(Reject::new(401, "Unauthorized").with(rsip::Header::Other(
                    "WWW-Authenticate".into(),
                    auth.challenge(now, stale),
                )));
            }
            crate::digest::Verdict::Refuse(why) => return Err(Reject::new(403, why)),
        }
    }
    match tag_param(req, "To") {
        Some(tag) => refresh(ctx, req, peer, parsed, &tag).await,
        None => create(ctx, req, peer, parsed).await,
    }
}

fn package_name(p: Package) -> PackageName {
    match p {
        Package::UaProfile => PackageName::UaProfile,
        Package::SipProfile => PackageName::SipProfile,
    }
}

/// The `+sip.instance` Contact parameter, without quotes and angle brackets.
fn instance_id(req: &rsip::Request) -> Option<String> {
    let contact = header(&req.headers, "Contact")?;
    let (_, params) = header_params(contact);
    params
        .into_iter()
        .find(|(n, _)| n == "+sip.instance")
        .and_then(|(_, v)| v)
        .map(|v| {
            v.trim_matches(|c| c == '<' || c == '>' || c == '"')
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The subject of a new subscription, from the Request-URI (RFC 6080 §4.1): the device id
/// in the user part (MAC or instance URN), the AoR for `user`, the host for `local-network`.
///
/// A device that names no identity (plug-and-play phones that send `sip:224.0.1.75` with
/// only their model) subscribes to its model's defaults (the class of the Event's `vendor`
/// and `model`), or, without those, to its network's (the Request-URI's host); it is never
/// refused for it.
fn subject(
    req: &rsip::Request,
    profile_type: ProfileType,
    event: &ProfileEvent,
) -> Result<ProfileKey, Reject> {
    let uri = req.uri.to_string();
    let (user, host) = split_uri(&uri);
    // A user part that is no device id is a mistake, not a device without identity.
    let no_identity = user.is_none_or(|u| u.is_empty() || u.eq_ignore_ascii_case("anonymous"));
    match profile_type {
        ProfileType::Device => user
            .and_then(|u| ProfileKey::device(u).ok())
            .or_else(|| instance_id(req).and_then(|i| ProfileKey::device(&i).ok()))
            .or_else(|| match (&event.vendor, &event.model) {
                _ if !no_identity => None,
                (Some(v), Some(m)) => ProfileKey::class(v, m).ok(),
                _ => None,
            })
            .or_else(|| {
                no_identity
                    .then(|| ProfileKey::local_network(host).ok())
                    .flatten()
            })
            .ok_or_else(|| {
                Reject::new(
                    400,
                    "Request-URI does not name a device (MAC or instance id)",
                )
            }),
        ProfileType::User => user
            .and_then(|u| ProfileKey::user(&format!("{u}@{host}")).ok())
            .ok_or_else(|| Reject::new(400, "Request-URI does not name a user")),
        ProfileType::LocalNetwork => ProfileKey::local_network(host)
            .map_err(|_| Reject::new(400, "Request-URI does not name a domain")),
    }
}

/// Splits `sip:user@host:port;params` into (user, host).
fn split_uri(uri: &str) -> (Option<&str>, &str) {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    let rest = rest.split([';', '?']).next().unwrap_or(rest);
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u.split(':').next().unwrap_or(u)), h),
        None => (None, rest),
    };
    let host = if hostport.starts_with('[') {
        hostport
            .split(']')
            .next()
            .map(|h| &hostport[..h.len() + 1])
            .unwrap_or(hostport)
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    (user, host)
}

async fn resolve(ctx: &Ctx, rq: &ResolveRequest) -> Result<Resolution, Reject> {
    ctx.resolver.resolve(rq).await.map_err(|e| {
        tracing::warn!(%e, "resolve failed");
        Reject::unavailable("Content tier")
    })
}

fn resolve_request(sub: &Subscription) -> ResolveRequest {
    ResolveRequest {
        profile_type: sub.profile_type,
        subject: sub.subject.clone(),
        vendor: sub.vendor.clone(),
        model: sub.model.clone(),
        version: sub.version.clone(),
    }
}

/// The `200` for an accepted SUBSCRIBE and the NOTIFY that follows it: `active` with the
/// granted duration, or `terminated;reason=timeout` when the subscription ends with it.
async fn accepted(
    ctx: &Ctx,
    sub: &Subscription,
    route: Option<&notify::Route>,
    cseq: u32,
    expires: u32,
    resolution: &Resolution,
    kind: NotifyKind,
) -> Accepted {
    let state = if expires == 0 {
        SubState::Terminated {
            reason: TerminationReason::Timeout,
            retry_after: None,
        }
    } else {
        SubState::Active { expires }
    };
    // A new dialog's route was checked before it was accepted; a refreshed one that stopped
    // resolving gets its 200 and no NOTIFY, and is ended by expiry or a later failed NOTIFY.
    let notify = match route {
        Some(r) => Some(notify::prepare(ctx, sub, r, cseq, state, resolution, None, kind).await),
        None => None,
    };
    Accepted {
        status: 200,
        to_tag: sub.dialog.local_tag.clone(),
        expires,
        notify,
    }
}

async fn create(
    ctx: &Ctx,
    req: &rsip::Request,
    peer: Peer,
    p: Request<'_>,
) -> Result<Accepted, Reject> {
    let subject = subject(req, p.profile_type, &p.event)?;
    if p.expires > 0
        && let Some(busy) = Reject::pacing(ctx)
    {
        return Err(busy);
    }
    let now_ms = ctx.clock.now_ms();
    let mut id = ctx.store.allocate_id(&subject, rand::rng().random());
    let dialog = Dialog::from_request(req, id.tag())
        .map_err(|e| Reject::new(400, format!("Cannot create dialog: {e}")))?;
    let mut sub = Subscription {
        id,
        dialog,
        transport: peer.transport,
        source: peer.addr,
        package: package_name(p.event.package),
        profile_type: p.profile_type,
        subject,
        vendor: p.event.vendor.clone(),
        model: p.event.model.clone(),
        version: p.event.version.clone(),
        instance: instance_id(req),
        accept: p.accept,
        event_id: p.event.id.clone(),
        expires_at_ms: now_ms + u64::from(p.expires) * 1000,
        // At the floor from the start, like every later CSeq of the dialog.
        local_cseq: cseq_floor(now_ms).max(1),
        confirmed_etag: None,
        depends_on: Vec::new(),
    };
    // Refuse an unroutable Contact now, not after promising NOTIFYs we cannot deliver.
    let route = notify::route(ctx, &sub).await.map_err(|e| match e {
        _ if e.is_transient() => Reject::new(503, format!("Cannot route NOTIFYs now: {e}"))
            .with(crate::wire::retry_after()),
        notify::NotifyError::Target(_) => Reject::new(403, format!("Forbidden: {e}")),
        _ => Reject::new(400, format!("Bad Contact: {e}")),
    })?;
    let resolution = resolve(ctx, &resolve_request(&sub)).await?;
    if !resolution.known && ctx.config.unknown_subscriber == UnknownSubscriberPolicy::Reject {
        return Err(Reject::new(403, "Unknown subscriber"));
    }
    sub.depends_on = resolution.depends_on.clone();
    let etag = resolution.entity_tag();

    if p.expires == 0 {
        // A fetch (RFC 6665 §4.4.3, what plug-and-play phones send at boot): one NOTIFY with
        // the state, and no subscription to follow up on, so without a fetch credit the phone
        // is asked to come back later instead.
        if !has_credit(ctx, &resolution, None) {
            counter!("sip_shed_total", "reason" => "no_fetch_credit").increment(1);
            return Err(
                Reject::new(503, "Busy provisioning other phones").with(crate::wire::retry_after())
            );
        }
        let answer = accepted(
            ctx,
            &sub,
            Some(&route),
            1,
            0,
            &resolution,
            NotifyKind::Initial,
        )
        .await;
        crate::checksync::remember(ctx, &sub, etag).await;
        return Ok(answer);
    }

    let suppressed = p.suppress.is_some_and(|s| suppress_matches(Some(s), &etag));
    if suppressed {
        // RFC 5839 §4.2: the subscriber already has this state; create it without a NOTIFY.
        sub.local_cseq = 0;
        sub.confirmed_etag = Some(etag.clone());
    }
    // The first NOTIFY points the phone at its documents only against a fetch credit; when
    // none is at hand it goes out at once without them (`active`, no body: RFC 6080 lets
    // phones wait for the documents) and the URL-bearing one follows from the first queue.
    let with_urls = suppressed || has_credit(ctx, &resolution, None);
    let shown = if with_urls {
        resolution
    } else {
        counter!("notify_bodiless_total").increment(1);
        bodiless(resolution)
    };
    // Local tags are 64 random bits; retry the (astronomically rare) collision.
    let mut attempts = 0;
    let per_source = per_source_cap(ctx, peer);
    let upserted = loop {
        let write = ctx.store.insert_capped(sub.clone(), per_source);
        match write.instrument(info_span!("store.insert")).await {
            Ok(u) => break u,
            Err(StoreError::SourceLimit(host)) => {
                // Policy, not overload: a retry soon would find the same count, so no 503.
                counter!("sip_shed_total", "reason" => "source_subscriptions").increment(1);
                tracing::info!(%host, "SUBSCRIBE refused: source holds its cap of subscriptions");
                return Err(Reject::new(403, "Too many subscriptions from this source"));
            }
            Err(StoreError::Conflict(_)) if attempts < 3 => {
                attempts += 1;
                id = ctx.store.allocate_id(&sub.subject, rand::rng().random());
                sub.id = id;
                sub.dialog.local_tag = id.tag();
            }
            Err(e) => return Err(e.into()),
        }
    };
    counter!("subscriptions_created_total").increment(1);
    if !upserted.replaced.is_empty() {
        counter!("subscriptions_removed_total", "reason" => "replaced")
            .increment(upserted.replaced.len() as u64);
    }
    if suppressed {
        // No NOTIFY goes out: give back the turn the insert took for it.
        ctx.store.end_notify(sub.id, None).await?;
        return Ok(Accepted {
            status: 204,
            to_tag: sub.dialog.local_tag.clone(),
            expires: p.expires,
            notify: None,
        });
    }
    if !with_urls {
        follow_up(ctx, sub.id, Priority::First).await;
    }
    Ok(accepted(
        ctx,
        &sub,
        Some(&route),
        sub.local_cseq,
        p.expires,
        &shown,
        NotifyKind::Initial,
    )
    .await)
}

/// The cap on live subscriptions of the SUBSCRIBE's source host; 0 (none) when exempt.
fn per_source_cap(ctx: &Ctx, peer: Peer) -> u32 {
    let cap = ctx.config.max_subscriptions_per_source;
    if cap == 0 {
        return 0;
    }
    // Validated at start-up; parsing a handful of prefixes costs less than the store write.
    let exempt = ctx.config.source_exempt_prefixes().unwrap_or_default();
    if crate::limits::is_exempt(peer.addr.ip(), &exempt) {
        0
    } else {
        cap
    }
}

/// Whether a NOTIFY of `resolution` may point the phone at documents now: nothing to
/// fetch, nothing new to the phone (its confirmed tag), or a fetch credit taken.
fn has_credit(ctx: &Ctx, resolution: &Resolution, confirmed: Option<&str>) -> bool {
    resolution.documents.is_empty()
        || confirmed == Some(resolution.entity_tag().as_str())
        || ctx.pipeline.credits().try_take(Instant::now())
}

/// The same answer without its documents (a bodiless NOTIFY): no folder either.
fn bodiless(resolution: Resolution) -> Resolution {
    Resolution {
        documents: Vec::new(),
        folder_url: None,
        ..resolution
    }
}

/// Queues the URL-bearing NOTIFY that follows a bodiless one.
async fn follow_up(ctx: &Ctx, id: SubId, priority: Priority) {
    ctx.pipeline
        .push(priority, Want::new(id, Why::FollowUp), true, Instant::now())
        .await;
}

async fn refresh(
    ctx: &Ctx,
    req: &rsip::Request,
    peer: Peer,
    p: Request<'_>,
    tag: &str,
) -> Result<Accepted, Reject> {
    let gone = || Reject::new(481, "Subscription does not exist");
    let id = SubId::from_tag(tag).ok_or_else(gone)?;
    let mut sub = ctx.store.get(id).await?.ok_or_else(gone)?;
    let call_id = header(&req.headers, "Call-ID").unwrap_or_default();
    if sub.dialog.call_id != call_id
        || tag_param(req, "From").as_deref() != Some(sub.dialog.remote_tag.as_str())
    {
        return Err(gone());
    }
    if sub.profile_type != p.profile_type {
        return Err(Reject::new(489, "Event does not match the subscription").with(allow_events()));
    }
    let cseq = cseq_number(req).ok_or_else(|| Reject::new(400, "Invalid CSeq"))?;
    if cseq <= sub.dialog.remote_cseq {
        // RFC 3261 §12.2.2: a lower CSeq in the dialog is out of order.
        return Err(Reject::new(500, "CSeq out of order"));
    }
    sub.dialog.remote_cseq = cseq;
    // A refresh is a target refresh: the phone may have moved (RFC 6665 §4.1.2.1).
    if let Ok(fresh) = Dialog::from_request(req, sub.dialog.local_tag.clone()) {
        sub.dialog.remote_target = fresh.remote_target;
    }
    sub.transport = peer.transport;
    sub.source = peer.addr;
    if p.accept.is_some() {
        sub.accept = p.accept;
    }
    let now_ms = ctx.clock.now_ms();
    let resolution = resolve(ctx, &resolve_request(&sub)).await?;
    let etag = resolution.entity_tag();
    sub.depends_on = resolution.depends_on.clone();
    let route = notify::route(ctx, &sub).await.ok();

    if p.expires == 0 {
        let Some(gone_sub) = ctx.store.remove(id).await? else {
            return Err(gone());
        };
        counter!("subscriptions_removed_total", "reason" => "unsubscribed").increment(1);
        sub.local_cseq = next_cseq(gone_sub.local_cseq.max(sub.local_cseq), now_ms);
        let cseq = sub.local_cseq;
        return Ok(accepted(
            ctx,
            &sub,
            route.as_ref(),
            cseq,
            0,
            &resolution,
            NotifyKind::Terminate,
        )
        .await);
    }

    sub.expires_at_ms = now_ms + u64::from(p.expires) * 1000;
    let suppressed = p.suppress.is_some_and(|s| suppress_matches(Some(s), &etag));
    if suppressed {
        sub.confirmed_etag = Some(etag.clone());
    }
    let status = if suppressed { 204 } else { 200 };
    let no_notify = Accepted {
        status,
        to_tag: sub.dialog.local_tag.clone(),
        expires: p.expires,
        notify: None,
    };
    let write = ctx.store.refresh(sub.clone());
    let cseq = match write.instrument(info_span!("store.refresh")).await? {
        Turn::Gone => return Err(gone()),
        // Another NOTIFY of the dialog is in flight: its sender sends the newest state
        // when it ends (the store recorded the wish).
        Turn::Busy => return Ok(no_notify),
        // No NOTIFY goes out (a 204, or a Contact that stopped resolving, which expiry or a
        // later NOTIFY ends): give the turn back.
        Turn::Granted(_) if suppressed || route.is_none() => {
            ctx.store.end_notify(id, None).await?;
            return Ok(no_notify);
        }
        Turn::Granted(c) => c,
    };
    let with_urls = has_credit(ctx, &resolution, sub.confirmed_etag.as_deref());
    let shown = if with_urls {
        resolution
    } else {
        counter!("notify_bodiless_total").increment(1);
        follow_up(ctx, id, Priority::Background).await;
        bodiless(resolution)
    };
    Ok(accepted(
        ctx,
        &sub,
        route.as_ref(),
        cseq,
        p.expires,
        &shown,
        NotifyKind::Refresh,
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_split() {
        assert_eq!(
            split_uri("sip:MAC%3a00df1e004cd0@example.com;transport=tcp"),
            (Some("MAC%3a00df1e004cd0"), "example.com")
        );
        assert_eq!(split_uri("sip:example.com:5060"), (None, "example.com"));
        assert_eq!(
            split_uri("sips:alice:pw@[::1]:5061"),
            (Some("alice"), "[::1]")
        );
    }
}

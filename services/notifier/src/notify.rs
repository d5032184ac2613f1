//! Building a NOTIFY for a stored subscription: where it goes and what it says.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use metrics::counter;
use profile_event::accept::{BodyMode, body_mode};
use profile_event::body::{build_body, url_body};
use profile_event::event::{Package, notify_event_header};
use profile_event::notify::{NotifyParams, build_notify};
use profile_event::state::SubState;
use sip_core::dialog::RequestTarget;
use sip_core::transport::{Peer, Transport};
use uaprof_api::Resolution;

use crate::Ctx;
use crate::store::{PackageName, Subscription};
use crate::target::{self, TargetError};
use crate::wire::{CheckSyncRequest, NotifyKind, OutNotify};

/// Max-Forwards on our NOTIFYs (RFC 3261 §8.1.1.6 recommends 70).
const MAX_FORWARDS: u8 = 70;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The dialog's next hop is not a SIP URI we can send to.
    #[error("cannot route NOTIFY to {0}")]
    Unroutable(String),
    /// A `sips:` URI or `transport=tls` next hop for a dialog not on TLS.
    #[error("{0} needs TLS, and this dialog's flow is not TLS")]
    NeedsTls(String),
    /// A resolution or address-policy failure (see [`crate::target`]).
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl NotifyError {
    /// Whether trying again later may succeed (a DNS failure), as opposed to a next hop
    /// that is wrong or forbidden for good.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Target(TargetError::Unresolved(_)))
    }
}

/// Where a NOTIFY of a subscription goes: the dialog's Request-URI and Route set, and the
/// transport address of the next hop. Computed once per NOTIFY (it may need DNS).
pub struct Route {
    pub target: RequestTarget,
    pub peer: Peer,
    /// Where the NOTIFY goes over TCP instead when it is too large for UDP (RFC 3261
    /// §18.1.1): the same next hop, or with no route set the source host at the Contact's
    /// port.
    pub stream: SocketAddr,
}

/// Resolves where a NOTIFY of `sub` goes.
///
/// With no route set a NOTIFY goes back where the SUBSCRIBE came from: over a stream, its
/// flow while it is open (phones behind NAT cannot be dialled back, RFC 5626 §5.3), and once
/// it is gone (the phone or our idle timer closed it) a new connection to the source host at
/// the Contact's port, where an RFC 3261 UA listens; the flow's own port was the phone's
/// ephemeral one. Over UDP, the packet's source, never a Contact naming some other host (that
/// would let a forged SUBSCRIBE aim NOTIFYs at a third party). A route set's first hop must
/// pass [`target::check`]. A check-sync record aimed at the operator's target (it has no
/// source) goes to its contact, resolved like a route set's first hop.
pub async fn route(ctx: &Ctx, sub: &Subscription) -> Result<Route, NotifyError> {
    let t = sub.dialog.target();
    let unroutable = || NotifyError::Unroutable(t.next_hop.clone());
    let (transport, host, port) =
        sip_core::dialog::next_hop(&t.next_hop, sub.transport).map_err(|_| unroutable())?;
    if transport == Transport::Tls && sub.transport != Transport::Tls {
        // A sips: URI or transport=tls: this server has no TLS client, and sending such a
        // NOTIFY over a clear transport is forbidden (RFC 3261 §26.2.2).
        return Err(NotifyError::NeedsTls(t.next_hop.clone()));
    }
    // A check-sync record aimed at the operator's target has no SUBSCRIBE flow to reuse:
    // its contact is resolved like a Route, and it is the operator's, so no target policy.
    let operator_target = sub.source.ip().is_unspecified();
    if t.routes.is_empty() && !operator_target {
        let stream = SocketAddr::new(sub.source.ip(), port);
        let flow_gone = sub.transport != Transport::Udp && !ctx.outbound.has_stream(sub.source);
        if flow_gone {
            counter!("notify_flow_gone_total").increment(1);
        }
        let peer = Peer {
            transport: sub.transport,
            addr: if flow_gone { stream } else { sub.source },
        };
        return Ok(Route {
            target: t,
            peer,
            stream,
        });
    }
    let transport = if transport == Transport::Udp && ctx.local.udp.is_none() {
        Transport::Tcp
    } else {
        transport
    };
    let addr = ctx.dns.resolve(&host, port).await?;
    if !operator_target {
        target::check(addr, sub.source, ctx.config.allow_private_targets)?;
    }
    Ok(Route {
        target: t,
        peer: Peer { transport, addr },
        stream: addr,
    })
}

/// Builds a NOTIFY for `sub` along `route`, with the given CSeq (already allocated durably).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "sip.notify", skip_all, fields(kind = ?kind, cseq = cseq))]
pub async fn prepare(
    ctx: &Ctx,
    sub: &Subscription,
    route: &Route,
    cseq: u32,
    state: SubState,
    resolution: &Resolution,
    effective_by: Option<u32>,
    kind: NotifyKind,
) -> OutNotify {
    let (t, peer) = (&route.target, route.peer);
    let accept: Vec<&str> = sub
        .accept
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    // The Accept list was checked when the subscription was made. With content indirection
    // several documents can only travel as multipart/mixed; RFC 6080 promises phones several
    // URLs for one profile type, so a subscriber that takes external-body gets multipart even
    // if it did not list multipart/mixed. This is a deliberate leniency (phones in the field
    // list only the types of the documents they fetch); inline delivery stays strict.
    let mode = match body_mode(&accept) {
        _ if sub.accept.is_none() => BodyMode::ExternalBody { multipart: true },
        Ok(BodyMode::ExternalBody { .. }) | Err(_) => BodyMode::ExternalBody { multipart: true },
        Ok(inline) => inline,
    };
    let mut inline: HashMap<(String, String), Vec<u8>> = HashMap::new();
    if matches!(mode, BodyMode::Inline(_)) {
        for d in &resolution.documents {
            if let Ok(Some(bytes)) = ctx.resolver.document_bytes(&d.owner, &d.name).await {
                inline.insert((d.owner.to_string(), d.name.clone()), bytes);
            }
        }
    }
    let now_unix = ctx.clock.now_ms() / 1000;
    // A plug-and-play phone that appends its own file names gets its provisioning folder
    // (while the answer has documents: a bodiless NOTIFY stays bodiless).
    let folder = (matches!(mode, BodyMode::Url)
        && crate::dialect::url_form(&ctx.config.dialects, sub.vendor.as_deref())
            == crate::dialect::UrlForm::Folder)
        .then_some(resolution.folder_url.as_deref())
        .flatten()
        .filter(|_| !resolution.documents.is_empty());
    let body_in = |mode: &BodyMode| match folder {
        Some(url) => url_body(url),
        None => build_body(
            &resolution.documents,
            mode,
            &|d| inline.get(&(d.owner.to_string(), d.name.clone())).cloned(),
            now_unix,
        ),
    };
    let package = match sub.package {
        PackageName::UaProfile => Package::UaProfile,
        PackageName::SipProfile | PackageName::CheckSync => Package::SipProfile,
    };
    let event = notify_event_header(
        package,
        sub.profile_type.as_str(),
        effective_by,
        sub.event_id.as_deref(),
    );
    let branch = sip_core::message::new_branch();
    let d = &sub.dialog;
    let from = format!("<{}>;tag={}", d.local_uri, d.local_tag);
    let to = format!("<{}>;tag={}", d.remote_uri, d.remote_tag);
    let etag = resolution.entity_tag();
    let terminal = matches!(state, SubState::Terminated { .. });
    let build = |peer: Peer, body: Option<&profile_event::body::NotifyBody>| {
        let contact = ctx.local.contact(peer.transport);
        build_notify(&NotifyParams {
            request_uri: &t.request_uri,
            routes: &t.routes,
            via_transport: peer.transport.via_token(),
            via_sent_by: ctx.local.sent_by(peer.transport),
            branch: &branch,
            from: &from,
            to: &to,
            call_id: &d.call_id,
            cseq,
            contact: &contact,
            event: &event,
            state: &state,
            etag: &etag,
            body,
            max_forwards: MAX_FORWARDS,
            user_agent: None,
            authorization: None,
        })
    };
    let mut body = body_in(&mode);
    let mut bytes = build(peer, body.as_ref());
    let mut peer = peer;
    let limit = ctx.config.udp_max_notify_bytes;
    if peer.transport == Transport::Udp && limit > 0 && bytes.len() > limit {
        // RFC 3261 §18.1.1: a request over 1300 bytes goes over a congestion-controlled
        // transport. Pointing at the documents is the smaller change when the subscriber
        // takes that; what is still too large goes over TCP.
        if matches!(mode, BodyMode::Inline(_)) && accepts_external_body(&accept) {
            body = body_in(&BodyMode::ExternalBody { multipart: true });
            bytes = build(peer, body.as_ref());
        }
        if bytes.len() > limit {
            counter!("notify_udp_oversize_total").increment(1);
            peer = Peer {
                transport: Transport::Tcp,
                addr: route.stream,
            };
            bytes = build(peer, body.as_ref());
        }
    }
    OutNotify {
        sub: sub.id,
        peer,
        branch,
        bytes: Bytes::from(bytes),
        etag: Some(etag),
        terminal,
        kind,
        // The answer to a SUBSCRIBE holds the turn the store gave with it; a terminated
        // NOTIFY needs none. The pipeline marks its own.
        origin: if terminal {
            crate::wire::Origin::Terminal
        } else {
            crate::wire::Origin::Subscribe
        },
        budget: None,
        resend: None,
    }
}

/// The out-of-dialog NOTIFY that makes a remembered plug-and-play phone (a
/// [`PackageName::CheckSync`] record) fetch its configuration again: its vendor's resync
/// Event with `reboot=false`, no body, sent to the Contact of its plug-and-play SUBSCRIBE
/// along `route`. A request of its own (new Call-ID, no To tag), like the check-sync NOTIFYs
/// phones take from PBXs; `Subscription-State: terminated;reason=invariant` because RFC 6665
/// wants the header in every NOTIFY and there is no subscription to continue. `etag` is the
/// state the phone is told of, recorded as fetched when it answers 2xx. The operator's
/// `target` (when set) names the Event and the credentials for a digest challenge.
pub fn check_sync(
    ctx: &Ctx,
    sub: &Subscription,
    route: &Route,
    cseq: u32,
    etag: String,
    target: Option<&uaprof_api::ResyncTarget>,
) -> OutNotify {
    let (t, peer) = (&route.target, route.peer);
    let package = target.and_then(|t| t.event.as_deref()).unwrap_or_else(|| {
        crate::dialect::resync_event(&ctx.config.dialects, sub.vendor.as_deref())
    });
    let d = &sub.dialog;
    let request = CheckSyncRequest {
        request_uri: t.request_uri.clone(),
        via_transport: peer.transport.via_token(),
        via_sent_by: ctx.local.sent_by(peer.transport).to_owned(),
        from: format!("<{}>;tag={:016x}", d.local_uri, rand::random::<u64>()),
        to: format!("<{}>", d.remote_uri),
        call_id: format!("{:032x}@uaprof", rand::random::<u128>()),
        cseq,
        contact: ctx.local.contact(peer.transport),
        event: format!("{package};reboot=false"),
        credentials: target.and_then(|t| Some((t.username.clone()?, t.password.clone()?))),
        answered: false,
    };
    let branch = sip_core::message::new_branch();
    let bytes = request.build(&branch, None);
    OutNotify {
        sub: sub.id,
        peer,
        branch,
        bytes: Bytes::from(bytes),
        etag: Some(etag),
        terminal: false,
        kind: NotifyKind::CheckSync,
        origin: crate::wire::Origin::Subscribe,
        budget: None,
        resend: Some(Box::new(request)),
    }
}

fn accepts_external_body(accept: &[&str]) -> bool {
    accept.iter().any(|a| {
        a.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("message/external-body"))
    })
}

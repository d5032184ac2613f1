//! Building a NOTIFY for a stored subscription: where it goes and what it says.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use profile_event::accept::{BodyMode, body_mode};
use profile_event::body::build_body;
use profile_event::event::{Package, notify_event_header};
use profile_event::notify::{NotifyParams, build_notify};
use profile_event::state::SubState;
use sip_core::dialog::RequestTarget;
use sip_core::transport::{Peer, Transport};
use uaprof_api::Resolution;

use crate::Ctx;
use crate::store::{PackageName, Subscription};
use crate::wire::{NotifyKind, OutNotify};

/// Max-Forwards on our NOTIFYs (RFC 3261 §8.1.1.6 recommends 70).
const MAX_FORWARDS: u8 = 70;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("cannot route NOTIFY to {0}")]
    Unroutable(String),
}

/// Where a NOTIFY of a subscription goes: the dialog's Request-URI and Route set, and the
/// transport address of the next hop. Computed once per NOTIFY (it may need DNS).
pub struct Route {
    pub target: RequestTarget,
    pub peer: Peer,
}

/// Resolves where a NOTIFY of `sub` goes. Stream subscribers behind NAT cannot be dialled
/// back, so with no route set a NOTIFY reuses the SUBSCRIBE's flow (RFC 5626 §5.3 behaviour).
pub async fn route(ctx: &Ctx, sub: &Subscription) -> Result<Route, NotifyError> {
    let target = sub.dialog.target();
    let peer = destination(ctx, sub, &target).await?;
    Ok(Route { target, peer })
}

async fn destination(
    ctx: &Ctx,
    sub: &Subscription,
    t: &RequestTarget,
) -> Result<Peer, NotifyError> {
    let unroutable = || NotifyError::Unroutable(t.next_hop.clone());
    let (transport, host, port) =
        sip_core::dialog::next_hop(&t.next_hop, sub.transport).map_err(|_| unroutable())?;
    let transport = if transport == Transport::Udp && ctx.local.udp.is_none() {
        Transport::Tcp
    } else {
        transport
    };
    if sub.transport.is_reliable() && t.routes.is_empty() {
        return Ok(Peer {
            transport: sub.transport,
            addr: sub.source,
        });
    }
    let host_trim = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match host_trim.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host_trim, port))
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(unroutable)?,
    };
    Ok(Peer { transport, addr })
}

/// Builds a NOTIFY for `sub` along `route`, with the given CSeq (already allocated durably).
#[allow(clippy::too_many_arguments)]
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
    let body = build_body(
        &resolution.documents,
        &mode,
        &|d| inline.get(&(d.owner.to_string(), d.name.clone())).cloned(),
        now_unix,
    );
    let package = match sub.package {
        PackageName::UaProfile => Package::UaProfile,
        PackageName::SipProfile => Package::SipProfile,
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
    let contact = ctx.local.contact(peer.transport);
    let etag = resolution.entity_tag();
    let terminal = matches!(state, SubState::Terminated { .. });
    let bytes = build_notify(&NotifyParams {
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
        body: body.as_ref(),
        max_forwards: MAX_FORWARDS,
        user_agent: None,
    });
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
    }
}

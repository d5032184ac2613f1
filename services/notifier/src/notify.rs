//! Building a NOTIFY for a stored subscription: where it goes and what it says.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use profile_event::accept::{BodyMode, body_mode};
use profile_event::body::build_body;
use profile_event::event::{Package, notify_event_header};
use profile_event::notify::{NotifyParams, build_notify};
use profile_event::state::SubState;
use sip_core::transport::{Peer, Transport};
use uaprof_api::Resolution;

use crate::Ctx;
use crate::engine::{NotifyKind, OutNotify};
use crate::store::{PackageName, Subscription};

/// Max-Forwards on our NOTIFYs (RFC 3261 §8.1.1.6 recommends 70).
const MAX_FORWARDS: u8 = 70;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("cannot route NOTIFY to {0}")]
    Unroutable(String),
}

/// Where a request in the dialog goes (RFC 3261 §12.2.1.1): Request-URI, Route set and the
/// URI whose host and port are the next hop.
pub struct Target {
    pub request_uri: String,
    pub routes: Vec<String>,
    pub next_hop: String,
}

pub fn target(sub: &Subscription) -> Target {
    let d = &sub.dialog;
    match d.route_set.first() {
        None => Target {
            request_uri: d.remote_target.clone(),
            routes: Vec::new(),
            next_hop: d.remote_target.clone(),
        },
        Some(first) if is_loose(first) => Target {
            request_uri: d.remote_target.clone(),
            routes: d.route_set.clone(),
            next_hop: strip_brackets(first).to_owned(),
        },
        Some(first) => {
            // Strict routing: the first route becomes the Request-URI, the remote target
            // goes last in the Route set.
            let mut routes: Vec<String> = d.route_set[1..].to_vec();
            routes.push(format!("<{}>", d.remote_target));
            let uri = strip_brackets(first);
            let uri = uri.split(';').next().unwrap_or(uri).to_owned();
            Target {
                request_uri: uri.clone(),
                routes,
                next_hop: uri,
            }
        }
    }
}

fn strip_brackets(s: &str) -> &str {
    let s = s.trim();
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    }
}

fn is_loose(route: &str) -> bool {
    strip_brackets(route).split(';').skip(1).any(|p| {
        p.trim().eq_ignore_ascii_case("lr") || p.trim().to_ascii_lowercase().starts_with("lr=")
    })
}

/// Resolves the transport address of the next hop. Stream subscribers behind NAT cannot be
/// dialled back, so when there is no route set and the SUBSCRIBE's connection is still open,
/// the NOTIFY reuses it (RFC 5626 §5.3 behaviour for flows).
pub async fn destination(ctx: &Ctx, sub: &Subscription, t: &Target) -> Result<Peer, NotifyError> {
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

/// Builds a NOTIFY for `sub` with the given CSeq (already allocated durably).
pub async fn prepare(
    ctx: &Ctx,
    sub: &Subscription,
    cseq: u32,
    state: SubState,
    resolution: &Resolution,
    effective_by: Option<u32>,
    kind: NotifyKind,
) -> Result<OutNotify, NotifyError> {
    let t = target(sub);
    let peer = destination(ctx, sub, &t).await?;
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
    Ok(OutNotify {
        sub: sub.id,
        peer,
        branch,
        bytes: Bytes::from(bytes),
        etag: Some(etag),
        terminal,
        kind,
        done: None,
    })
}

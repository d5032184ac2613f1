//! What moves between the notifier's stages: messages into the engine (from the listeners,
//! the SUBSCRIBE handlers, the pipeline and expiry), the NOTIFYs they hand it, and the
//! stock answers every stage gives (400 for what does not parse, 503 with Retry-After).
//!
//! Data flows one way: listener (`transport`) → transaction (`engine`) → package
//! (`subscribe`, `notify`) → `store` → scheduler (`pipeline`) → engine → `transport`. What
//! travels back to the engine does so as an [`EngineMsg`] on its channel, so no stage names
//! the engine and the modules form layers, each using only the ones below it: `store`,
//! `want`, `wire`, `notify`, `pipeline`, `fanout`, `expiry`, `subscribe`, `transport`,
//! `engine` (`tests/layering.rs` fails on a reference upwards).

use std::time::Instant;

use bytes::Bytes;
use rand::RngExt;
use sip_core::message;
use sip_core::transaction::ServerKey;
use sip_core::transport::Peer;

use crate::store::SubId;
use crate::want::{Priority, Want};

/// A message for the engine task.
pub enum EngineMsg {
    Inbound {
        msg: rsip::SipMessage,
        peer: Peer,
        /// When the listener parsed it: the delay the shedding gate sees includes the wait
        /// for the engine, not only the handler's.
        received: Instant,
    },
    Reply(Reply),
    Notify(OutNotify),
}

/// A handler's answer to a server transaction, plus the NOTIFY it causes, if any.
pub struct Reply {
    /// When the listener received the request: the engine's shedding gate measures the
    /// delay from here.
    pub started: Instant,
    pub key: ServerKey,
    pub dest: Peer,
    pub bytes: Bytes,
    pub notify: Option<OutNotify>,
}

/// A NOTIFY ready for the wire. Its CSeq is already durable in the store.
pub struct OutNotify {
    pub sub: SubId,
    pub peer: Peer,
    pub branch: String,
    pub bytes: Bytes,
    /// Entity tag carried; recorded as confirmed when the subscriber answers 2xx.
    pub etag: Option<String>,
    /// The last NOTIFY of the dialog (`Subscription-State: terminated`).
    pub terminal: bool,
    pub kind: NotifyKind,
    /// Who sent it, which decides what follows its outcome.
    pub origin: Origin,
    /// Its share of the in-flight budget, held until the transaction ends.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
    /// For a check-sync NOTIFY: how to send it again with the answer to a digest challenge.
    pub resend: Option<Box<CheckSyncRequest>>,
}

/// A check-sync NOTIFY's parts, so that a 401/407 can be answered once with the same request:
/// the same Call-ID, From and To, a new branch, the next CSeq and the credentials.
#[derive(Debug, Clone)]
pub struct CheckSyncRequest {
    pub request_uri: String,
    pub via_transport: &'static str,
    pub via_sent_by: String,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: String,
    pub event: String,
    /// The operator's digest credentials for the phone (username, password), if any.
    pub credentials: Option<(String, String)>,
    /// Whether this is the answer to a challenge already (a second one is not answered).
    pub answered: bool,
}

impl CheckSyncRequest {
    /// The request with `branch` and, when answering a challenge, its `authorization`
    /// header (name, value).
    pub fn build(&self, branch: &str, authorization: Option<(&str, &str)>) -> Vec<u8> {
        let state = profile_event::state::SubState::Terminated {
            reason: profile_event::state::TerminationReason::Invariant,
            retry_after: None,
        };
        profile_event::notify::build_notify(&profile_event::notify::NotifyParams {
            request_uri: &self.request_uri,
            routes: &[],
            via_transport: self.via_transport,
            via_sent_by: &self.via_sent_by,
            branch,
            from: &self.from,
            to: &self.to,
            call_id: &self.call_id,
            cseq: self.cseq,
            contact: &self.contact,
            event: &self.event,
            state: &state,
            etag: "",
            body: None,
            max_forwards: 70,
            user_agent: None,
            authorization,
        })
    }
}

/// Where a NOTIFY comes from.
#[derive(Debug)]
pub enum Origin {
    /// The NOTIFY answering a SUBSCRIBE, in the dialog's turn that the store gave with it.
    Subscribe,
    /// A pipeline want, in the turn its delivery took (priority it was queued at).
    Pipeline(Box<Want>, Priority),
    /// A terminated NOTIFY of a subscription already removed: no turn, nothing follows.
    Terminal,
}

impl Origin {
    /// The `priority` label of `notifier_notifies_inflight`: the pipeline queue a NOTIFY
    /// left from, or `subscribe` / `terminal` for the two that bypass the pipeline.
    pub fn priority_label(&self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Pipeline(_, p) => p.label(),
            Self::Terminal => "terminal",
        }
    }
}

/// Why a NOTIFY is sent (metrics label and priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    Initial,
    Refresh,
    Change,
    Terminate,
    /// An out-of-dialog resync NOTIFY to a remembered plug-and-play phone.
    CheckSync,
}

impl NotifyKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Refresh => "refresh",
            Self::Change => "change",
            Self::Terminate => "terminate",
            Self::CheckSync => "check_sync",
        }
    }
}

/// The `400` (or other 4xx/5xx) answer to a request that did not parse, and where to send
/// it; `None` when the message cannot be answered (it is dropped and counted).
pub fn bad_request_response(
    e: &message::ParseError,
    peer: Peer,
) -> Option<(Bytes, std::net::SocketAddr)> {
    let resp = e.error_response()?;
    let mut req = e.request()?.clone();
    sip_core::via::stamp_received(&mut req, peer.addr);
    let dest = sip_core::via::response_destination(&req, peer);
    Some((message::to_bytes(&resp.into()), dest))
}

/// A randomised `Retry-After` (5–20 s) for every 503: lockstep retries are how avalanches
/// form.
pub fn retry_after() -> rsip::Header {
    retry_after_in(5, 20)
}

/// A `Retry-After` uniform in `lo..=hi` seconds.
pub fn retry_after_in(lo: u32, hi: u32) -> rsip::Header {
    let secs: u32 = rand::rng().random_range(lo..=hi);
    rsip::Header::RetryAfter(rsip::headers::RetryAfter::from(secs.to_string()))
}

/// `503` with a randomised `Retry-After`.
pub fn overload_response(req: &rsip::Request) -> Bytes {
    let mut resp = message::response_for(req, 503, None, None);
    resp.headers.push(retry_after());
    message::to_bytes(&resp.into())
}

//! The profile event package, sans-IO: `ua-profile` (RFC 6080) and `sip-profile` (its seed
//! draft), with RFC 6665 subscription rules, RFC 4483 content indirection and RFC 5839
//! conditional notification.
//!
//! Everything here is a pure function of its arguments (time included), so the notifier can
//! call it from any task and tests need no I/O.
//!
//! * [`event`]: the `Event` header: parse a SUBSCRIBE's, print a NOTIFY's; `Allow-Events`.
//! * [`accept`]: what NOTIFY body a subscriber takes, from its `Accept` headers
//!   (content indirection, inline documents, or `406`).
//! * [`expiry`]: reading `Expires` and granting a subscription duration (`423` +
//!   `Min-Expires`).
//! * [`state`]: the `Subscription-State` header and which NOTIFY failures end a subscription.
//! * [`body`]: NOTIFY bodies: `message/external-body` parts, inline documents, `multipart/mixed`.
//! * [`conditional`]: `Suppress-If-Match` against the current entity tag (`204`).
//! * [`notify`]: the whole NOTIFY request as wire bytes.

pub mod accept;
pub mod body;
pub mod conditional;
pub mod event;
pub mod expiry;
pub mod notify;
pub mod state;

mod wire;

pub use accept::{AcceptList, BodyMode, NotAcceptable, body_mode};
pub use body::{NotifyBody, build_body};
pub use conditional::suppress_matches;
pub use event::{
    ALLOW_EVENTS, EventError, Package, ProfileEvent, notify_event_header, parse_event,
};
pub use expiry::{ExpiryConfigError, ExpiryPolicy, TooBrief, parse_expires};
pub use notify::{NotifyParams, build_notify};
pub use state::{SubState, TerminationReason, removes_subscription};

//! The gRPC seam between notifier nodes and the content tier (`uaprof.content.v1`), for
//! deployments where they run as separate processes.
//!
//! * [`proto`]: the messages, client and server generated from
//!   `proto/uaprof/content/v1/content.proto` at build time.
//! * `convert`: wire ⇄ [`uaprof_api`] conversions; everything read from the wire is checked
//!   (keys must parse and be canonical), never trusted.
//! * `server`: [`service`] / [`serve`]: answers from a [`content::ContentService`] in this
//!   process, with the change feed as a bounded long-poll.
//! * `client`: [`RemoteContent`], a [`uaprof_api::ContentResolver`], and [`RemoteFeed`], a
//!   [`uaprof_api::ChangeSource`], for the notifier side.
//! * `telemetry`: metric names and [`describe_metrics`].

mod client;
mod convert;
mod credits;
mod server;
mod telemetry;

use std::time::Duration;

/// Generated from `proto/uaprof/content/v1/content.proto` (package `uaprof.content.v1`).
pub mod proto {
    tonic::include_proto!("uaprof.content.v1");
}

pub use crate::client::{CONNECT_TIMEOUT, REQUEST_TIMEOUT, RemoteContent, RemoteFeed};
pub use crate::credits::RemoteCredits;
pub use crate::server::{ContentTierService, serve, service, service_with_shutdown};
pub use crate::telemetry::describe_metrics;

/// Longest a `Changes` long-poll waits for the first change. The server clamps requests to
/// it and [`RemoteFeed`] never asks for more: long enough that an idle feed costs a request
/// every half minute, short enough that a dead peer is noticed well before TCP would notice.
pub const MAX_CHANGES_WAIT: Duration = Duration::from_secs(30);

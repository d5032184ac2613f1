//! Shared domain types and the seams between the tiers.
//!
//! * [`key`]: profile types, profile keys (device, user, local network, class) and the
//!   normalisation rules that make one phone map to one key whatever spelling it uses.
//! * [`resolve`]: what the notifier asks the content tier ("which documents does this
//!   subscriber get, and which keys does that answer depend on?"). In-process today, gRPC later.
//! * [`admission`]: fetch credits, the content tier's pacing of NOTIFYs that cause fetches.
//! * [`change`]: a change request (provisioning API or Kafka event) before the content tier
//!   applies it.
//! * [`digest`]: Digest authentication (SHA-256), shared by SIP and HTTP.
//! * [`resync`]: a device's resync target (where its check-sync NOTIFY goes, with which
//!   credentials).
//! * [`feed`]: the change feed (applied changes → notifier fan-out): in-process, the content
//!   tier's gRPC long-poll, or Kafka's applied topic; all are [`feed::ChangeSource`]s with
//!   explicit commit.

pub mod admission;
pub mod change;
pub mod digest;
pub mod feed;
pub mod key;
pub mod resolve;
pub mod resync;

pub use admission::{Accrual, CreditSource, FixedRate, Unlimited};
pub use change::{Change, ChangeOp, Timing};
pub use feed::{ChangeSource, FeedError, ProfileChange};
pub use key::{KeyError, ProfileKey, ProfileType};
pub use resolve::{ContentResolver, DocumentRef, Resolution, ResolveError, ResolveRequest};
pub use resync::ResyncTarget;

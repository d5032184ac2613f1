//! Shared domain types and the seams between the tiers.
//!
//! * [`key`]: profile types, profile keys (device, user, local network, class) and the
//!   normalisation rules that make one phone map to one key whatever spelling it uses.
//! * [`resolve`]: what the notifier asks the content tier ("which documents does this
//!   subscriber get, and which keys does that answer depend on?"). In-process today, gRPC later.
//! * [`feed`]: the change feed (document writes → notifier fan-out). In-process today, Kafka
//!   later; both are [`feed::ChangeSource`]s with explicit commit.

pub mod feed;
pub mod key;
pub mod resolve;

pub use feed::{ChangeSource, FeedError, ProfileChange};
pub use key::{KeyError, ProfileKey, ProfileType};
pub use resolve::{ContentResolver, DocumentRef, Resolution, ResolveError, ResolveRequest};

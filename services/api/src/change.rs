//! A change request: what a provisioner asks the content tier to do to one key.
//!
//! Both ways in produce a [`Change`]: the provisioning API (HTTP) and the operator's change
//! events on Kafka (`uaprof.events.v1.ProfileChange`, decoded by the `events` crate). The
//! content tier validates and applies it; what it applied then reaches the notifiers as a
//! [`crate::ProfileChange`] on the change feed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::key::ProfileKey;
use crate::resync::ResyncTarget;

/// Longest change id accepted. Ids are kept per key for idempotency, so they must be small;
/// a UUID in text form is 36 bytes.
pub const MAX_CHANGE_ID: usize = 128;

/// One change to the documents or attributes of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Idempotency key chosen by the producer: a change whose id was already applied to this
    /// key is not applied again (a replay, or Kafka redelivering it).
    pub change_id: String,
    pub key: ProfileKey,
    /// The key's version after the change. `None`: the next version, assigned by the content
    /// tier in log order (what the provisioning API asks for). `Some(v)` must exceed the
    /// key's current version, or the change is refused as going backwards.
    pub version: Option<u64>,
    pub op: ChangeOp,
    pub timing: Timing,
    /// Who asked for it (a Kafka producer identity, or the provisioning API).
    pub producer: String,
    /// When it happened at the producer (Unix milliseconds); the document's last-modified.
    pub occurred_unix_ms: u64,
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOp {
    /// Creates or replaces one document.
    PutDocument {
        name: String,
        content_type: String,
        bytes: Bytes,
    },
    /// Removes one document.
    DeleteDocument { name: String },
    /// Removes every document and attribute of the key.
    DeleteKey,
    /// Sets (`Some`) or clears (`None`) a device's default user, whose documents become part
    /// of the device's profile.
    SetDefaultUser(Option<String>),
    /// Sets (`Some`) or clears (`None`) a device's resync target (its check-sync NOTIFY's
    /// destination and credentials).
    SetResync(Option<ResyncTarget>),
    /// Replaces every attribute of a device: its default user and its resync target (what
    /// the provisioning API's `PUT /provision/v1/device/<id>` asks for; absent is cleared).
    SetAttributes {
        default_user: Option<String>,
        resync: Option<ResyncTarget>,
    },
}

impl ChangeOp {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::PutDocument { .. } => "put_document",
            Self::DeleteDocument { .. } => "delete_document",
            Self::DeleteKey => "delete_key",
            Self::SetDefaultUser(_) => "set_default_user",
            Self::SetResync(_) => "set_resync",
            Self::SetAttributes { .. } => "set_attributes",
        }
    }

    /// Whether the change can change a device's resync target.
    pub fn touches_resync(&self) -> bool {
        matches!(
            self,
            Self::SetResync(_) | Self::SetAttributes { .. } | Self::DeleteKey
        )
    }

    /// The document the change is about, if any.
    pub fn document(&self) -> Option<&str> {
        match self {
            Self::PutDocument { name, .. } | Self::DeleteDocument { name } => Some(name),
            Self::DeleteKey
            | Self::SetDefaultUser(_)
            | Self::SetResync(_)
            | Self::SetAttributes { .. } => None,
        }
    }
}

/// When phones should have the change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// RFC 6080 `effective-by` (seconds) carried in the NOTIFYs: each phone fetches at a
    /// random moment within it.
    pub effective_by: Option<u32>,
    /// Seconds over which the change should reach the subscribers.
    pub rollout_window: Option<u32>,
}

impl From<Option<u32>> for Timing {
    /// Just an effective-by (the provisioning API's `effective-by` parameter).
    fn from(effective_by: Option<u32>) -> Self {
        Self {
            effective_by,
            rollout_window: None,
        }
    }
}

/// Whether `id` is an acceptable change id: 1..=[`MAX_CHANGE_ID`] visible ASCII characters.
pub fn valid_change_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CHANGE_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids() {
        assert!(valid_change_id("4f1c2b9e-1b7a-4a53-9a43-0e1f2d3c4b5a"));
        assert!(!valid_change_id(""));
        assert!(!valid_change_id("a b"));
        assert!(!valid_change_id(&"x".repeat(MAX_CHANGE_ID + 1)));
    }
}

//! The resolve seam: which documents a subscriber gets, and which keys that answer depends on.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::key::{ProfileKey, ProfileType};

/// One document as a NOTIFY points at it (RFC 4483 content indirection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRef {
    /// The key that owns the document (device, user, local network or class).
    pub owner: ProfileKey,
    /// Name of the document within its owner, e.g. `settings.xml`.
    pub name: String,
    /// Absolute URL the phone fetches (http, https; h3 later).
    pub url: String,
    pub content_type: String,
    pub size: u64,
    /// Hex SHA-1 of the document bytes (RFC 4483 `hash`).
    pub sha1_hex: String,
    /// Monotonic version of this document within its owner.
    pub version: u64,
    /// `Content-ID` value without angle brackets; stable while the bytes are unchanged.
    pub content_id: String,
    /// Until when (Unix seconds) the URL is promised to serve this content (RFC 4483
    /// `expiration`).
    pub expires_unix: u64,
}

/// What the notifier asks about one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub profile_type: ProfileType,
    /// The subject named by the SUBSCRIBE: a `Device`, `User` or `LocalNetwork` key.
    pub subject: ProfileKey,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub version: Option<String>,
}

/// The content tier's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resolution {
    /// Documents in a stable order (owner, then name).
    pub documents: Vec<DocumentRef>,
    /// Every key whose change can change this answer, provisioned or not: a device
    /// subscription depends on the device, its class and its default user. The notifier
    /// indexes the subscription under each of them.
    pub depends_on: Vec<ProfileKey>,
    /// Whether the subject itself is known to the content tier (drives the optional 403
    /// policy for unknown devices and users).
    pub known: bool,
    /// For a device: the URL of its provisioning folder, under which every document of the
    /// composed set (device, default user, class) is served by its name. Plug-and-play
    /// phones that append their own file names to the URL they are notified of get this.
    /// Not part of the entity tag: the folder's contents are the documents'.
    #[serde(default)]
    pub folder_url: Option<String>,
    /// For a device: the resync target the operator set (where its check-sync NOTIFY goes,
    /// with which credentials). Not part of the entity tag.
    #[serde(default)]
    pub resync: Option<crate::resync::ResyncTarget>,
}

impl Resolution {
    /// The entity tag of this answer (RFC 5839): a digest of what the phone would be told,
    /// independent of time and of the subscription, so every node computes the same tag.
    pub fn entity_tag(&self) -> String {
        let mut h = Sha1::new();
        for d in &self.documents {
            // A signed URL's query (its expiry and signature) changes with every resolve; the
            // document it names does not.
            let url = d
                .url
                .split_once('?')
                .map_or(d.url.as_str(), |(path, _)| path);
            for part in [url, d.content_type.as_str(), d.sha1_hex.as_str()] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
        }
        hex::encode(&h.finalize()[..10])
    }
}

/// Why a resolve failed. `Unavailable` and `Overloaded` are worth repeating (the subscriber
/// gets a 5xx meanwhile); `Invalid` is not: the same request will fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("content tier unavailable: {0}")]
    Unavailable(String),
    #[error("content tier overloaded")]
    Overloaded,
    /// The request, or the tier's answer to it, cannot be used (a key the tier refuses, a
    /// reply that does not decode): asking again gives the same answer.
    #[error("unresolvable: {0}")]
    Invalid(String),
}

impl ResolveError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Invalid(_))
    }
}

/// Implemented by the content tier in-process and (later) by a gRPC client.
#[async_trait]
pub trait ContentResolver: Send + Sync + 'static {
    async fn resolve(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError>;

    /// The bytes of one document, for subscribers that cannot take content indirection and
    /// get the document inline. `Ok(None)` when it no longer exists.
    async fn document_bytes(
        &self,
        owner: &ProfileKey,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        let _ = (owner, name);
        Ok(None)
    }

    /// The documents of `keys` are about to be fetched by many phones (a fan-out of a
    /// change to them is starting): the content tier may load them ahead. Advisory; returns
    /// how many documents it loaded.
    async fn prewarm(&self, keys: &[ProfileKey]) -> Result<usize, ResolveError> {
        let _ = keys;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(sha: &str) -> DocumentRef {
        DocumentRef {
            owner: ProfileKey::device("00df1e004cd0").unwrap(),
            name: "a.xml".into(),
            url: "http://h/a.xml".into(),
            content_type: "application/xml".into(),
            size: 3,
            sha1_hex: sha.into(),
            version: 1,
            content_id: "x@h".into(),
            expires_unix: 0,
        }
    }

    #[test]
    fn entity_tag_follows_content_not_time() {
        let a = Resolution {
            documents: vec![doc("aa")],
            ..Default::default()
        };
        let mut b = a.clone();
        b.documents[0].expires_unix = 99;
        assert_eq!(a.entity_tag(), b.entity_tag());
        // Nor does a URL's signature, which is re-issued with every expiry.
        b.documents[0].url.push_str("?exp=99&kid=ab&sig=cd");
        assert_eq!(a.entity_tag(), b.entity_tag());
        b.documents[0].sha1_hex = "bb".into();
        assert_ne!(a.entity_tag(), b.entity_tag());
        assert_ne!(Resolution::default().entity_tag(), a.entity_tag());
    }
}

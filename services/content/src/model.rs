//! The state of one key and the one rule that changes it, shared by every backend.
//!
//! [`KeyMeta`] is what the content tier knows about a key apart from document bytes; the
//! journal keeps it in memory, Redis keeps it as one JSON field per key. [`apply`] decides
//! what a validated change does to it: deterministic, so the journal's replay and the Redis
//! backend's compare-and-set retry reach the same answer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uaprof_api::{ProfileKey, ResyncTarget};

/// Change ids remembered per key for idempotency. A redelivered change is normally seen
/// again within seconds (Kafka redelivers from the last commit); an older replay is caught by
/// the version check instead, so a short history per key suffices and keeps keys small.
pub(crate) const RECENT_CHANGE_IDS: usize = 64;

/// Metadata of one stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DocMeta {
    pub content_type: String,
    pub sha1_hex: String,
    pub size: u64,
    /// The key's version when this document was last written.
    pub version: u64,
    pub content_id: String,
    pub updated_unix: u64,
}

/// One key's documents (without bytes) and attributes. Kept after a key is emptied (a
/// tombstone) so its version keeps counting up: a notifier that remembers "version 7 sent"
/// must never see a re-provisioned key start again at 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyMeta {
    pub version: u64,
    pub docs: BTreeMap<String, DocMeta>,
    /// Normalised AoR of the device's default user (device keys only).
    pub default_user: Option<String>,
    /// Where the device's check-sync NOTIFY goes (device keys only). Redis keeps metadata as
    /// JSON, which reads metadata written before this field as `None`.
    #[serde(default)]
    pub resync: Option<ResyncTarget>,
}

impl KeyMeta {
    pub fn is_live(&self) -> bool {
        !self.docs.is_empty() || self.default_user.is_some() || self.resync.is_some()
    }
}

/// The last [`RECENT_CHANGE_IDS`] change ids applied to a key, with the version each
/// produced. Kept apart from [`KeyMeta`], which every resolve reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recent(pub VecDeque<(String, u64)>);

impl Recent {
    /// The version an already applied change id produced.
    pub fn applied_version(&self, change_id: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(id, _)| id == change_id)
            .map(|(_, v)| *v)
    }

    fn push(&mut self, change_id: &str, version: u64) {
        self.0.push_back((change_id.to_owned(), version));
        while self.0.len() > RECENT_CHANGE_IDS {
            self.0.pop_front();
        }
    }
}

/// A change that passed validation, with everything that varies (hashes, clock) computed,
/// so applying it is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Prepared {
    pub change_id: String,
    pub key: ProfileKey,
    pub version: Option<u64>,
    pub op: PreparedOp,
    /// `effective-by` for the NOTIFYs this change causes.
    pub effective_by: Option<u32>,
    /// Seconds over which its NOTIFYs should be spread.
    pub rollout_window: Option<u32>,
    pub now_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PreparedOp {
    Put {
        name: String,
        content_type: String,
        #[serde(with = "crate::bytes_serde")]
        bytes: Bytes,
        sha1_hex: String,
        content_id: String,
    },
    DeleteDoc {
        name: String,
    },
    SetDefaultUser(Option<String>),
    DeleteKey,
    // Journal records are positional: new variants go last.
    SetResync(Option<ResyncTarget>),
    SetAttributes {
        default_user: Option<String>,
        resync: Option<ResyncTarget>,
    },
}

impl PreparedOp {
    /// Whether the change only makes sense on a key that has something to delete.
    pub fn is_delete(&self) -> bool {
        matches!(self, Self::DeleteDoc { .. } | Self::DeleteKey)
    }

    /// Whether the change can change a device's resync target (the feed tells notifiers).
    pub fn touches_resync(&self) -> bool {
        matches!(
            self,
            Self::SetResync(_) | Self::SetAttributes { .. } | Self::DeleteKey
        )
    }
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The key moved to `version`; `bytes` says what happens to document bytes.
    Applied {
        version: u64,
        created: bool,
        bytes: BytesEffect,
    },
    /// This change id was applied before (at `version`); nothing changes.
    Duplicate { version: u64 },
    /// The change names a version at or below the key's current one.
    Stale { current: u64, requested: u64 },
    /// The document or key to delete does not exist.
    NotFound,
}

/// What an applied change does to the document bytes stored beside the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BytesEffect {
    None,
    Put(String, Bytes),
    Delete(Vec<String>),
}

/// Applies `change` to `meta` and `recent` (the key's current state, default when unknown).
/// On anything but [`Decision::Applied`], both are unchanged.
///
/// `floor` is the store's version floor for a key it holds nothing of (0 for a held key):
/// the version a forgotten tombstone of the key may have reached, so a change without a
/// version continues above it. A change that names its version is the producer's to order
/// and is taken as named.
pub(crate) fn apply(
    meta: &mut KeyMeta,
    recent: &mut Recent,
    change: &Prepared,
    floor: u64,
) -> Decision {
    if let Some(version) = recent.applied_version(&change.change_id) {
        return Decision::Duplicate { version };
    }
    let version = match change.version {
        Some(v) if v <= meta.version => {
            return Decision::Stale {
                current: meta.version,
                requested: v,
            };
        }
        Some(v) => v,
        None => meta.version.max(floor) + 1,
    };
    let (created, bytes) = match &change.op {
        PreparedOp::Put {
            name,
            content_type,
            bytes,
            sha1_hex,
            content_id,
        } => {
            let doc = DocMeta {
                content_type: content_type.clone(),
                sha1_hex: sha1_hex.clone(),
                size: bytes.len() as u64,
                version,
                content_id: content_id.clone(),
                updated_unix: change.now_unix,
            };
            let created = meta.docs.insert(name.clone(), doc).is_none();
            (created, BytesEffect::Put(name.clone(), bytes.clone()))
        }
        PreparedOp::DeleteDoc { name } => {
            if meta.docs.remove(name).is_none() {
                return Decision::NotFound;
            }
            (false, BytesEffect::Delete(vec![name.clone()]))
        }
        PreparedOp::SetDefaultUser(user) => {
            let created = !meta.is_live();
            meta.default_user.clone_from(user);
            (created, BytesEffect::None)
        }
        PreparedOp::SetResync(target) => {
            let created = !meta.is_live();
            meta.resync.clone_from(target);
            (created, BytesEffect::None)
        }
        PreparedOp::SetAttributes {
            default_user,
            resync,
        } => {
            let created = !meta.is_live();
            meta.default_user.clone_from(default_user);
            meta.resync.clone_from(resync);
            (created, BytesEffect::None)
        }
        PreparedOp::DeleteKey => {
            if !meta.is_live() {
                return Decision::NotFound;
            }
            meta.default_user = None;
            meta.resync = None;
            let names = std::mem::take(&mut meta.docs).into_keys().collect();
            (false, BytesEffect::Delete(names))
        }
    };
    meta.version = version;
    recent.push(&change.change_id, version);
    Decision::Applied {
        version,
        created,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held key: no floor.
    fn apply(meta: &mut KeyMeta, recent: &mut Recent, change: &Prepared) -> Decision {
        super::apply(meta, recent, change, 0)
    }

    #[test]
    fn an_unheld_key_counts_on_from_the_floor_unless_the_change_names_its_version() {
        let (mut m, mut r) = (KeyMeta::default(), Recent::default());
        assert!(matches!(
            super::apply(&mut m, &mut r, &change("a", None, put("x.xml")), 40),
            Decision::Applied {
                version: 41,
                created: true,
                ..
            }
        ));
        let (mut m, mut r) = (KeyMeta::default(), Recent::default());
        assert!(matches!(
            super::apply(&mut m, &mut r, &change("a", Some(3), put("x.xml")), 40),
            Decision::Applied { version: 3, .. }
        ));
    }

    fn change(id: &str, version: Option<u64>, op: PreparedOp) -> Prepared {
        Prepared {
            change_id: id.into(),
            key: ProfileKey::class("acme", "Z100").expect("class"),
            version,
            op,
            effective_by: None,
            rollout_window: None,
            now_unix: 7,
        }
    }

    fn put(name: &str) -> PreparedOp {
        PreparedOp::Put {
            name: name.into(),
            content_type: "application/xml".into(),
            bytes: Bytes::from_static(b"<a/>"),
            sha1_hex: "00".into(),
            content_id: "c@h".into(),
        }
    }

    #[test]
    fn next_and_explicit_versions() {
        let mut m = KeyMeta::default();
        let mut r = Recent::default();
        assert!(matches!(
            apply(&mut m, &mut r, &change("a", None, put("x.xml"))),
            Decision::Applied {
                version: 1,
                created: true,
                ..
            }
        ));
        assert!(matches!(
            apply(&mut m, &mut r, &change("b", Some(10), put("x.xml"))),
            Decision::Applied {
                version: 10,
                created: false,
                ..
            }
        ));
        assert_eq!(m.docs["x.xml"].version, 10);
        assert_eq!(
            apply(&mut m, &mut r, &change("c", None, put("y.xml"))),
            Decision::Applied {
                version: 11,
                created: true,
                bytes: BytesEffect::Put("y.xml".into(), Bytes::from_static(b"<a/>"))
            }
        );
    }

    #[test]
    fn replays_and_stale_versions_change_nothing() {
        let mut m = KeyMeta::default();
        let mut r = Recent::default();
        apply(&mut m, &mut r, &change("a", Some(5), put("x.xml")));
        let before = (m.clone(), r.clone());
        assert_eq!(
            apply(&mut m, &mut r, &change("a", Some(5), put("x.xml"))),
            Decision::Duplicate { version: 5 }
        );
        assert_eq!(
            apply(&mut m, &mut r, &change("b", Some(5), put("x.xml"))),
            Decision::Stale {
                current: 5,
                requested: 5
            }
        );
        assert_eq!(
            apply(&mut m, &mut r, &change("c", Some(3), PreparedOp::DeleteKey)),
            Decision::Stale {
                current: 5,
                requested: 3
            }
        );
        assert_eq!((m, r), before);
    }

    #[test]
    fn deletes_of_missing_things_are_not_found() {
        let mut m = KeyMeta::default();
        let mut r = Recent::default();
        let del = |id: &str| {
            change(
                id,
                None,
                PreparedOp::DeleteDoc {
                    name: "x.xml".into(),
                },
            )
        };
        assert_eq!(apply(&mut m, &mut r, &del("a")), Decision::NotFound);
        assert_eq!(
            apply(&mut m, &mut r, &change("b", None, PreparedOp::DeleteKey)),
            Decision::NotFound
        );
        apply(&mut m, &mut r, &change("c", None, put("x.xml")));
        assert!(matches!(
            apply(&mut m, &mut r, &del("d")),
            Decision::Applied { .. }
        ));
        assert_eq!(apply(&mut m, &mut r, &del("e")), Decision::NotFound);
        // The tombstone keeps counting.
        assert_eq!(m.version, 2);
        assert!(!m.is_live());
    }

    #[test]
    fn delete_key_removes_every_document_and_the_default_user() {
        let mut m = KeyMeta::default();
        let mut r = Recent::default();
        apply(&mut m, &mut r, &change("a", None, put("x.xml")));
        apply(&mut m, &mut r, &change("b", None, put("y.xml")));
        apply(
            &mut m,
            &mut r,
            &change("c", None, PreparedOp::SetDefaultUser(Some("a@b".into()))),
        );
        assert_eq!(
            apply(&mut m, &mut r, &change("d", None, PreparedOp::DeleteKey)),
            Decision::Applied {
                version: 4,
                created: false,
                bytes: BytesEffect::Delete(vec!["x.xml".into(), "y.xml".into()])
            }
        );
        assert!(!m.is_live());
    }

    #[test]
    fn change_id_history_is_bounded() {
        let mut m = KeyMeta::default();
        let mut r = Recent::default();
        for i in 0..(RECENT_CHANGE_IDS + 10) {
            apply(
                &mut m,
                &mut r,
                &change(&format!("id{i}"), None, put("x.xml")),
            );
        }
        assert_eq!(r.0.len(), RECENT_CHANGE_IDS);
        assert_eq!(r.applied_version("id0"), None);
        assert_eq!(
            r.applied_version(&format!("id{}", RECENT_CHANGE_IDS + 9)),
            Some(RECENT_CHANGE_IDS as u64 + 10)
        );
    }
}

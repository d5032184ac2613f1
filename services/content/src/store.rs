//! The journaled state: documents, device attributes, versions and the retained change log.
//!
//! Everything here is deterministic: clock readings, hashes and content ids are computed by
//! the caller and carried in the [`Op`], so replay rebuilds exactly what was acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uaprof_api::{FeedError, ProfileChange, ProfileKey};

/// Default number of retained changes (see `ContentConfig::change_log_retention`).
pub(crate) const DEFAULT_RETENTION: u64 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredDoc {
    pub content_type: String,
    #[serde(with = "bytes_serde")]
    pub bytes: Bytes,
    pub sha1_hex: String,
    /// The key's version when this document was last written.
    pub version: u64,
    pub content_id: String,
    pub updated_unix: u64,
}

/// One key's documents and attributes. Entries are kept after a key is emptied (a
/// tombstone) so its version keeps counting up: a notifier that remembers "version 7 sent"
/// must never see a re-provisioned key start again at 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyEntry {
    pub key: ProfileKey,
    pub version: u64,
    pub docs: BTreeMap<String, StoredDoc>,
    /// Normalised AoR of the device's default user (device keys only).
    pub default_user: Option<String>,
}

impl KeyEntry {
    pub fn is_live(&self) -> bool {
        !self.docs.is_empty() || self.default_user.is_some()
    }
}

/// One retained change. The seq is implicit (contiguous), and keys are interned, which keeps
/// an entry at 24 bytes: a million retained changes cost about 24 MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ChangeEntry {
    key_id: u32,
    version: u64,
    effective_by: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    Put {
        key: ProfileKey,
        name: String,
        content_type: String,
        #[serde(with = "bytes_serde")]
        bytes: Bytes,
        sha1_hex: String,
        content_id: String,
        now_unix: u64,
        effective_by: Option<u32>,
    },
    DeleteDoc {
        key: ProfileKey,
        name: String,
        effective_by: Option<u32>,
    },
    SetAttributes {
        key: ProfileKey,
        default_user: Option<String>,
        effective_by: Option<u32>,
    },
    DeleteKey {
        key: ProfileKey,
        effective_by: Option<u32>,
    },
    /// Journaled (rather than read from config in `apply`) so replay trims identically.
    SetRetention(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub seq: u64,
    pub version: u64,
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyError {
    /// The document or key to delete does not exist (possibly deleted by a concurrent write).
    NotFound,
    /// More than 2^32 distinct keys: the interning table is full.
    TooManyKeys,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(from = "StoreRepr")]
pub(crate) struct Store {
    entries: Vec<KeyEntry>,
    #[serde(skip_serializing)]
    index: HashMap<ProfileKey, u32>,
    last_seq: u64,
    /// `changes[i]` has seq `last_seq - changes.len() + 1 + i`.
    changes: VecDeque<ChangeEntry>,
    retention: u64,
}

/// The serialised form of [`Store`] (the index is rebuilt on load). Field order must match
/// `Store` minus `index`: postcard is positional.
#[derive(Deserialize)]
struct StoreRepr {
    entries: Vec<KeyEntry>,
    last_seq: u64,
    changes: VecDeque<ChangeEntry>,
    retention: u64,
}

impl From<StoreRepr> for Store {
    fn from(r: StoreRepr) -> Self {
        let index = r
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.key.clone(), u32::try_from(i).ok()?)))
            .collect();
        Self {
            entries: r.entries,
            index,
            last_seq: r.last_seq,
            changes: r.changes,
            retention: r.retention,
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            last_seq: 0,
            changes: VecDeque::new(),
            retention: DEFAULT_RETENTION,
        }
    }
}

impl journal::Replay for Store {
    type Op = Op;
    type Outcome = Result<Applied, ApplyError>;

    fn apply(&mut self, op: Op) -> Self::Outcome {
        match op {
            Op::Put {
                key,
                name,
                content_type,
                bytes,
                sha1_hex,
                content_id,
                now_unix,
                effective_by,
            } => {
                let id = self.intern(key)?;
                let entry = self.entry_mut(id)?;
                entry.version += 1;
                let version = entry.version;
                let doc = StoredDoc {
                    content_type,
                    bytes,
                    sha1_hex,
                    version,
                    content_id,
                    updated_unix: now_unix,
                };
                let created = entry.docs.insert(name, doc).is_none();
                Ok(self.record(id, version, effective_by, created))
            }
            Op::DeleteDoc {
                key,
                name,
                effective_by,
            } => {
                let id = *self.index.get(&key).ok_or(ApplyError::NotFound)?;
                let entry = self.entry_mut(id)?;
                entry.docs.remove(&name).ok_or(ApplyError::NotFound)?;
                entry.version += 1;
                let version = entry.version;
                Ok(self.record(id, version, effective_by, false))
            }
            Op::SetAttributes {
                key,
                default_user,
                effective_by,
            } => {
                let id = self.intern(key)?;
                let entry = self.entry_mut(id)?;
                let created = !entry.is_live();
                entry.default_user = default_user;
                entry.version += 1;
                let version = entry.version;
                Ok(self.record(id, version, effective_by, created))
            }
            Op::DeleteKey { key, effective_by } => {
                let id = *self.index.get(&key).ok_or(ApplyError::NotFound)?;
                let entry = self.entry_mut(id)?;
                if !entry.is_live() {
                    return Err(ApplyError::NotFound);
                }
                entry.docs.clear();
                entry.default_user = None;
                entry.version += 1;
                let version = entry.version;
                Ok(self.record(id, version, effective_by, false))
            }
            Op::SetRetention(retention) => {
                self.retention = retention.max(1);
                self.trim();
                Ok(Applied {
                    seq: self.last_seq,
                    version: 0,
                    created: false,
                })
            }
        }
    }
}

impl Store {
    fn intern(&mut self, key: ProfileKey) -> Result<u32, ApplyError> {
        if let Some(&id) = self.index.get(&key) {
            return Ok(id);
        }
        let id = u32::try_from(self.entries.len()).map_err(|_| ApplyError::TooManyKeys)?;
        self.index.insert(key.clone(), id);
        self.entries.push(KeyEntry {
            key,
            version: 0,
            docs: BTreeMap::new(),
            default_user: None,
        });
        Ok(id)
    }

    fn entry_mut(&mut self, id: u32) -> Result<&mut KeyEntry, ApplyError> {
        // Ids come from `index`, which only holds valid positions; NotFound is unreachable.
        self.entries
            .get_mut(id as usize)
            .ok_or(ApplyError::NotFound)
    }

    fn record(
        &mut self,
        key_id: u32,
        version: u64,
        effective_by: Option<u32>,
        created: bool,
    ) -> Applied {
        self.last_seq += 1;
        self.changes.push_back(ChangeEntry {
            key_id,
            version,
            effective_by,
        });
        self.trim();
        Applied {
            seq: self.last_seq,
            version,
            created,
        }
    }

    fn trim(&mut self) {
        while self.changes.len() as u64 > self.retention {
            self.changes.pop_front();
        }
    }

    pub(crate) fn retention(&self) -> u64 {
        self.retention
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub(crate) fn entry(&self, key: &ProfileKey) -> Option<&KeyEntry> {
        let id = *self.index.get(key)?;
        self.entries.get(id as usize)
    }

    /// Live keys (with documents or attributes).
    pub(crate) fn live_keys(&self) -> impl Iterator<Item = &KeyEntry> {
        self.entries.iter().filter(|e| e.is_live())
    }

    /// Up to `max` retained changes after `after`.
    ///
    /// A position older than the retained window, or beyond the last seq (the store was
    /// replaced under the consumer), is a gap: the consumer reconciles against current
    /// content, which covers every change up to `last_seq`, and resumes after it.
    pub(crate) fn changes_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<ProfileChange>, FeedError> {
        let first_retained = self.last_seq + 1 - self.changes.len() as u64;
        if after > self.last_seq || after + 1 < first_retained {
            return Err(FeedError::Gap {
                after,
                resume_after: self.last_seq,
            });
        }
        let start = usize::try_from(after + 1 - first_retained).unwrap_or(usize::MAX);
        Ok(self
            .changes
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .filter_map(|(i, c)| {
                Some(ProfileChange {
                    seq: first_retained + i as u64,
                    key: self.entries.get(c.key_id as usize)?.key.clone(),
                    version: c.version,
                    effective_by: c.effective_by,
                })
            })
            .collect())
    }
}

/// Serialises `Bytes` as one byte string (postcard: length + raw bytes) instead of serde's
/// default of a sequence of individually encoded integers.
mod bytes_serde {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Bytes::from(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use journal::Replay;

    use super::*;

    fn put(key: &ProfileKey, name: &str) -> Op {
        Op::Put {
            key: key.clone(),
            name: name.into(),
            content_type: "application/xml".into(),
            bytes: Bytes::from_static(b"<x/>"),
            sha1_hex: "00".into(),
            content_id: "c@h".into(),
            now_unix: 1,
            effective_by: None,
        }
    }

    #[test]
    fn retention_trims_and_gaps() {
        let key = ProfileKey::device("00df1e004cd0").expect("key");
        let mut s = Store::default();
        assert!(s.apply(Op::SetRetention(3)).is_ok());
        for _ in 0..5 {
            assert!(s.apply(put(&key, "a.xml")).is_ok());
        }
        assert_eq!(s.last_seq(), 5);
        let got = s.changes_after(2, 10).expect("retained");
        assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(
            got.iter().map(|c| c.version).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            s.changes_after(1, 10),
            Err(FeedError::Gap {
                after: 1,
                resume_after: 5
            })
        );
        assert!(s.changes_after(5, 10).expect("empty").is_empty());
        assert!(s.changes_after(9, 10).is_err());
    }

    #[test]
    fn snapshot_round_trip_rebuilds_index() {
        let key = ProfileKey::user("alice@example.com").expect("key");
        let mut s = Store::default();
        assert!(s.apply(put(&key, "a.xml")).is_ok());
        let bytes = postcard::to_allocvec(&s).expect("encode");
        let back: Store = postcard::from_bytes(&bytes).expect("decode");
        let entry = back.entry(&key).expect("entry");
        assert_eq!(entry.docs["a.xml"].bytes, Bytes::from_static(b"<x/>"));
        assert_eq!(back.changes_after(0, 10).expect("feed").len(), 1);
    }

    #[test]
    fn deletes_of_missing_things_change_nothing() {
        let key = ProfileKey::user("alice@example.com").expect("key");
        let mut s = Store::default();
        let del = |k: &ProfileKey| Op::DeleteDoc {
            key: k.clone(),
            name: "a.xml".into(),
            effective_by: None,
        };
        assert_eq!(s.apply(del(&key)), Err(ApplyError::NotFound));
        assert!(s.apply(put(&key, "a.xml")).is_ok());
        assert!(s.apply(del(&key)).is_ok());
        assert_eq!(s.apply(del(&key)), Err(ApplyError::NotFound));
        assert_eq!(
            s.apply(Op::DeleteKey {
                key: key.clone(),
                effective_by: None
            }),
            Err(ApplyError::NotFound)
        );
        assert_eq!(s.last_seq(), 2);
        // The tombstone keeps the version counting.
        assert_eq!(s.entry(&key).map(|e| e.version), Some(2));
    }
}

//! The journaled state of the embedded backend: every key's metadata and document bytes, and
//! the retained change log that the in-process feed and the gRPC long-poll read.
//!
//! Everything here is deterministic: clock readings, hashes and content ids are computed by
//! the caller and carried in the [`Op`], so replay rebuilds exactly what was acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uaprof_api::{FeedError, ProfileChange, ProfileKey};

use crate::model::{self, BytesEffect, Decision, KeyMeta, Prepared, Recent};

/// Default number of retained changes (see `ContentConfig::change_log_retention`).
pub(crate) const DEFAULT_RETENTION: u64 = 1_000_000;

/// One key: its metadata and the bytes of its documents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyEntry {
    pub key: ProfileKey,
    pub meta: KeyMeta,
    pub recent: Recent,
    #[serde(with = "bytes_map")]
    pub bytes: BTreeMap<String, Bytes>,
}

/// One retained change. The seq is implicit (contiguous), and keys are interned, which keeps
/// an entry at 24 bytes: a million retained changes cost about 24 MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ChangeEntry {
    key_id: u32,
    version: u64,
    effective_by: Option<u32>,
    rollout_window: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    Apply(Box<Prepared>),
    /// Journaled (rather than read from config in `apply`) so replay trims identically.
    SetRetention(u64),
}

/// What an op did: the decision, and for an applied change its position in the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub decision: Decision,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyError {
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
    type Outcome = Result<Outcome, ApplyError>;

    fn apply(&mut self, op: Op) -> Self::Outcome {
        match op {
            Op::Apply(change) => self.apply_change(&change),
            Op::SetRetention(retention) => {
                self.retention = retention.max(1);
                self.trim();
                Ok(Outcome {
                    decision: Decision::NotFound,
                    seq: self.last_seq,
                })
            }
        }
    }
}

impl Store {
    fn apply_change(&mut self, change: &Prepared) -> Result<Outcome, ApplyError> {
        let id = match self.index.get(&change.key) {
            Some(&id) => id,
            // Deleting from a key never seen needs no entry (and must not create one).
            None if change.op.is_delete() => {
                return Ok(Outcome {
                    decision: Decision::NotFound,
                    seq: self.last_seq,
                });
            }
            None => self.intern(change.key.clone())?,
        };
        let Some(entry) = self.entries.get_mut(id as usize) else {
            // Ids come from `index`, which only holds valid positions.
            return Ok(Outcome {
                decision: Decision::NotFound,
                seq: self.last_seq,
            });
        };
        let decision = model::apply(&mut entry.meta, &mut entry.recent, change);
        if let Decision::Applied { version, bytes, .. } = &decision {
            match bytes {
                BytesEffect::None => {}
                BytesEffect::Put(name, b) => {
                    entry.bytes.insert(name.clone(), b.clone());
                }
                BytesEffect::Delete(names) => {
                    for n in names {
                        entry.bytes.remove(n);
                    }
                }
            }
            let version = *version;
            self.record(id, version, change.effective_by, change.rollout_window);
        }
        Ok(Outcome {
            decision,
            seq: self.last_seq,
        })
    }

    fn intern(&mut self, key: ProfileKey) -> Result<u32, ApplyError> {
        if let Some(&id) = self.index.get(&key) {
            return Ok(id);
        }
        let id = u32::try_from(self.entries.len()).map_err(|_| ApplyError::TooManyKeys)?;
        self.index.insert(key.clone(), id);
        self.entries.push(KeyEntry {
            key,
            meta: KeyMeta::default(),
            recent: Recent::default(),
            bytes: BTreeMap::new(),
        });
        Ok(id)
    }

    fn record(
        &mut self,
        key_id: u32,
        version: u64,
        effective_by: Option<u32>,
        rollout_window: Option<u32>,
    ) {
        self.last_seq += 1;
        self.changes.push_back(ChangeEntry {
            key_id,
            version,
            effective_by,
            rollout_window,
        });
        self.trim();
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
                    rollout_window: c.rollout_window,
                    traceparent: None,
                })
            })
            .collect())
    }
}

/// Document bytes by name, each as one byte string (see [`crate::bytes_serde`]).
mod bytes_map {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Doc(#[serde(with = "crate::bytes_serde")] Bytes);

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Bytes>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, Doc(v.clone()))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Bytes>, D::Error> {
        let m = BTreeMap::<String, Doc>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use journal::Replay;

    use super::*;
    use crate::model::PreparedOp;

    fn put(key: &ProfileKey, id: &str, name: &str) -> Op {
        Op::Apply(Box::new(Prepared {
            change_id: id.into(),
            key: key.clone(),
            version: None,
            op: PreparedOp::Put {
                name: name.into(),
                content_type: "application/xml".into(),
                bytes: Bytes::from_static(b"<x/>"),
                sha1_hex: "00".into(),
                content_id: "c@h".into(),
            },
            effective_by: None,
            rollout_window: None,
            now_unix: 1,
        }))
    }

    #[test]
    fn retention_trims_and_gaps() {
        let key = ProfileKey::device("00df1e004cd0").expect("key");
        let mut s = Store::default();
        assert!(s.apply(Op::SetRetention(3)).is_ok());
        for i in 0..5 {
            assert!(s.apply(put(&key, &format!("c{i}"), "a.xml")).is_ok());
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
        assert!(s.apply(put(&key, "c1", "a.xml")).is_ok());
        let bytes = postcard::to_allocvec(&s).expect("encode");
        let back: Store = postcard::from_bytes(&bytes).expect("decode");
        let entry = back.entry(&key).expect("entry");
        assert_eq!(entry.bytes["a.xml"], Bytes::from_static(b"<x/>"));
        assert_eq!(entry.recent.applied_version("c1"), Some(1));
        assert_eq!(back.changes_after(0, 10).expect("feed").len(), 1);
    }

    #[test]
    fn only_applied_changes_enter_the_log() {
        let key = ProfileKey::user("alice@example.com").expect("key");
        let mut s = Store::default();
        let del = Op::Apply(Box::new(Prepared {
            change_id: "d".into(),
            key: key.clone(),
            version: None,
            op: PreparedOp::DeleteKey,
            effective_by: None,
            rollout_window: None,
            now_unix: 1,
        }));
        assert_eq!(
            s.apply(del).expect("op").decision,
            Decision::NotFound,
            "a delete of an unknown key"
        );
        assert!(s.entry(&key).is_none(), "and it created no entry");
        assert!(s.apply(put(&key, "c1", "a.xml")).is_ok());
        let again = s.apply(put(&key, "c1", "a.xml")).expect("op");
        assert_eq!(again.decision, Decision::Duplicate { version: 1 });
        assert_eq!(s.last_seq(), 1);
    }
}

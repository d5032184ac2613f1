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
    /// Seq of the last change applied to the key: a tombstone is forgotten once this change
    /// has left the retained change log.
    last_change: u64,
}

impl KeyEntry {
    fn new(key: ProfileKey) -> Self {
        Self {
            key,
            meta: KeyMeta::default(),
            recent: Recent::default(),
            bytes: BTreeMap::new(),
            last_change: 0,
        }
    }

    fn doc_bytes(&self) -> u64 {
        self.bytes.values().map(|b| b.len() as u64).sum()
    }
}

/// One retained change. The seq is implicit (contiguous), and keys are interned, which keeps
/// an entry at 32 bytes: a million retained changes cost about 32 MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ChangeEntry {
    key_id: u32,
    version: u64,
    effective_by: Option<u32>,
    rollout_window: Option<u32>,
    /// The change could change the device's resync target ([`ProfileChange::resync`]).
    resync: bool,
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

/// Every key's state and the retained change log.
///
/// Bounded: a key emptied by a delete stays as a tombstone (its version keeps counting, see
/// [`KeyMeta`]) only while its deleting change is in the retained log. Then it is forgotten
/// and its version raises `version_floor`, above which a key the store holds nothing of
/// starts counting again, so a re-provisioned key never goes back to a version a notifier
/// has seen. Its slot is reused: no retained change refers to it any more.
#[derive(Debug, Serialize, Deserialize)]
#[serde(from = "StoreRepr")]
pub(crate) struct Store {
    /// Keys by interned id; `None` is a forgotten tombstone's slot, listed in `free`.
    entries: Vec<Option<KeyEntry>>,
    #[serde(skip_serializing)]
    free: Vec<u32>,
    #[serde(skip_serializing)]
    index: HashMap<ProfileKey, u32>,
    last_seq: u64,
    /// `changes[i]` has seq `last_seq - changes.len() + 1 + i`.
    changes: VecDeque<ChangeEntry>,
    retention: u64,
    /// The highest version a forgotten tombstone had.
    version_floor: u64,
    /// Tombstones by the seq of the change that emptied them, oldest first. An entry whose
    /// key changed again since is stale and skipped.
    #[serde(skip_serializing)]
    tombstones: VecDeque<(u64, u32)>,
    /// Document bytes held, and keys with a document or a default user.
    #[serde(skip_serializing)]
    doc_bytes: u64,
    #[serde(skip_serializing)]
    live_keys: u64,
}

/// Layout 3 of [`Store`], the serialised form (everything skipped above is rebuilt on load).
/// Field order must match `Store`'s serialised fields: postcard is positional.
#[derive(Deserialize)]
struct StoreRepr {
    entries: Vec<Option<KeyEntry>>,
    last_seq: u64,
    changes: VecDeque<ChangeEntry>,
    retention: u64,
    version_floor: u64,
}

/// Layout 2: keys without a resync target, changes without the resync flag.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoreReprV2 {
    entries: Vec<Option<KeyEntryV2>>,
    last_seq: u64,
    changes: VecDeque<ChangeEntryV2>,
    retention: u64,
    version_floor: u64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct KeyEntryV2 {
    key: ProfileKey,
    meta: KeyMetaV2,
    recent: Recent,
    #[serde(with = "bytes_map")]
    bytes: BTreeMap<String, Bytes>,
    last_change: u64,
}

/// [`KeyMeta`] of layouts 1 and 2.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct KeyMetaV2 {
    version: u64,
    docs: BTreeMap<String, model::DocMeta>,
    default_user: Option<String>,
}

impl From<KeyMetaV2> for KeyMeta {
    fn from(m: KeyMetaV2) -> Self {
        Self {
            version: m.version,
            docs: m.docs,
            default_user: m.default_user,
            resync: None,
        }
    }
}

/// [`ChangeEntry`] of layouts 1 and 2.
#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ChangeEntryV2 {
    key_id: u32,
    version: u64,
    effective_by: Option<u32>,
    rollout_window: Option<u32>,
}

impl From<ChangeEntryV2> for ChangeEntry {
    fn from(c: ChangeEntryV2) -> Self {
        Self {
            key_id: c.key_id,
            version: c.version,
            effective_by: c.effective_by,
            rollout_window: c.rollout_window,
            resync: false,
        }
    }
}

impl From<StoreReprV2> for StoreRepr {
    fn from(r: StoreReprV2) -> Self {
        Self {
            entries: r
                .entries
                .into_iter()
                .map(|slot| {
                    slot.map(|e| KeyEntry {
                        key: e.key,
                        meta: e.meta.into(),
                        recent: e.recent,
                        bytes: e.bytes,
                        last_change: e.last_change,
                    })
                })
                .collect(),
            last_seq: r.last_seq,
            changes: r.changes.into_iter().map(ChangeEntry::from).collect(),
            retention: r.retention,
            version_floor: r.version_floor,
        }
    }
}

/// Layout 1: no forgotten tombstones, so no free slots and no floor, and keys without the
/// seq of their last change.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoreReprV1 {
    entries: Vec<KeyEntryV1>,
    last_seq: u64,
    changes: VecDeque<ChangeEntryV2>,
    retention: u64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct KeyEntryV1 {
    key: ProfileKey,
    meta: KeyMetaV2,
    recent: Recent,
    #[serde(with = "bytes_map")]
    bytes: BTreeMap<String, Bytes>,
}

impl From<StoreReprV1> for Store {
    /// A key's last change is found in the retained log; a key with none there was last
    /// changed before it, so a tombstone among them is forgotten at once.
    fn from(r: StoreReprV1) -> Self {
        let mut entries: Vec<Option<KeyEntry>> = r
            .entries
            .into_iter()
            .map(|e| {
                Some(KeyEntry {
                    key: e.key,
                    meta: e.meta.into(),
                    recent: e.recent,
                    bytes: e.bytes,
                    last_change: 0,
                })
            })
            .collect();
        let first_retained = r.last_seq + 1 - r.changes.len() as u64;
        for (i, c) in r.changes.iter().enumerate() {
            if let Some(Some(e)) = entries.get_mut(c.key_id as usize) {
                e.last_change = first_retained + i as u64;
            }
        }
        let mut store = Self::from(StoreRepr {
            entries,
            last_seq: r.last_seq,
            changes: r.changes.into_iter().map(ChangeEntry::from).collect(),
            retention: r.retention,
            version_floor: 0,
        });
        store.trim();
        store
    }
}

impl From<StoreRepr> for Store {
    fn from(r: StoreRepr) -> Self {
        let mut store = Self {
            entries: r.entries,
            last_seq: r.last_seq,
            changes: r.changes,
            retention: r.retention,
            version_floor: r.version_floor,
            ..Self::default()
        };
        let mut tombstones = Vec::new();
        for (i, slot) in store.entries.iter().enumerate() {
            let Ok(id) = u32::try_from(i) else { break };
            match slot {
                None => store.free.push(id),
                Some(e) => {
                    store.index.insert(e.key.clone(), id);
                    store.doc_bytes += e.doc_bytes();
                    if e.meta.is_live() {
                        store.live_keys += 1;
                    } else {
                        tombstones.push((e.last_change, id));
                    }
                }
            }
        }
        tombstones.sort_unstable();
        store.tombstones = tombstones.into();
        store
    }
}

impl Default for Store {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            last_seq: 0,
            changes: VecDeque::new(),
            retention: DEFAULT_RETENTION,
            version_floor: 0,
            tombstones: VecDeque::new(),
            doc_bytes: 0,
            live_keys: 0,
        }
    }
}

impl journal::Replay for Store {
    type Op = Op;
    type Outcome = Result<Outcome, ApplyError>;

    const STATE_FORMAT: u32 = 3;

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

    fn decode_snapshot(format: u32, bytes: &[u8]) -> Result<Self, String> {
        match format {
            1 => postcard::from_bytes::<StoreReprV1>(bytes)
                .map(Self::from)
                .map_err(|e| e.to_string()),
            2 => postcard::from_bytes::<StoreReprV2>(bytes)
                .map(|r| Self::from(StoreRepr::from(r)))
                .map_err(|e| e.to_string()),
            3 => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
            other => Err(format!(
                "content store layout {other}, this build reads 1 to 3"
            )),
        }
    }
}

impl Store {
    fn apply_change(&mut self, change: &Prepared) -> Result<Outcome, ApplyError> {
        let held = self.index.get(&change.key).copied();
        let not_applied = |decision, seq| Ok(Outcome { decision, seq });
        let (id, before_bytes, was_live, decision) = match held {
            Some(id) => {
                let Some(entry) = self.entries.get_mut(id as usize).and_then(Option::as_mut) else {
                    // Ids come from `index`, which only holds occupied positions.
                    return not_applied(Decision::NotFound, self.last_seq);
                };
                let (before, was_live) = (entry.doc_bytes(), entry.meta.is_live());
                let decision = model::apply(&mut entry.meta, &mut entry.recent, change, 0);
                (id, before, was_live, decision)
            }
            // Deleting from a key never seen needs no entry (and must not create one).
            None if change.op.is_delete() => {
                return not_applied(Decision::NotFound, self.last_seq);
            }
            None => {
                let mut entry = KeyEntry::new(change.key.clone());
                let decision = model::apply(
                    &mut entry.meta,
                    &mut entry.recent,
                    change,
                    self.version_floor,
                );
                if !matches!(decision, Decision::Applied { .. }) {
                    // A refused change leaves no entry behind.
                    return not_applied(decision, self.last_seq);
                }
                (self.insert(entry)?, 0, false, decision)
            }
        };
        let Decision::Applied { version, bytes, .. } = &decision else {
            return not_applied(decision, self.last_seq);
        };
        let version = *version;
        self.last_seq += 1;
        let seq = self.last_seq;
        if let Some(entry) = self.entries.get_mut(id as usize).and_then(Option::as_mut) {
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
            entry.last_change = seq;
            self.doc_bytes = self.doc_bytes - before_bytes + entry.doc_bytes();
            match (was_live, entry.meta.is_live()) {
                (false, true) => self.live_keys += 1,
                (true, false) => self.live_keys -= 1,
                _ => {}
            }
            if !entry.meta.is_live() {
                self.tombstones.push_back((seq, id));
            }
        }
        self.changes.push_back(ChangeEntry {
            key_id: id,
            version,
            effective_by: change.effective_by,
            rollout_window: change.rollout_window,
            resync: change.op.touches_resync(),
        });
        self.trim();
        Ok(Outcome { decision, seq })
    }

    /// Places a new key in a free slot or a new one.
    fn insert(&mut self, entry: KeyEntry) -> Result<u32, ApplyError> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.entries.len()).map_err(|_| ApplyError::TooManyKeys)?;
                self.entries.push(None);
                id
            }
        };
        self.index.insert(entry.key.clone(), id);
        if let Some(slot) = self.entries.get_mut(id as usize) {
            *slot = Some(entry);
        }
        Ok(id)
    }

    /// Drops changes beyond the retention, then the tombstones whose emptying change they
    /// were.
    fn trim(&mut self) {
        while self.changes.len() as u64 > self.retention {
            self.changes.pop_front();
        }
        let first_retained = self.first_retained();
        while let Some(&(seq, id)) = self.tombstones.front() {
            if seq >= first_retained {
                break;
            }
            self.tombstones.pop_front();
            let slot = self.entries.get_mut(id as usize);
            let Some(slot) = slot.filter(|s| {
                s.as_ref()
                    .is_some_and(|e| e.last_change == seq && !e.meta.is_live())
            }) else {
                // The key changed again after it was emptied.
                continue;
            };
            if let Some(e) = slot.take() {
                self.version_floor = self.version_floor.max(e.meta.version);
                self.index.remove(&e.key);
                self.free.push(id);
            }
        }
    }

    fn first_retained(&self) -> u64 {
        self.last_seq + 1 - self.changes.len() as u64
    }

    pub(crate) fn retention(&self) -> u64 {
        self.retention
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Document bytes the store holds.
    pub(crate) fn doc_bytes(&self) -> u64 {
        self.doc_bytes
    }

    /// Keys holding a document or a default user (tombstones excluded).
    pub(crate) fn live_keys(&self) -> u64 {
        self.live_keys
    }

    /// Emptied keys still remembered.
    pub(crate) fn tombstones(&self) -> u64 {
        self.index.len() as u64 - self.live_keys
    }

    pub(crate) fn entry(&self, key: &ProfileKey) -> Option<&KeyEntry> {
        let id = *self.index.get(key)?;
        self.entries.get(id as usize)?.as_ref()
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
        let first_retained = self.first_retained();
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
                    key: self.entries.get(c.key_id as usize)?.as_ref()?.key.clone(),
                    version: c.version,
                    effective_by: c.effective_by,
                    rollout_window: c.rollout_window,
                    traceparent: None,
                    resync: c.resync,
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

    fn delete(key: &ProfileKey, id: &str) -> Op {
        Op::Apply(Box::new(Prepared {
            change_id: id.into(),
            key: key.clone(),
            version: None,
            op: PreparedOp::DeleteKey,
            effective_by: None,
            rollout_window: None,
            now_unix: 1,
        }))
    }

    fn version(s: &mut Store, op: Op) -> u64 {
        match s.apply(op).expect("op").decision {
            Decision::Applied { version, .. } => version,
            other => panic!("not applied: {other:?}"),
        }
    }

    fn device(n: u8) -> ProfileKey {
        ProfileKey::device(&format!("00df1e004c{n:02x}")).expect("key")
    }

    #[test]
    fn a_tombstone_is_forgotten_with_its_delete_and_the_key_counts_on_above_it() {
        let (a, b) = (device(1), device(2));
        let mut s = Store::default();
        assert!(s.apply(Op::SetRetention(2)).is_ok());
        version(&mut s, put(&a, "a1", "x.xml"));
        version(&mut s, put(&a, "a2", "x.xml"));
        assert_eq!(version(&mut s, delete(&a, "a3")), 3);
        assert_eq!((s.live_keys(), s.tombstones(), s.doc_bytes()), (0, 1, 0));
        version(&mut s, put(&b, "b1", "x.xml"));
        assert!(s.entry(&a).is_some(), "its delete is still retained");
        version(&mut s, put(&b, "b2", "y.xml"));
        assert!(
            s.entry(&a).is_none(),
            "forgotten once its delete left the log"
        );
        assert_eq!((s.live_keys(), s.tombstones(), s.doc_bytes()), (1, 0, 8));
        // The replayed change id is new to the store now, and its version continues.
        assert_eq!(version(&mut s, put(&a, "a1", "x.xml")), 4);
        assert_eq!(s.entries.len(), 2, "the forgotten key's slot was reused");
        let keys: Vec<_> = s.changes_after(4, 9).expect("feed");
        assert_eq!(
            keys.iter()
                .map(|c| (c.key.clone(), c.version))
                .collect::<Vec<_>>(),
            vec![(b.clone(), 2), (a.clone(), 4)]
        );
        // A new key with no history also starts above the floor.
        assert_eq!(version(&mut s, put(&device(3), "c1", "x.xml")), 4);
    }

    #[test]
    fn a_key_provisioned_again_before_its_delete_leaves_the_log_is_kept() {
        let (a, b) = (device(1), device(2));
        let mut s = Store::default();
        assert!(s.apply(Op::SetRetention(1)).is_ok());
        version(&mut s, put(&a, "a1", "x.xml"));
        version(&mut s, delete(&a, "a2"));
        assert_eq!(version(&mut s, put(&a, "a3", "x.xml")), 3);
        for i in 0..3 {
            version(&mut s, put(&b, &format!("b{i}"), "x.xml"));
        }
        assert_eq!(s.entry(&a).expect("live").meta.version, 3);
        assert_eq!(
            version(&mut s, put(&device(3), "c", "x.xml")),
            1,
            "no floor"
        );
    }

    #[test]
    fn a_refused_change_on_an_unheld_key_leaves_nothing() {
        let a = device(1);
        let mut s = Store::default();
        let Op::Apply(mut p) = put(&a, "a1", "x.xml") else {
            unreachable!()
        };
        p.version = Some(0);
        let out = s.apply(Op::Apply(p)).expect("op");
        assert!(matches!(out.decision, Decision::Stale { .. }), "{out:?}");
        assert!(s.entry(&a).is_none());
        assert_eq!((s.last_seq(), s.tombstones()), (0, 0));
    }

    #[test]
    fn the_floor_and_free_slots_survive_a_snapshot() {
        let (a, b) = (device(1), device(2));
        let mut s = Store::default();
        assert!(s.apply(Op::SetRetention(1)).is_ok());
        version(&mut s, put(&a, "a1", "x.xml"));
        version(&mut s, put(&a, "a2", "x.xml"));
        version(&mut s, delete(&a, "a3"));
        version(&mut s, put(&b, "b1", "x.xml"));
        let bytes = postcard::to_allocvec(&s).expect("encode");
        let mut back = Store::decode_snapshot(3, &bytes).expect("decode");
        assert_eq!(
            (back.live_keys(), back.tombstones(), back.doc_bytes()),
            (1, 0, 4)
        );
        assert_eq!(version(&mut back, put(&device(3), "c1", "x.xml")), 4);
        assert_eq!(back.entries.len(), 2, "the free slot was reused");
    }

    #[test]
    fn layout_one_migrates_and_forgets_tombstones_already_out_of_the_log() {
        let (a, b, c) = (device(1), device(2), device(3));
        let entry = |key: &ProfileKey, version: u64, live: bool| {
            let mut meta = KeyMetaV2 {
                version,
                docs: BTreeMap::new(),
                default_user: None,
            };
            let mut bytes = BTreeMap::new();
            if live {
                meta.default_user = Some("u@example.com".into());
                bytes.insert("x.xml".to_owned(), Bytes::from_static(b"<x/>"));
            }
            KeyEntryV1 {
                key: key.clone(),
                meta,
                recent: Recent::default(),
                bytes,
            }
        };
        let change = |key_id, version| ChangeEntryV2 {
            key_id,
            version,
            effective_by: None,
            rollout_window: None,
        };
        // Seqs 1..=9 happened; 8 and 9 are retained: b was emptied at 8, a at some seq
        // before, c is live.
        let old = StoreReprV1 {
            entries: vec![entry(&a, 7, false), entry(&b, 5, false), entry(&c, 2, true)],
            last_seq: 9,
            changes: [change(1, 5), change(2, 2)].into(),
            retention: 2,
        };
        let bytes = postcard::to_allocvec(&old).expect("encode");
        let mut s = Store::decode_snapshot(1, &bytes).expect("migrates");
        assert!(s.entry(&a).is_none(), "a's delete is no longer retained");
        assert_eq!(s.entry(&b).expect("b kept").meta.version, 5);
        assert_eq!((s.live_keys(), s.tombstones(), s.doc_bytes()), (1, 1, 4));
        assert_eq!(
            version(&mut s, put(&a, "a", "x.xml")),
            8,
            "above a's version 7"
        );
        let fed = s.changes_after(8, 9).expect("feed");
        assert_eq!(
            fed.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
            vec![c.clone(), a.clone()]
        );
        assert!(s.entry(&b).is_none(), "b's delete has left the log now");
        assert!(Store::decode_snapshot(3, &bytes).is_err());
    }

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
    fn layout_two_migrates_without_resync_targets() {
        let key = device(1);
        let mut docs = BTreeMap::new();
        docs.insert(
            "x.xml".to_owned(),
            model::DocMeta {
                content_type: "application/xml".into(),
                sha1_hex: "00".into(),
                size: 4,
                version: 3,
                content_id: "c@h".into(),
                updated_unix: 1,
            },
        );
        let old = StoreReprV2 {
            entries: vec![Some(KeyEntryV2 {
                key: key.clone(),
                meta: KeyMetaV2 {
                    version: 3,
                    docs,
                    default_user: Some("u@example.com".into()),
                },
                recent: Recent::default(),
                bytes: [("x.xml".to_owned(), Bytes::from_static(b"<x/>"))].into(),
                last_change: 3,
            })],
            last_seq: 3,
            changes: [ChangeEntryV2 {
                key_id: 0,
                version: 3,
                effective_by: Some(60),
                rollout_window: None,
            }]
            .into(),
            retention: 10,
            version_floor: 0,
        };
        let bytes = postcard::to_allocvec(&old).expect("encode");
        let s = Store::decode_snapshot(2, &bytes).expect("migrates");
        let e = s.entry(&key).expect("kept");
        assert_eq!(e.meta.default_user.as_deref(), Some("u@example.com"));
        assert_eq!(e.meta.resync, None);
        let feed = s.changes_after(2, 10).expect("feed");
        assert_eq!((feed[0].version, feed[0].effective_by), (3, Some(60)));
        assert!(!feed[0].resync);
        assert_eq!((s.live_keys(), s.doc_bytes()), (1, 4));
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

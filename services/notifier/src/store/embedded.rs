//! The embedded store: subscriptions in memory, made durable by a local journal.
//!
//! This is the single-node default (`role = all` with no Redis). Every mutation is a logical
//! operation appended to the journal before it is applied, so a restart (or a crash) replays
//! to exactly the acknowledged state. Indexes are derived data: snapshots hold only the
//! subscriptions and are re-indexed on load.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use journal::{Journal, JournalOptions, Replay};
use serde::{Deserialize, Serialize};
use uaprof_api::{ProfileKey, ProfileType};

use super::{
    FanoutJob, MAX_CSEQ, PackageName, Page, StoreError, SubId, Subscription, SubscriptionStore,
    TURN_HOLD, Turn, Upserted, cseq_floor,
};
use crate::{Clock, SystemClock};

/// A subscription as held in memory: its postcard encoding, one allocation instead of the
/// two dozen small strings of a decoded [`Subscription`]. Held subscriptions are read rarely
/// (refresh, fan-out, expiry), so memory per subscription matters more than decode time.
struct Packed(Box<[u8]>);

impl Packed {
    fn pack(sub: &Subscription) -> Packed {
        // Encoding plain owned data into a Vec cannot fail short of allocation failure.
        Packed(
            postcard::to_allocvec(sub)
                .expect("postcard encodes a Subscription")
                .into_boxed_slice(),
        )
    }

    fn unpack(&self) -> Option<Subscription> {
        postcard::from_bytes(&self.0).ok()
    }
}

/// The subscriptions of one profile key. Most keys (a device, a user) have one subscriber,
/// so that case holds no tree node; classes with a million members use the tree.
enum Members {
    One(SubId),
    Many(BTreeSet<SubId>),
}

impl Members {
    fn insert(&mut self, id: SubId) {
        match self {
            Members::One(one) if *one == id => {}
            Members::One(one) => *self = Members::Many(BTreeSet::from([*one, id])),
            Members::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`; true when no member is left.
    fn remove(&mut self, id: SubId) -> bool {
        match self {
            Members::One(one) => *one == id,
            Members::Many(set) => {
                set.remove(&id);
                if set.len() == 1
                    && let Some(last) = set.first().copied()
                {
                    *self = Members::One(last);
                }
                set_is_empty(self)
            }
        }
    }

    fn after(&self, after: Option<SubId>) -> Box<dyn Iterator<Item = SubId> + '_> {
        use std::ops::Bound::{Excluded, Unbounded};
        match self {
            Members::One(one) => {
                Box::new(std::iter::once(*one).filter(move |id| after.is_none_or(|a| *id > a)))
            }
            Members::Many(set) => match after {
                None => Box::new(set.iter().copied()),
                Some(a) => Box::new(set.range((Excluded(a), Unbounded)).copied()),
            },
        }
    }
}

fn set_is_empty(m: &Members) -> bool {
    matches!(m, Members::Many(set) if set.is_empty())
}

#[derive(Default)]
pub struct State {
    subs: HashMap<SubId, Packed>,
    feed_offset: u64,
    /// Pending fan-out work by target: (version, effective-by, rollout window), and the
    /// trace it was recorded in (in memory only: see [`FanoutJob::traceparent`]).
    jobs: HashMap<Option<ProfileKey>, (JobIdentity, Option<String>)>,
    // Derived indexes, rebuilt from `subs` on load.
    index: HashMap<ProfileKey, Members>,
    expiry: BTreeSet<(u64, SubId)>,
    instances: HashMap<(String, ProfileType), SubId>,
    /// Live subscriptions by source host (the per-source cap).
    sources: HashMap<IpAddr, u32>,
}

/// What a walk finishes: a job's version, effective-by and rollout window.
type JobIdentity = (u64, Option<u32>, Option<u32>);

/// Snapshot layout: each subscription in its packed (postcard) form.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    subs: Vec<Vec<u8>>,
    feed_offset: u64,
    jobs: Vec<FanoutJob>,
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // Serialised as `Snapshot` without cloning the map.
        struct Subs<'a>(&'a HashMap<SubId, Packed>);
        impl Serialize for Subs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.values().map(|p| &*p.0))
            }
        }
        let mut st = s.serialize_struct("Snapshot", 3)?;
        st.serialize_field("subs", &Subs(&self.subs))?;
        st.serialize_field("feed_offset", &self.feed_offset)?;
        st.serialize_field("jobs", &self.job_list())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let snap = Snapshot::deserialize(d)?;
        let mut state = State {
            feed_offset: snap.feed_offset,
            ..State::default()
        };
        for job in snap.jobs {
            state.enqueue(job);
        }
        for bytes in snap.subs {
            let sub = Packed(bytes.into_boxed_slice())
                .unpack()
                .ok_or_else(|| serde::de::Error::custom("undecodable subscription in snapshot"))?;
            state.link(sub);
        }
        Ok(state)
    }
}

impl State {
    fn job_list(&self) -> Vec<FanoutJob> {
        self.jobs
            .iter()
            .map(
                |(target, ((version, effective_by, rollout_window), traceparent))| FanoutJob {
                    target: target.clone(),
                    version: *version,
                    effective_by: *effective_by,
                    rollout_window: *rollout_window,
                    traceparent: traceparent.clone(),
                },
            )
            .collect()
    }

    fn enqueue(&mut self, job: FanoutJob) {
        let entry = self
            .jobs
            .entry(job.target)
            .or_insert(((0, None, None), None));
        if job.version > entry.0.0 || entry.0.0 == 0 {
            *entry = (
                (job.version, job.effective_by, job.rollout_window),
                job.traceparent,
            );
        }
    }

    fn link(&mut self, sub: Subscription) {
        for key in &sub.depends_on {
            self.index_key(key.clone(), sub.id);
        }
        self.expiry.insert((sub.expires_at_ms, sub.id));
        if let Some(instance) = &sub.instance {
            self.instances
                .insert((instance.clone(), sub.profile_type), sub.id);
        }
        if counts_against_source(&sub) {
            *self.sources.entry(source_host(&sub)).or_default() += 1;
        }
        self.subs.insert(sub.id, Packed::pack(&sub));
    }

    fn unlink(&mut self, id: SubId) -> Option<Subscription> {
        let sub = self.subs.remove(&id)?.unpack()?;
        self.unindex_keys(id, &sub.depends_on);
        self.expiry.remove(&(sub.expires_at_ms, id));
        if let Some(instance) = &sub.instance {
            let k = (instance.clone(), sub.profile_type);
            if self.instances.get(&k) == Some(&id) {
                self.instances.remove(&k);
            }
        }
        let host = source_host(&sub);
        if counts_against_source(&sub)
            && let Some(n) = self.sources.get_mut(&host)
        {
            *n -= 1;
            if *n == 0 {
                self.sources.remove(&host);
            }
        }
        Some(sub)
    }

    fn index_key(&mut self, key: ProfileKey, id: SubId) {
        match self.index.get_mut(&key) {
            Some(m) => m.insert(id),
            None => {
                self.index.insert(key, Members::One(id));
            }
        }
    }

    fn unindex_keys(&mut self, id: SubId, keys: &[ProfileKey]) {
        for key in keys {
            if let Some(m) = self.index.get_mut(key)
                && m.remove(id)
            {
                self.index.remove(key);
            }
        }
    }

    fn insert(&mut self, sub: Box<Subscription>, per_source: u32) -> Outcome {
        if self.subs.contains_key(&sub.id) {
            return Outcome::Inserted(Err(Refused::Conflict(sub.id)));
        }
        let holder = sub.instance.as_ref().and_then(|instance| {
            self.instances
                .get(&(instance.clone(), sub.profile_type))
                .copied()
        });
        if per_source > 0 {
            let host = source_host(&sub);
            let held = self.sources.get(&host).copied().unwrap_or(0);
            // The subscription this one replaces leaves room for it.
            let leaving = holder
                .and_then(|id| self.subs.get(&id).and_then(Packed::unpack))
                .is_some_and(|old| source_host(&old) == host);
            if held - u32::from(leaving) >= per_source {
                return Outcome::Inserted(Err(Refused::SourceLimit(host)));
            }
        }
        let replaced = holder
            .and_then(|old| self.unlink(old))
            .into_iter()
            .collect();
        self.link(*sub);
        Outcome::Inserted(Ok(replaced))
    }

    fn refresh(&mut self, mut sub: Box<Subscription>, floor: u32) -> Outcome {
        match self.unlink(sub.id) {
            Some(old) => {
                sub.local_cseq = after(sub.local_cseq.max(old.local_cseq), floor);
                let cseq = sub.local_cseq;
                self.link(*sub);
                Outcome::Cseq(Some(cseq))
            }
            None => Outcome::Cseq(None),
        }
    }

    fn next_cseq(&mut self, id: SubId, depends_on: Option<Vec<ProfileKey>>, floor: u32) -> Outcome {
        let Some(mut sub) = self.subs.get(&id).and_then(Packed::unpack) else {
            return Outcome::Cseq(None);
        };
        sub.local_cseq = after(sub.local_cseq, floor);
        let cseq = sub.local_cseq;
        if let Some(new_keys) = depends_on
            && new_keys != sub.depends_on
        {
            let old = std::mem::replace(&mut sub.depends_on, new_keys.clone());
            self.unindex_keys(id, &old);
            for key in new_keys {
                self.index_key(key, id);
            }
        }
        self.subs.insert(id, Packed::pack(&sub));
        Outcome::Cseq(Some(cseq))
    }

    fn page(iter: impl Iterator<Item = SubId>, limit: usize) -> Page {
        let mut ids: Vec<SubId> = iter.take(limit.saturating_add(1)).collect();
        let next = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().copied()
        } else {
            None
        };
        Page { ids, next }
    }
}

#[derive(Serialize, Deserialize)]
pub enum Op {
    Insert(Box<Subscription>),
    Refresh(Box<Subscription>),
    Remove(SubId),
    NextCseq {
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
    },
    Confirm {
        id: SubId,
        etag: String,
    },
    TakeDue {
        now_ms: u64,
        limit: u32,
    },
    SetOffset(u64),
    Enqueue(Vec<FanoutJob>),
    Finish(FanoutJob),
    // Appended, so that journals written before them still decode (postcard numbers the
    // variants): `Refresh` and `NextCseq` with the CSeq floor of the writer's clock (the
    // older two replay with floor 0, as they were applied).
    RefreshAt {
        sub: Box<Subscription>,
        floor: u32,
    },
    NextCseqAt {
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
        floor: u32,
    },
    /// `Insert` refused when the source host holds `per_source` subscriptions (0: no cap).
    InsertCapped {
        sub: Box<Subscription>,
        per_source: u32,
    },
}

/// Why an insert stored nothing.
pub enum Refused {
    Conflict(SubId),
    SourceLimit(IpAddr),
}

/// Whether a record counts toward its source host's cap: a check-sync record is no
/// subscription the host holds (the Redis store counts only capped inserts, which it never
/// is).
fn counts_against_source(sub: &Subscription) -> bool {
    sub.package != PackageName::CheckSync
}

/// The host a subscription is counted against for the per-source cap.
fn source_host(sub: &Subscription) -> IpAddr {
    sub.source.ip().to_canonical()
}

pub enum Outcome {
    Inserted(Result<Vec<Subscription>, Refused>),
    Removed(Option<Box<Subscription>>),
    Cseq(Option<u32>),
    Due(Vec<Subscription>),
    Finished(bool),
    Done,
}

impl Replay for State {
    type Op = Op;
    type Outcome = Outcome;

    fn apply(&mut self, op: Op) -> Outcome {
        match op {
            Op::Insert(sub) => self.insert(sub, 0),
            Op::InsertCapped { sub, per_source } => self.insert(sub, per_source),
            Op::Refresh(sub) => self.refresh(sub, 0),
            Op::RefreshAt { sub, floor } => self.refresh(sub, floor),
            Op::Remove(id) => Outcome::Removed(self.unlink(id).map(Box::new)),
            Op::NextCseq { id, depends_on } => self.next_cseq(id, depends_on, 0),
            Op::NextCseqAt {
                id,
                depends_on,
                floor,
            } => self.next_cseq(id, depends_on, floor),
            Op::Confirm { id, etag } => {
                if let Some(mut sub) = self.subs.get(&id).and_then(Packed::unpack) {
                    sub.confirmed_etag = Some(etag);
                    self.subs.insert(id, Packed::pack(&sub));
                }
                Outcome::Done
            }
            Op::TakeDue { now_ms, limit } => {
                let due: Vec<SubId> = self
                    .expiry
                    .iter()
                    .take_while(|(at, _)| *at <= now_ms)
                    .take(limit as usize)
                    .map(|(_, id)| *id)
                    .collect();
                Outcome::Due(due.into_iter().filter_map(|id| self.unlink(id)).collect())
            }
            Op::SetOffset(seq) => {
                self.feed_offset = self.feed_offset.max(seq);
                Outcome::Done
            }
            Op::Enqueue(jobs) => {
                for job in jobs {
                    self.enqueue(job);
                }
                Outcome::Done
            }
            Op::Finish(job) => {
                let current = (job.version, job.effective_by, job.rollout_window);
                let done = self.jobs.get(&job.target).map(|j| &j.0) == Some(&current);
                if done {
                    self.jobs.remove(&job.target);
                }
                Outcome::Finished(done)
            }
        }
    }
}

/// The CSeq after `last`, at least `floor` (see [`super::next_cseq`]; the floor is in the op
/// so that replay gives the same CSeq).
fn after(last: u32, floor: u32) -> u32 {
    last.saturating_add(1).max(floor).min(MAX_CSEQ)
}

/// A dialog's NOTIFY turn: until when it is held, and whether a NOTIFY is wanted after it.
#[derive(Clone, Copy)]
struct TurnState {
    until_ms: u64,
    wanted: bool,
}

/// The embedded, journal-backed [`SubscriptionStore`]. It is one partition (0), always
/// owned by this node.
#[derive(Clone)]
pub struct EmbeddedStore {
    journal: Journal<State>,
    /// Wakes the fan-out worker when work is enqueued.
    fanout: Arc<tokio::sync::Notify>,
    /// NOTIFY turns of dialogs with a NOTIFY in flight. Not journaled: after a restart no
    /// NOTIFY is in flight.
    turns: Arc<std::sync::Mutex<HashMap<SubId, TurnState>>>,
    /// The wall clock of the CSeq floor.
    clock: Arc<dyn Clock>,
}

impl EmbeddedStore {
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<Self, StoreError> {
        let journal = Journal::open(dir, opts)
            .map_err(|e| StoreError::Other(format!("open {dir:?}: {e}")))?;
        Ok(Self {
            journal,
            fanout: Arc::new(tokio::sync::Notify::new()),
            turns: Arc::new(std::sync::Mutex::new(HashMap::new())),
            clock: Arc::new(SystemClock),
        })
    }

    /// Takes the CSeq floor from `clock` instead of the system clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn floor(&self) -> u32 {
        cseq_floor(self.clock.now_ms())
    }

    fn lock_turns(&self) -> std::sync::MutexGuard<'_, HashMap<SubId, TurnState>> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the turn of `id` unless one is held; with `mark`, records that a NOTIFY is
    /// wanted after the one in flight.
    fn take_turn(&self, id: SubId, mark: bool) -> bool {
        let now = SystemClock.now_ms();
        let mut turns = self.lock_turns();
        match turns.get_mut(&id) {
            Some(t) if t.until_ms > now => {
                t.wanted |= mark;
                false
            }
            _ => {
                let until_ms = now + TURN_HOLD.as_millis() as u64;
                turns.insert(
                    id,
                    TurnState {
                        until_ms,
                        wanted: false,
                    },
                );
                true
            }
        }
    }

    /// Writes a snapshot so the next start does not replay a long journal.
    pub fn snapshot(&self) -> Result<(), StoreError> {
        self.journal
            .snapshot_now()
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    async fn one(&self, op: Op) -> Result<Outcome, StoreError> {
        let mut out = self
            .journal
            .commit(vec![op])
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        out.pop()
            .ok_or_else(|| StoreError::Other("journal returned no outcome".into()))
    }
}

fn unexpected() -> StoreError {
    StoreError::Other("journal outcome does not match its operation".into())
}

#[async_trait]
impl SubscriptionStore for EmbeddedStore {
    async fn insert_capped(
        &self,
        sub: Subscription,
        per_source: u32,
    ) -> Result<Upserted, StoreError> {
        let id = sub.id;
        // The plain op when uncapped: journals stay readable by builds without the cap.
        let op = match per_source {
            0 => Op::Insert(Box::new(sub)),
            _ => Op::InsertCapped {
                sub: Box::new(sub),
                per_source,
            },
        };
        match self.one(op).await? {
            Outcome::Inserted(Ok(replaced)) => {
                let mut turns = self.lock_turns();
                for old in &replaced {
                    turns.remove(&old.id);
                }
                drop(turns);
                self.take_turn(id, false);
                Ok(Upserted { replaced })
            }
            Outcome::Inserted(Err(Refused::Conflict(id))) => Err(StoreError::Conflict(id)),
            Outcome::Inserted(Err(Refused::SourceLimit(host))) => {
                Err(StoreError::SourceLimit(host))
            }
            _ => Err(unexpected()),
        }
    }

    async fn refresh(&self, sub: Subscription) -> Result<Turn, StoreError> {
        let id = sub.id;
        let op = Op::RefreshAt {
            sub: Box::new(sub),
            floor: self.floor(),
        };
        match self.one(op).await? {
            Outcome::Cseq(Some(c)) if self.take_turn(id, true) => Ok(Turn::Granted(c)),
            Outcome::Cseq(Some(_)) => Ok(Turn::Busy),
            Outcome::Cseq(None) => Ok(Turn::Gone),
            _ => Err(unexpected()),
        }
    }

    async fn get(&self, id: SubId) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .journal
            .read(|s| s.subs.get(&id).and_then(Packed::unpack)))
    }

    async fn remove(&self, id: SubId) -> Result<Option<Subscription>, StoreError> {
        self.lock_turns().remove(&id);
        // Skip the journal write when there is nothing to remove.
        if !self.journal.read(|s| s.subs.contains_key(&id)) {
            return Ok(None);
        }
        match self.one(Op::Remove(id)).await? {
            Outcome::Removed(sub) => Ok(sub.map(|b| *b)),
            _ => Err(unexpected()),
        }
    }

    async fn begin_notify(
        &self,
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
    ) -> Result<Turn, StoreError> {
        if !self.journal.read(|s| s.subs.contains_key(&id)) {
            return Ok(Turn::Gone);
        }
        if !self.take_turn(id, false) {
            return Ok(Turn::Busy);
        }
        let op = Op::NextCseqAt {
            id,
            depends_on,
            floor: self.floor(),
        };
        match self.one(op).await {
            Ok(Outcome::Cseq(Some(c))) => Ok(Turn::Granted(c)),
            Ok(Outcome::Cseq(None)) => {
                self.lock_turns().remove(&id);
                Ok(Turn::Gone)
            }
            Ok(_) => Err(unexpected()),
            Err(e) => {
                self.lock_turns().remove(&id);
                Err(e)
            }
        }
    }

    async fn end_notify(&self, id: SubId, confirmed: Option<String>) -> Result<bool, StoreError> {
        let wanted = self.lock_turns().remove(&id).is_some_and(|t| t.wanted);
        let Some(etag) = confirmed else {
            return Ok(wanted);
        };
        let unchanged = self.journal.read(|s| {
            s.subs
                .get(&id)
                .and_then(Packed::unpack)
                .is_none_or(|sub| sub.confirmed_etag.as_deref() == Some(etag.as_str()))
        });
        if !unchanged {
            self.one(Op::Confirm { id, etag }).await?;
        }
        Ok(wanted)
    }

    async fn by_key(
        &self,
        key: &ProfileKey,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        Ok(self.journal.read(|s| match s.index.get(key) {
            None => Page::default(),
            Some(m) => State::page(m.after(after), limit),
        }))
    }

    async fn take_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>, StoreError> {
        let any_due = self
            .journal
            .read(|s| s.expiry.first().is_some_and(|(at, _)| *at <= now_ms));
        if !any_due {
            return Ok(Vec::new());
        }
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        match self.one(Op::TakeDue { now_ms, limit }).await? {
            Outcome::Due(v) => {
                let mut turns = self.lock_turns();
                for sub in &v {
                    turns.remove(&sub.id);
                }
                Ok(v)
            }
            _ => Err(unexpected()),
        }
    }

    async fn next_expiry(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.journal.read(|s| s.expiry.first().map(|(at, _)| *at)))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.journal.read(|s| s.subs.len() as u64))
    }

    async fn scan(&self, after: Option<SubId>, limit: usize) -> Result<Page, StoreError> {
        // The embedded map is unordered; sort the ids for a stable cursor. Only used for
        // reconciliation after a feed gap, where this cost is acceptable.
        Ok(self.journal.read(|s| {
            let mut ids: Vec<SubId> = s
                .subs
                .keys()
                .copied()
                .filter(|id| after.is_none_or(|a| *id > a))
                .collect();
            ids.sort_unstable();
            State::page(ids.into_iter(), limit)
        }))
    }

    async fn feed_offset(&self) -> Result<u64, StoreError> {
        Ok(self.journal.read(|s| s.feed_offset))
    }

    async fn set_feed_offset(&self, seq: u64) -> Result<(), StoreError> {
        self.one(Op::SetOffset(seq)).await.map(|_| ())
    }

    async fn enqueue_fanout(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.one(Op::Enqueue(jobs.to_vec())).await?;
        self.fanout.notify_one();
        Ok(())
    }

    async fn pending_fanout(
        &self,
        _recheck: &[u16],
        limit: usize,
    ) -> Result<Vec<(u16, FanoutJob)>, StoreError> {
        Ok(self.journal.read(|s| {
            let mut jobs = s.job_list();
            jobs.sort_by(|a, b| a.target.cmp(&b.target));
            jobs.into_iter().take(limit).map(|j| (0, j)).collect()
        }))
    }

    async fn finish_fanout(&self, _partition: u16, job: &FanoutJob) -> Result<bool, StoreError> {
        match self.one(Op::Finish(job.clone())).await? {
            Outcome::Finished(done) => Ok(done),
            _ => Err(unexpected()),
        }
    }

    async fn fanout_wakeup(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.fanout.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(
            dir,
            JournalOptions {
                fsync: false,
                ..JournalOptions::default()
            },
        )
        .expect("open store")
    }

    #[tokio::test]
    async fn contract_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut n = 0;
        super::super::contract::run_all(move || {
            n += 1;
            let p = path.join(format!("s{n}"));
            async move { Ok::<_, StoreError>(open(&p)) }
        })
        .await;
    }

    /// A wall clock the test sets.
    struct Manual(std::sync::atomic::AtomicU64);

    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    /// A lost write (the state of an older copy of the journal, as a restore from a backup
    /// or a replica that missed the last write would have): the NOTIFY after it still gets a
    /// CSeq above the one the phone saw.
    #[tokio::test]
    async fn a_lost_write_does_not_make_a_cseq_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, older) = (dir.path().join("live"), dir.path().join("older"));
        // 2026-06-01: the floor is far above the sample's CSeq.
        let t0 = 1_780_272_000_000;
        let clock = Arc::new(Manual(t0.into()));
        let sub = super::super::contract::sample(11, "mac:000000000011");
        {
            let store = open(&live).with_clock(clock.clone());
            store.insert(sub.clone()).await.expect("insert");
            store.end_notify(sub.id, None).await.expect("end first");
        }
        std::fs::create_dir(&older).expect("mkdir");
        for f in std::fs::read_dir(&live).expect("read dir") {
            let f = f.expect("entry");
            std::fs::copy(f.path(), older.join(f.file_name())).expect("copy");
        }
        let sent = {
            let store = open(&live).with_clock(clock.clone());
            let Turn::Granted(c) = store.begin_notify(sub.id, None).await.expect("begin") else {
                panic!("the turn is free");
            };
            c
        };
        // The write of `sent` is lost; the store comes back a few seconds later.
        clock
            .0
            .store(t0 + 5_000, std::sync::atomic::Ordering::Relaxed);
        let store = open(&older).with_clock(clock.clone());
        assert_eq!(
            store.get(sub.id).await.expect("get").map(|s| s.local_cseq),
            Some(sub.local_cseq),
            "the copy lacks the last write"
        );
        let Turn::Granted(next) = store.begin_notify(sub.id, None).await.expect("begin") else {
            panic!("the turn is free");
        };
        assert!(next > sent, "CSeq {next} reused after {sent} was sent");
    }

    #[tokio::test]
    async fn state_survives_reopen_and_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        let sub = super::super::contract::sample(7, "mac:000000000007");
        let last;
        {
            let store = open(&p);
            store.insert(sub.clone()).await.expect("insert");
            store.end_notify(sub.id, None).await.expect("end first");
            let Turn::Granted(c) = store.begin_notify(sub.id, None).await.expect("cseq") else {
                panic!("the turn is free");
            };
            store.end_notify(sub.id, None).await.expect("end");
            store.snapshot().expect("snapshot");
            last = store.begin_notify(sub.id, None).await.expect("cseq");
            assert!(
                matches!(last, Turn::Granted(n) if n > c),
                "{last:?} after {c}"
            );
            store.set_feed_offset(42).await.expect("offset");
            let job = |v| FanoutJob {
                target: Some(sub.depends_on[1].clone()),
                version: v,
                effective_by: None,
                rollout_window: None,
                traceparent: None,
            };
            store.enqueue_fanout(&[job(1)]).await.expect("enqueue");
            store.snapshot().expect("snapshot");
            store.enqueue_fanout(&[job(2)]).await.expect("enqueue");
        }
        let store = open(&p);
        let pending = store.pending_fanout(&[], 10).await.expect("pending");
        assert_eq!(pending.len(), 1, "pending fan-out work survives a restart");
        assert_eq!(pending[0].1.version, 2);
        let got = store.get(sub.id).await.expect("get").expect("present");
        assert_eq!(Turn::Granted(got.local_cseq), last);
        assert_eq!(store.feed_offset().await.expect("offset"), 42);
        let page = store
            .by_key(&sub.depends_on[0], None, 10)
            .await
            .expect("by_key");
        assert_eq!(page.ids, vec![sub.id]);
    }
}

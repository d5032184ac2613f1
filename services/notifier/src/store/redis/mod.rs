//! The Redis store: subscriptions shared by a tier of notifier nodes, on a single Redis
//! server or a Redis Cluster.
//!
//! # Layout
//! The keyspace is cut into [`PARTITIONS`] partitions of [`BUCKETS`] buckets. A partition is
//! one hash tag (`{prefix}:{p}:...`), so every script touches one slot and is atomic on a
//! Cluster; it is also the unit of ownership between nodes. A subscription lives in the
//! bucket named by the high bits of its id, and new ids are allocated in the bucket their
//! subject hashes to ([`RedisStore::allocate_id`]), so a device's subscriptions sit where a
//! change of that device looks for them. Per bucket: one hash of records (small enough to
//! stay a compact listpack when Redis is tuned as the README says) and one small set per
//! other dependency key (a class, a default user), whose integer ids Redis packs as an
//! intset. A per-key hint set (`{prefix}:x:{key}`) lists the partitions holding explicit
//! entries for that key, so a change looks only where its subscribers are; it expires an
//! hour after the last subscription it was written for, so hints of keys nobody depends on
//! any more do not pile up.
//!
//! # Replacement
//! A subscription with a `+sip.instance` displaces the holder of the same (instance, profile
//! type) anywhere in the store, as the embedded store does: a registry hash in the bucket the
//! pair hashes to names the holder. An insert stores the record first, then claims the pair
//! (learning the previous holder) and removes the previous holder; removal and expiry clear
//! the claim. A node dying between the insert and the claim leaves the old holder in place
//! (the phone's retry replaces it) and an unclaimed copy that expires by itself.
//!
//! # Ownership
//! Any node accepts any SUBSCRIBE. The timed duties — expiry and change fan-out — belong to
//! the partition's lease holder. Nodes heartbeat into a registry; each computes the same
//! rendezvous assignment of partitions to live nodes, acquires its share with `SET NX PX`
//! leases, renews them every tick and releases the partitions assigned elsewhere. A node
//! that dies stops renewing: its leases and its registry entry lapse after `lease_ttl`, and
//! the survivors acquire the partitions at their next tick. Expiry is fenced by the lease
//! inside the script that removes expired subscriptions, so no two nodes end the same one.

mod codec;
mod scripts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{counter, gauge};
use redis::RedisError;
pub use redis_conn::RedisConfig;
use redis_conn::{Conn, RedisFailure, is_script_error};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uaprof_api::ProfileKey;

use super::{
    FanoutJob, Held, Page, StoreError, SubId, Subscription, SubscriptionStore, TURN_HOLD, Turn,
    Upserted, cseq_floor,
};
use crate::{Clock, SystemClock};

/// Partitions: the unit of ownership and of atomicity (one hash slot each).
pub const PARTITIONS: u16 = 256;
/// Buckets per partition.
pub const BUCKETS: u16 = 64;
const ALL_BUCKETS: u64 = PARTITIONS as u64 * BUCKETS as u64;
/// Id bits below the bucket number.
const RANDOM_BITS: u32 = 49;
/// Layout version written to the meta key; a store with another layout is refused.
const LAYOUT: &str = "1:256:64";

/// Maps a Redis failure onto the store's retryable / fault split.
fn map_err(e: RedisError) -> StoreError {
    match redis_conn::classify(&e) {
        RedisFailure::Unavailable(m) => StoreError::Unavailable(m),
        _ => StoreError::Other(e.to_string()),
    }
}

/// FNV-1a 64 then a finaliser: a hash that is the same on every node and every build.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn bucket_of_key(key: &[u8]) -> u64 {
    stable_hash(&[key]) % ALL_BUCKETS
}

fn bucket_of_id(id: SubId) -> u64 {
    (id.0 >> RANDOM_BITS) % ALL_BUCKETS
}

fn split(bucket: u64) -> (u16, u16) {
    // Both fit: bucket < PARTITIONS * BUCKETS.
    (
        (bucket / u64::from(BUCKETS)) as u16,
        (bucket % u64::from(BUCKETS)) as u16,
    )
}

/// Which partitions this node holds.
#[derive(Default)]
struct Owned {
    /// Partition → when our lease lapses (by our clock, with margin).
    leased: BTreeMap<u16, Instant>,
    /// Partitions acquired since the fan-out last looked for their pending work: a
    /// partition taken over from a dead node may hold work it never finished.
    fresh: BTreeSet<u16>,
}

pub struct RedisStore {
    conn: Conn,
    /// Seed URL for the pub/sub connection that announces fan-out work.
    pubsub_url: String,
    /// Woken by announcements of fan-out work (local enqueues and other nodes').
    wake: tokio::sync::Notify,
    prefix: String,
    node: String,
    lease_ttl: Duration,
    /// Replicas a subscription write must reach before it is acknowledged, and how long
    /// it may wait for them (see [`RedisConfig::wait_replicas`]).
    wait_replicas: u32,
    wait_timeout: Duration,
    owned: Mutex<Owned>,
    /// (key, partition) hints written by this node → until when Redis keeps them.
    hinted: Mutex<HashMap<(Vec<u8>, u16), u64>>,
    /// The live nodes of the last membership tick: a dialog turn held by any other node
    /// belongs to one that died, and is taken over instead of waiting for it to lapse.
    live: Mutex<Vec<String>>,
    /// The wall clock of the CSeq floor.
    clock: Arc<dyn Clock>,
}

/// Bound on the hint cache; cleared when full (it is only an optimisation).
const HINT_CACHE: usize = 200_000;
/// How long a hint outlives the expiry of the subscription it was written for: room for
/// the clocks of the tier to differ and for the expiry sweep to come round. A hint is
/// rewritten (its expiry moved) only when it would lapse within half of this after the
/// expiry it must cover, so a key's hints are written about twice an hour, not per refresh.
const HINT_GRACE_MS: u64 = 60 * 60 * 1000;
/// How long a hint written before hints expired (it has no expiry) is kept once it is next
/// touched: the subscriptions that wrote it are unknown and may live as long as the longest
/// `notifier.expires_max` anyone sets (a week by default).
const LEGACY_HINT_HOLD_MS: u64 = 30 * 24 * 60 * 60 * 1000;

impl RedisStore {
    /// Connects (failing if Redis cannot be reached within the timeout) and checks the
    /// stored layout. `node` names this node in leases and must be unique in the tier.
    pub async fn connect(config: &RedisConfig, node: String) -> Result<Self, StoreError> {
        config.validate().map_err(StoreError::Other)?;
        let conn = Conn::connect(config).await.map_err(map_err)?;
        let store = Self {
            conn,
            pubsub_url: config.urls.first().cloned().unwrap_or_default(),
            wake: tokio::sync::Notify::new(),
            prefix: config.prefix.clone(),
            node,
            lease_ttl: config.lease_ttl,
            wait_replicas: config.wait_replicas,
            wait_timeout: config.wait_timeout,
            owned: Mutex::new(Owned::default()),
            hinted: Mutex::new(HashMap::new()),
            live: Mutex::new(Vec::new()),
            clock: Arc::new(SystemClock),
        };
        store.check_layout().await?;
        Ok(store)
    }

    async fn check_layout(&self) -> Result<(), StoreError> {
        let key = format!("{}:{{m}}:layout", self.prefix);
        let mut c = self.conn.clone();
        let set: bool = redis::cmd("SET")
            .arg(&key)
            .arg(LAYOUT)
            .arg("NX")
            .query_async::<Option<String>>(&mut c)
            .await
            .map_err(map_err)?
            .is_some();
        if set {
            return Ok(());
        }
        let have: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        match have.as_deref() {
            Some(LAYOUT) => Ok(()),
            other => Err(StoreError::Other(format!(
                "Redis holds store layout {other:?} under prefix {:?}; this build uses {LAYOUT}",
                self.prefix
            ))),
        }
    }

    /// The SHA1 of every Lua script the store runs (tests check what each does in Redis).
    pub fn script_hashes() -> Vec<String> {
        scripts::all()
            .iter()
            .map(|s| s.get_hash().to_string())
            .collect()
    }

    /// Takes the CSeq floor from `clock` instead of the system clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn floor(&self) -> u32 {
        cseq_floor(self.clock.now_ms())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// An id for a new subscription to `subject`: random, placed in the subject's bucket.
    pub fn allocate(subject: &ProfileKey, random: u64) -> SubId {
        let bucket = bucket_of_key(&codec::key_bytes(subject));
        SubId((bucket << RANDOM_BITS) | (random & ((1 << RANDOM_BITS) - 1)))
    }

    fn part(&self, p: u16) -> String {
        format!("{}:{{{p}}}", self.prefix)
    }

    fn feed_key(&self) -> String {
        format!("{}:{{m}}:feed", self.prefix)
    }

    fn jobs_key(&self, p: u16) -> String {
        format!("{}:jobs", self.part(p))
    }

    fn dirty_key(&self) -> String {
        format!("{}:{{m}}:fanout", self.prefix)
    }

    fn wake_channel(&self) -> String {
        format!("{}:fanout", self.prefix)
    }

    /// Partitions that may hold subscriptions depending on `key`: its own and those its
    /// hint names.
    async fn partitions_of(&self, key: &ProfileKey) -> Result<Vec<u16>, StoreError> {
        let ks = codec::key_bytes(key);
        let mut c = self.conn.clone();
        let mut parts: BTreeSet<u16> = redis::cmd("SMEMBERS")
            .arg(self.hint_key(&ks))
            .query_async::<Vec<u16>>(&mut c)
            .await
            .map_err(map_err)?
            .into_iter()
            .collect();
        parts.insert(split(bucket_of_key(&ks)).0);
        Ok(parts.into_iter().collect())
    }

    /// Listens for announcements of fan-out work (by any node) until `shutdown`, waking this
    /// node's fan-out. Reconnects after failures; meanwhile the fan-out polls.
    pub async fn run_wakeups(self: Arc<Self>, shutdown: CancellationToken) {
        use futures_util::StreamExt;
        let channel = self.wake_channel();
        loop {
            let subscribed = async {
                let client = redis::Client::open(self.pubsub_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, RedisError>(pubsub)
            };
            match subscribed.await {
                Ok(mut pubsub) => {
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = messages.next() => match m {
                                Some(_) => self.wake.notify_one(),
                                None => break,
                            },
                        }
                    }
                    warn!("fan-out announcements lost; reconnecting");
                }
                Err(e) => warn!(%e, "cannot subscribe to fan-out announcements; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn hint_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = format!("{}:x:{{", self.prefix).into_bytes();
        k.extend_from_slice(key);
        k.push(b'}');
        k
    }

    fn locate(&self, id: SubId) -> (String, u16, String) {
        let (p, b) = split(bucket_of_id(id));
        let part = self.part(p);
        let hash = format!("{part}:h:{b}");
        (part, b, hash)
    }

    fn colocated(id: SubId, subject: &ProfileKey) -> bool {
        bucket_of_id(id) == bucket_of_key(&codec::key_bytes(subject))
    }

    /// Records, before the index entries exist, that partition `p` of subscription `id`
    /// will hold explicit entries for each key (a superset is harmless; a missing hint is
    /// not). A key's own partition needs no hint: lookups always search it.
    ///
    /// A hint set lives until the grace after the latest expiry of any subscription it was
    /// written for (each insert, refresh and change of dependencies writes it again), so
    /// it outlives every subscription that needs it, and the sets of keys nobody depends on
    /// any more (random vendor and model values) go away by themselves.
    async fn hint(
        &self,
        id: SubId,
        keys: &[ProfileKey],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let (p, _) = split(bucket_of_id(id));
        let until = expires_at_ms.saturating_add(HINT_GRACE_MS);
        for k in keys {
            let ks = codec::key_bytes(k);
            if split(bucket_of_key(&ks)).0 == p {
                continue;
            }
            let cached = self.lock_hints().get(&(ks.clone(), p)).copied();
            if cached.is_some_and(|kept| kept >= until - HINT_GRACE_MS / 2) {
                continue;
            }
            let mut c = self.conn.clone();
            let kept: u64 = scripts::HINT
                .key(self.hint_key(&ks))
                .arg(p)
                .arg(until)
                .arg(SystemClock.now_ms())
                .arg(LEGACY_HINT_HOLD_MS)
                .invoke_async(&mut c)
                .await
                .map_err(map_err)?;
            let mut cache = self.lock_hints();
            if cache.len() >= HINT_CACHE {
                cache.clear();
            }
            cache.insert((ks, p), kept);
        }
        Ok(())
    }

    fn lock_hints(&self) -> std::sync::MutexGuard<'_, HashMap<(Vec<u8>, u16), u64>> {
        self.hinted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partitions whose lease we hold now (by our clock).
    fn leased_now(&self) -> Vec<u16> {
        let now = Instant::now();
        let mut o = self.lock_owned();
        o.leased.retain(|_, until| *until > now);
        o.leased.keys().copied().collect()
    }

    fn decode_pairs(values: Vec<Vec<u8>>) -> Result<Vec<Subscription>, StoreError> {
        let mut out = Vec::with_capacity(values.len() / 2);
        let mut it = values.into_iter();
        while let (Some(id), Some(rec)) = (it.next(), it.next()) {
            let id = parse_id(&id)?;
            out.push(decode(id, &rec)?);
        }
        Ok(out)
    }

    /// One round of membership: heartbeat, compute this node's share, acquire, renew and
    /// release leases. Returns how many partitions this node holds afterwards.
    pub async fn membership_tick(&self) -> Result<usize, StoreError> {
        let mut c = self.conn.clone();
        let registry = format!("{}:{{m}}:nodes", self.prefix);
        let now_ms = SystemClock.now_ms();
        let ttl_ms = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let (_, live): (i64, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&registry)
            .arg(now_ms + ttl_ms)
            .arg(&self.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&registry)
            .arg("-inf")
            .arg(now_ms)
            .cmd("ZRANGE")
            .arg(&registry)
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        let mine: BTreeSet<u16> = (0..PARTITIONS)
            .filter(|p| owner_of(*p, &live).is_some_and(|n| n == self.node))
            .collect();
        let started = Instant::now();
        // A lease is trusted locally for 80% of its TTL from when we asked for it.
        let valid_until = started + self.lease_ttl.mul_f64(0.8);
        let held: Vec<u16> = self.lock_owned().leased.keys().copied().collect();
        let release: Vec<u16> = held.iter().copied().filter(|p| !mine.contains(p)).collect();
        let mut jobs = tokio::task::JoinSet::new();
        for p in mine.iter().copied() {
            let mut c = self.conn.clone();
            let key = format!("{}:lease", self.part(p));
            let node = self.node.clone();
            jobs.spawn(async move {
                let r: Result<i64, _> = scripts::ACQUIRE
                    .key(key)
                    .arg(node)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await;
                (p, r)
            });
        }
        let mut failures = 0usize;
        while let Some(Ok((p, r))) = jobs.join_next().await {
            let mut o = self.lock_owned();
            match r {
                Ok(1) | Ok(2) => {
                    if o.leased.insert(p, valid_until).is_none() {
                        o.fresh.insert(p);
                        counter!("ownership_changes_total", "change" => "acquired").increment(1);
                    }
                }
                Ok(_) => {
                    o.leased.remove(&p);
                    o.fresh.remove(&p);
                }
                Err(_) => failures += 1,
            }
        }
        // Give up what is assigned elsewhere now: stop using it first, then release.
        {
            let mut o = self.lock_owned();
            for p in &release {
                o.leased.remove(p);
                o.fresh.remove(p);
            }
        }
        for p in release {
            self.release(p).await;
            counter!("ownership_changes_total", "change" => "released").increment(1);
        }
        let n = self.leased_now().len();
        gauge!("notifier_partitions_owned").set(n as f64);
        gauge!("ownership_live_nodes").set(live.len() as f64);
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live;
        if failures > 0 {
            return Err(StoreError::Unavailable(format!(
                "{failures} lease renewals failed"
            )));
        }
        Ok(n)
    }

    /// Subscriptions in `parts`, from each partition's counter (one GET per partition: a
    /// Cluster has them on different slots).
    async fn count_in(&self, parts: impl Iterator<Item = u16>) -> Result<u64, StoreError> {
        let mut jobs = tokio::task::JoinSet::new();
        for p in parts {
            let mut c = self.conn.clone();
            let key = format!("{}:n", self.part(p));
            jobs.spawn(async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<i64>>(&mut c)
                    .await
            });
        }
        let mut total = 0i64;
        while let Some(r) = jobs.join_next().await {
            let n = r
                .map_err(|e| StoreError::Other(e.to_string()))?
                .map_err(map_err)?;
            total += n.unwrap_or(0);
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn release(&self, p: u16) {
        let mut c = self.conn.clone();
        let r: Result<i64, _> = scripts::RELEASE
            .key(format!("{}:lease", self.part(p)))
            .arg(&self.node)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            warn!(%e, partition = p, "lease release failed; it lapses by itself");
        }
    }

    /// Gives up every lease and leaves the registry, so the other nodes take over at their
    /// next tick instead of waiting for the leases to lapse (SIGTERM drain).
    pub async fn resign(&self) {
        let held: Vec<u16> = {
            let mut o = self.lock_owned();
            o.fresh.clear();
            std::mem::take(&mut o.leased).into_keys().collect()
        };
        for p in &held {
            self.release(*p).await;
        }
        let mut c = self.conn.clone();
        let r: Result<i64, _> = redis::cmd("ZREM")
            .arg(format!("{}:{{m}}:nodes", self.prefix))
            .arg(&self.node)
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            warn!(%e, "cannot leave the node registry; the entry lapses by itself");
        }
        gauge!("notifier_partitions_owned").set(0.0);
        info!(partitions = held.len(), "released ownership");
    }

    /// Runs membership ticks every third of the lease TTL until `shutdown`, then resigns.
    pub async fn run_membership(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = self.lease_ttl / 3;
        let mut last_ok = true;
        loop {
            match self.membership_tick().await {
                Ok(n) if !last_ok => {
                    info!(partitions = n, "membership restored");
                    last_ok = true;
                }
                Ok(_) => {}
                Err(e) => {
                    if last_ok {
                        warn!(%e, "membership tick failed");
                    }
                    last_ok = false;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        self.resign().await;
    }

    /// One partition's part of a page: ids depending on `key` (all ids when `None`).
    async fn page_in(
        &self,
        p: u16,
        key: Option<&[u8]>,
        subject_bucket: i64,
        first: u16,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SubId>, StoreError> {
        let part = self.part(p);
        let mut c = self.conn.clone();
        let mut script = scripts::PAGE.prepare_invoke();
        for b in first..BUCKETS {
            match key {
                None => script.key(format!("{part}:h:{b}")),
                Some(k) => script.key(set_key(&part, b, k)),
            };
        }
        if key.is_some() && subject_bucket >= i64::from(first) {
            script.key(format!("{part}:h:{subject_bucket}"));
        }
        let ids: Vec<String> = script
            .arg(&part)
            .arg(key.unwrap_or_default())
            .arg(subject_bucket)
            .arg(first)
            .arg(after)
            .arg(limit)
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        ids.iter().map(|s| parse_id(s.as_bytes())).collect()
    }

    /// Walks `partitions` (ascending) from the cursor, filling one page.
    async fn walk<F, Fut>(
        partitions: impl Iterator<Item = u16>,
        after: Option<SubId>,
        limit: usize,
        mut step: F,
    ) -> Result<Page, StoreError>
    where
        F: FnMut(u16, u16, String, usize) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<SubId>, StoreError>>,
    {
        let limit = limit.max(1);
        let (start_p, start_b) = after.map(|a| split(bucket_of_id(a))).unwrap_or((0, 0));
        let mut ids = Vec::new();
        for p in partitions.filter(|p| *p >= start_p) {
            let (first, cursor) = match after {
                Some(a) if p == start_p => (start_b, a.0.to_string()),
                _ => (0, String::new()),
            };
            ids.extend(step(p, first, cursor, limit - ids.len()).await?);
            if ids.len() >= limit {
                let next = ids.last().copied();
                return Ok(Page { ids, next });
            }
        }
        Ok(Page { ids, next: None })
    }
}

/// Attempts at a script whose declared index sets came from a read that a concurrent
/// write to the same record outdated (RETRY): writes to one record are brief and rare
/// (one dialog's refreshes and NOTIFYs), so a few suffice.
const DECLARE_ATTEMPTS: usize = 8;

fn contended(id: SubId) -> StoreError {
    StoreError::Unavailable(format!(
        "subscription {id} changed under {DECLARE_ATTEMPTS} attempts to write it"
    ))
}

/// The index set of key `k` in bucket `b` of partition `part` (as `set_key` in the prelude).
fn set_key(part: &str, b: u16, k: &[u8]) -> Vec<u8> {
    let mut out = format!("{part}:k:{b}:").into_bytes();
    out.extend_from_slice(k);
    out
}

/// The index sets the stored records `recs` (of bucket `b`) have entries in.
fn index_sets(part: &str, b: u16, recs: &[&[u8]]) -> Result<BTreeSet<Vec<u8>>, StoreError> {
    let mut out = BTreeSet::new();
    for rec in recs {
        let keys = codec::explicit_keys(rec)
            .ok_or_else(|| StoreError::Other("undecodable subscription record".into()))?;
        out.extend(keys.iter().map(|k| set_key(part, b, k)));
    }
    Ok(out)
}

/// Rendezvous (highest random weight) assignment: every node computes the same owner from
/// the same live list, and a node joining or leaving moves only its own share.
fn owner_of(p: u16, live: &[String]) -> Option<&str> {
    live.iter()
        .max_by_key(|n| stable_hash(&[n.as_bytes(), &p.to_be_bytes()]))
        .map(String::as_str)
}

fn parse_id(raw: &[u8]) -> Result<SubId, StoreError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(SubId)
        .ok_or_else(|| StoreError::Other("malformed subscription id in Redis".into()))
}

fn decode(id: SubId, rec: &[u8]) -> Result<Subscription, StoreError> {
    codec::decode(id, rec)
        .ok_or_else(|| StoreError::Other(format!("undecodable subscription record {id}")))
}

impl RedisStore {
    /// [`SubscriptionStore::insert`] once the source cap, if any, admitted it.
    async fn insert_admitted(&self, sub: Subscription) -> Result<Upserted, StoreError> {
        let colocated = Self::colocated(sub.id, &sub.subject);
        let rec = codec::encode(&sub, colocated)?;
        self.hint(sub.id, &sub.depends_on, sub.expires_at_ms)
            .await?;
        let (part, b, hash) = self.locate(sub.id);
        let (_, until) = turn_times();
        let mut c = self.conn.clone();
        let mut script = scripts::INSERT.key(&hash);
        script
            .key(format!("{part}:t"))
            .key(format!("{part}:n"))
            .key(format!("{part}:due"));
        for k in index_sets(&part, b, &[&rec])? {
            script.key(k);
        }
        let r: Result<i64, _> = script
            .arg(&part)
            .arg(b)
            .arg(sub.id.0)
            .arg(&rec)
            .arg(&self.node)
            .arg(until)
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(_) => {}
            Err(e) if is_script_error(&e, "CONFLICT") => return Err(StoreError::Conflict(sub.id)),
            Err(e) => return Err(map_err(e)),
        }
        let replaced = match &sub.instance {
            Some(instance) => self.replace_instance(&sub, instance).await,
            None => Ok(Vec::new()),
        };
        // The replaced holder's removal may have gone to another master: wait there too.
        let replicated = async {
            let replaced = replaced?;
            self.replicated(&hash).await?;
            for old in &replaced {
                self.replicated(&self.locate(old.id).2).await?;
            }
            Ok(replaced)
        };
        match replicated.await {
            Ok(replaced) => Ok(Upserted { replaced }),
            Err(e) => {
                // Not accepted after all: the caller answers an error, and the phone's retry
                // must not find this copy as a second subscription of the instance.
                if let Err(undo) = self.remove(sub.id).await {
                    warn!(%undo, id = %sub.id, "cannot undo an insert; it expires by itself");
                }
                Err(e)
            }
        }
    }

    /// [`SubscriptionStore::refresh`] of the record and its indexes.
    async fn refresh_record(&self, sub: &Subscription) -> Result<Turn, StoreError> {
        let colocated = Self::colocated(sub.id, &sub.subject);
        let rec = codec::encode(sub, colocated)?;
        self.hint(sub.id, &sub.depends_on, sub.expires_at_ms)
            .await?;
        let (part, b, hash) = self.locate(sub.id);
        let (now, until) = turn_times();
        let mut c = self.conn.clone();
        for _ in 0..DECLARE_ATTEMPTS {
            let old = self.raw(&hash, sub.id).await?;
            let mut recs = vec![rec.as_slice()];
            recs.extend(old.as_deref());
            let mut script = scripts::REFRESH.key(&hash);
            script.key(format!("{part}:t")).key(format!("{part}:due"));
            for k in index_sets(&part, b, &recs)? {
                script.key(k);
            }
            let r: Result<Option<u32>, _> = script
                .arg(&part)
                .arg(b)
                .arg(sub.id.0)
                .arg(&rec)
                .arg(&self.node)
                .arg(now)
                .arg(until)
                .arg(self.floor())
                .invoke_async(&mut c)
                .await;
            match r {
                Ok(cseq) => {
                    if let Err(e) = self.replicated(&hash).await {
                        // Not acknowledged: no NOTIFY answers it, so give back its turn.
                        if matches!(turn_of(cseq), Turn::Granted(_)) {
                            let _ = self.end_notify(sub.id, None).await;
                        }
                        return Err(e);
                    }
                    return Ok(turn_of(cseq));
                }
                Err(e) if is_script_error(&e, "RETRY") => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(contended(sub.id))
    }

    /// A source host's counted subscriptions (the per-source cap): a key of its own slot.
    fn source_key(&self, host: std::net::IpAddr) -> String {
        format!("{}:s:{{{host}}}", self.prefix)
    }

    /// Counts `sub` against its source host unless the host holds `cap` live subscriptions
    /// besides the one `sub` replaces (read from the instance registry: the claim comes
    /// after the insert). False when refused.
    async fn admit_source(&self, sub: &Subscription, cap: u32) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let leaving: Option<String> = match &sub.instance {
            Some(instance) => {
                let (key, field) = self.instance_slot(sub, instance);
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
                    .map_err(map_err)?
            }
            None => None,
        };
        let added: i64 = scripts::SOURCE_ADMIT
            .key(self.source_key(source_host(sub)))
            .arg(sub.id.0)
            .arg(sub.expires_at_ms)
            .arg(SystemClock.now_ms())
            .arg(cap)
            .arg(leaving.unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        Ok(added == 1)
    }

    /// Moves the counted expiry of a refreshed subscription. Best effort: a count that
    /// lapses early only lets its host hold one more. (A subscription whose source moved
    /// stays counted at the old host until the expiry it had there.)
    async fn renew_source(&self, sub: &Subscription) {
        let mut c = self.conn.clone();
        let r: Result<i64, _> = scripts::SOURCE_RENEW
            .key(self.source_key(source_host(sub)))
            .arg(sub.id.0)
            .arg(sub.expires_at_ms)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            warn!(%e, id = %sub.id, "cannot renew a per-source count");
        }
    }

    /// Stops counting a removed subscription against its source host. Best effort: an entry
    /// left behind lapses at the subscription's expiry. (Expired ones are not forgotten one
    /// by one: their entries lapse.)
    async fn forget_source(&self, sub: &Subscription) {
        let mut c = self.conn.clone();
        let r: Result<i64, _> = redis::cmd("ZREM")
            .arg(self.source_key(source_host(sub)))
            .arg(sub.id.0)
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            warn!(%e, id = %sub.id, "cannot forget a per-source count; it lapses by itself");
        }
    }
}

/// The host a subscription is counted against for the per-source cap.
fn source_host(sub: &Subscription) -> std::net::IpAddr {
    sub.source.ip().to_canonical()
}

#[async_trait]
impl SubscriptionStore for RedisStore {
    fn allocate_id(&self, subject: &ProfileKey, random: u64) -> SubId {
        Self::allocate(subject, random)
    }

    async fn insert_capped(
        &self,
        sub: Subscription,
        per_source: u32,
    ) -> Result<Upserted, StoreError> {
        if per_source > 0 && !self.admit_source(&sub, per_source).await? {
            return Err(StoreError::SourceLimit(source_host(&sub)));
        }
        let r = self.insert_admitted(sub.clone()).await;
        if per_source > 0 && matches!(r, Err(StoreError::Unavailable(_) | StoreError::Other(_))) {
            // Not stored (an undone insert is removed, which forgets it too).
            self.forget_source(&sub).await;
        }
        r
    }

    async fn refresh(&self, sub: Subscription) -> Result<Turn, StoreError> {
        let turn = self.refresh_record(&sub).await?;
        self.renew_source(&sub).await;
        Ok(turn)
    }

    async fn get(&self, id: SubId) -> Result<Option<Subscription>, StoreError> {
        let (_, _, hash) = self.locate(id);
        self.raw(&hash, id)
            .await?
            .map(|r| decode(id, &r))
            .transpose()
    }

    async fn remove(&self, id: SubId) -> Result<Option<Subscription>, StoreError> {
        let removed = self.remove_record(id).await?;
        if let Some(sub) = &removed {
            self.unclaim(sub).await;
            self.forget_source(sub).await;
        }
        Ok(removed)
    }

    async fn begin_notify(
        &self,
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
    ) -> Result<Turn, StoreError> {
        if let Some(keys) = &depends_on
            && keys.len() > usize::from(u8::MAX)
        {
            return Err(StoreError::Other("more than 255 dependency keys".into()));
        }
        let mut dead = String::new();
        let mut changed = 0;
        // At most twice taking a turn: the second time taking over the turn of a node that
        // left; reads outdated by a concurrent write are repeated.
        let mut takeovers = 0;
        while takeovers < 2 {
            match self.try_begin(id, depends_on.as_deref(), &dead).await? {
                Begun::Cseq(c) => return Ok(turn_of(Some(c))),
                Begun::Gone => return Ok(Turn::Gone),
                Begun::Changed => {
                    changed += 1;
                    if changed >= DECLARE_ATTEMPTS {
                        return Err(contended(id));
                    }
                    continue;
                }
                Begun::HeldBy(holder) => {
                    let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                    // An empty view means no membership tick has succeeded yet: trust no one's death.
                    if live.is_empty() || live.contains(&holder) || holder == self.node {
                        return Ok(Turn::Busy);
                    }
                    drop(live);
                    counter!("notify_turns_taken_over_total").increment(1);
                    dead = holder;
                    takeovers += 1;
                }
            }
        }
        Ok(Turn::Busy)
    }

    async fn end_notify(&self, id: SubId, confirmed: Option<String>) -> Result<bool, StoreError> {
        let (part, _, hash) = self.locate(id);
        let etag = confirmed.as_deref().map(codec::compact).unwrap_or_default();
        let mut c = self.conn.clone();
        let wanted: i64 = scripts::END_NOTIFY
            .key(hash)
            .key(format!("{part}:t"))
            .arg(part)
            .arg(id.0)
            .arg(&self.node)
            .arg(etag)
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        Ok(wanted == 1)
    }

    /// Subscriptions depending on `key` in the partitions this node owns.
    async fn by_key(
        &self,
        key: &ProfileKey,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let ks = codec::key_bytes(key);
        let (sp, sb) = split(bucket_of_key(&ks));
        let owned: BTreeSet<u16> = self.leased_now().into_iter().collect();
        let parts: Vec<u16> = self
            .partitions_of(key)
            .await?
            .into_iter()
            .filter(|p| owned.contains(p))
            .collect();
        let ks = &ks;
        Self::walk(
            parts.into_iter(),
            after,
            limit,
            |p, first, cursor, n| async move {
                let subject_bucket = if p == sp { i64::from(sb) } else { -1 };
                self.page_in(p, Some(ks), subject_bucket, first, &cursor, n)
                    .await
            },
        )
        .await
    }

    /// Expired subscriptions of the partitions whose lease this node holds.
    async fn take_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>, StoreError> {
        let mut out = Vec::new();
        for p in self.leased_now() {
            if out.len() >= limit {
                break;
            }
            let r = self.take_due_in(p, now_ms, limit - out.len()).await;
            match r {
                Ok(pairs) => {
                    let taken = Self::decode_pairs(pairs)?;
                    for sub in &taken {
                        self.unclaim(sub).await;
                    }
                    out.extend(taken);
                }
                Err(e) if is_script_error(&e, "NOTOWNER") => {
                    warn!(partition = p, "lease lost; dropping the partition");
                    let mut o = self.lock_owned();
                    o.leased.remove(&p);
                    o.fresh.remove(&p);
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(out)
    }

    async fn next_expiry(&self) -> Result<Option<u64>, StoreError> {
        let mut earliest: Option<u64> = None;
        for p in self.leased_now() {
            let mut c = self.conn.clone();
            let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(format!("{}:due", self.part(p)))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .map_err(map_err)?;
            if let Some((_, score)) = first.first() {
                let at = *score as u64;
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest)
    }

    /// Subscriptions held by the whole tier.
    async fn count(&self) -> Result<u64, StoreError> {
        self.count_in(0..PARTITIONS).await
    }

    /// The partitions whose lease this node holds, and their subscription counts.
    async fn held(&self) -> Result<Held, StoreError> {
        let parts = self.leased_now();
        Ok(Held {
            partitions: parts.len() as u64,
            subscriptions: self.count_in(parts.into_iter()).await?,
        })
    }

    /// Every subscription in the partitions this node owns.
    async fn scan(&self, after: Option<SubId>, limit: usize) -> Result<Page, StoreError> {
        let parts = self.leased_now();
        Self::walk(
            parts.into_iter(),
            after,
            limit,
            |p, first, cursor, n| async move { self.page_in(p, None, -1, first, &cursor, n).await },
        )
        .await
    }

    /// The tier's position in a feed without its own (the content tier's gRPC long-poll):
    /// every node reads the whole feed and records each change's fan-out before raising it.
    async fn feed_offset(&self) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.feed_key())
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        Ok(v.unwrap_or(0))
    }

    async fn set_feed_offset(&self, seq: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = scripts::RAISE
            .key(self.feed_key())
            .arg(seq)
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Writes each job into every partition that may hold its target's subscribers (the
    /// key's own partition and those its hint names; all of them for a full reconcile),
    /// marks those partitions as having work and announces it to the tier.
    async fn enqueue_fanout(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for job in jobs {
            let parts: Vec<u16> = match &job.target {
                Some(key) => self.partitions_of(key).await?,
                None => (0..PARTITIONS).collect(),
            };
            let (field, value) = job_fields(job);
            for p in parts {
                writes.push((p, field.clone(), value.clone(), job.version));
            }
        }
        let mut dirty = BTreeSet::new();
        let results =
            futures_util::future::join_all(writes.iter().map(|(p, field, value, version)| {
                let mut c = self.conn.clone();
                let key = self.jobs_key(*p);
                async move {
                    scripts::ENQUEUE
                        .key(key)
                        .arg(field.as_slice())
                        .arg(*version)
                        .arg(value.as_str())
                        .invoke_async::<i64>(&mut c)
                        .await
                }
            }))
            .await;
        for ((p, ..), r) in writes.iter().zip(results) {
            r.map_err(map_err)?;
            dirty.insert(*p);
        }
        if dirty.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("SADD")
            .arg(self.dirty_key())
            .arg(dirty.iter().copied().collect::<Vec<_>>())
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        // Announce after the marks exist; a lost announcement only delays the work until
        // the owners' next poll.
        let _: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(self.wake_channel())
            .arg(dirty.len())
            .query_async(&mut c)
            .await;
        self.wake.notify_one();
        Ok(())
    }

    async fn pending_fanout(
        &self,
        recheck: &[u16],
        limit: usize,
    ) -> Result<Vec<(u16, FanoutJob)>, StoreError> {
        let owned: BTreeSet<u16> = self.leased_now().into_iter().collect();
        if owned.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let announced: Vec<u16> = scripts::TAKE_DIRTY
            .key(self.dirty_key())
            .arg(owned.iter().copied().collect::<Vec<_>>())
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        let fresh: Vec<u16> = std::mem::take(&mut self.lock_owned().fresh)
            .into_iter()
            .collect();
        let look: BTreeSet<u16> = announced
            .into_iter()
            .chain(fresh.iter().copied())
            .chain(recheck.iter().copied())
            .filter(|p| owned.contains(p))
            .collect();
        let mut out = Vec::new();
        for p in look {
            let all: Vec<(Vec<u8>, String)> = match redis::cmd("HGETALL")
                .arg(self.jobs_key(p))
                .query_async(&mut c)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    // Look again next time.
                    self.lock_owned().fresh.extend(fresh.iter().copied());
                    return Err(map_err(e));
                }
            };
            for (field, value) in all {
                match parse_job(&field, &value) {
                    Some(job) if out.len() < limit => out.push((p, job)),
                    Some(_) => {
                        self.lock_owned().fresh.insert(p);
                        break;
                    }
                    None => warn!(partition = p, "undecodable fan-out job in Redis; ignored"),
                }
            }
        }
        Ok(out)
    }

    async fn finish_fanout(&self, partition: u16, job: &FanoutJob) -> Result<bool, StoreError> {
        let (field, value) = job_fields(job);
        let mut c = self.conn.clone();
        let done: i64 = scripts::FINISH
            .key(self.jobs_key(partition))
            .arg(field)
            .arg(value)
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        Ok(done == 1)
    }

    async fn fanout_wakeup(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    fn owns_partition(&self, partition: u16) -> bool {
        self.leased_now().contains(&partition)
    }

    async fn by_key_in(
        &self,
        partition: u16,
        key: &ProfileKey,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let ks = codec::key_bytes(key);
        let (sp, sb) = split(bucket_of_key(&ks));
        let ks = &ks;
        Self::walk(
            std::iter::once(partition),
            after,
            limit,
            |p, first, cursor, n| async move {
                let subject_bucket = if p == sp { i64::from(sb) } else { -1 };
                self.page_in(p, Some(ks), subject_bucket, first, &cursor, n)
                    .await
            },
        )
        .await
    }

    async fn scan_partition(
        &self,
        partition: u16,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        Self::walk(
            std::iter::once(partition),
            after,
            limit,
            |p, first, cursor, n| async move { self.page_in(p, None, -1, first, &cursor, n).await },
        )
        .await
    }
}

impl RedisStore {
    /// The registry hash and field naming (`profile_type`, `instance`): in the bucket the
    /// pair hashes to, so any node finds the holder from the pair alone.
    fn instance_slot(&self, sub: &Subscription, instance: &str) -> (String, Vec<u8>) {
        let mut field = vec![codec::type_byte(sub.profile_type)];
        field.extend_from_slice(instance.as_bytes());
        let (p, b) = split(stable_hash(&[&field]) % ALL_BUCKETS);
        (format!("{}:i:{b}", self.part(p)), field)
    }

    /// Makes `sub` the holder of its (instance, profile type) and removes the previous
    /// holder, wherever it lives. Two concurrent claims of one instance leave one holder:
    /// each removes the holder it displaced.
    async fn replace_instance(
        &self,
        sub: &Subscription,
        instance: &str,
    ) -> Result<Vec<Subscription>, StoreError> {
        let (key, field) = self.instance_slot(sub, instance);
        let mut c = self.conn.clone();
        let prev: Option<String> = scripts::CLAIM
            .key(key)
            .arg(field)
            .arg(sub.id.0)
            .invoke_async(&mut c)
            .await
            .map_err(map_err)?;
        let Some(prev) = prev.map(|p| parse_id(p.as_bytes())).transpose()? else {
            return Ok(Vec::new());
        };
        if prev == sub.id {
            return Ok(Vec::new());
        }
        // The registry names the holder; its record says whether it still is one (a
        // holder whose removal could not clear the registry is gone already).
        match self.get(prev).await? {
            Some(old)
                if old.instance.as_deref() == Some(instance)
                    && old.profile_type == sub.profile_type =>
            {
                let old = self.remove_record(prev).await?;
                if let Some(old) = &old {
                    self.forget_source(old).await;
                }
                Ok(old.into_iter().collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Forgets `sub` as its instance's holder (after its removal or expiry). Best effort: a
    /// registry entry left behind names a gone id, which the next claim of the instance
    /// finds and ignores.
    async fn unclaim(&self, sub: &Subscription) {
        let Some(instance) = &sub.instance else {
            return;
        };
        let (key, field) = self.instance_slot(sub, instance);
        let mut c = self.conn.clone();
        let r: Result<i64, _> = scripts::UNCLAIM
            .key(key)
            .arg(field)
            .arg(sub.id.0)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            warn!(%e, id = %sub.id, "cannot clear an instance registry entry");
        }
    }

    /// Removes a subscription's record and index entries; the registry is the caller's.
    async fn remove_record(&self, id: SubId) -> Result<Option<Subscription>, StoreError> {
        let (part, b, hash) = self.locate(id);
        let mut c = self.conn.clone();
        for _ in 0..DECLARE_ATTEMPTS {
            // Gone when read is gone: the removal is ordered at the read.
            let Some(old) = self.raw(&hash, id).await? else {
                return Ok(None);
            };
            let mut script = scripts::REMOVE.key(&hash);
            script
                .key(format!("{part}:t"))
                .key(format!("{part}:n"))
                .key(format!("{part}:due"));
            for k in index_sets(&part, b, &[&old])? {
                script.key(k);
            }
            let r: Result<Option<Vec<u8>>, _> = script
                .arg(&part)
                .arg(b)
                .arg(id.0)
                .invoke_async(&mut c)
                .await;
            match r {
                Ok(rec) => return rec.map(|r| decode(id, &r)).transpose(),
                Err(e) if is_script_error(&e, "RETRY") => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(contended(id))
    }

    /// Returns once the configured number of replicas has every write made so far to the
    /// master holding `key` (a subscription's bucket); `Unavailable` when they do not within
    /// the wait timeout, so that no SUBSCRIBE is answered 200 for a write a failover can lose.
    async fn replicated(&self, key: &str) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let acked = c
            .wait_replicas(key.as_bytes(), self.wait_replicas, self.wait_timeout)
            .await
            .map_err(map_err)?;
        if acked < self.wait_replicas {
            counter!("store_replication_shortfalls_total").increment(1);
            return Err(StoreError::Unavailable(format!(
                "the write reached {acked} of {} replicas within {:?}",
                self.wait_replicas, self.wait_timeout
            )));
        }
        Ok(())
    }

    /// A subscription's stored record.
    async fn raw(&self, hash: &str, id: SubId) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.conn.clone();
        redis::cmd("HGET")
            .arg(hash)
            .arg(id.0)
            .query_async(&mut c)
            .await
            .map_err(map_err)
    }

    /// One partition's expired subscriptions, up to `limit`, removed while this node holds
    /// the partition's lease. The candidates are read first, so that the script removing
    /// them is told every key it touches.
    async fn take_due_in(
        &self,
        p: u16,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, RedisError> {
        let part = self.part(p);
        let mut c = self.conn.clone();
        let buckets: Vec<u16> = redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{part}:due"))
            .arg("-inf")
            .arg(now_ms)
            .query_async(&mut c)
            .await?;
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = redis::pipe();
        for b in &buckets {
            read.cmd("HGETALL").arg(format!("{part}:h:{b}"));
        }
        let contents: Vec<Vec<(Vec<u8>, Vec<u8>)>> = read.query_async(&mut c).await?;
        let mut cands: Vec<(u64, SubId, u16, Vec<u8>)> = Vec::new();
        for (b, all) in buckets.iter().zip(contents) {
            for (id, rec) in all {
                let (Ok(id), Some(e)) = (parse_id(&id), codec::expires_of(&rec)) else {
                    warn!(
                        partition = p,
                        bucket = b,
                        "undecodable record in Redis; skipped"
                    );
                    continue;
                };
                if e <= now_ms {
                    cands.push((e, id, *b, rec));
                }
            }
        }
        cands.sort_unstable_by_key(|(e, id, ..)| (*e, *id));
        cands.truncate(limit);
        let mut script = scripts::TAKE_DUE.key(format!("{part}:due"));
        script
            .key(format!("{part}:lease"))
            .key(format!("{part}:t"))
            .key(format!("{part}:n"));
        for b in &buckets {
            script.key(format!("{part}:h:{b}"));
        }
        let mut sets = BTreeSet::new();
        for (_, _, b, rec) in &cands {
            sets.extend(
                codec::explicit_keys(rec)
                    .unwrap_or_default()
                    .iter()
                    .map(|k| set_key(&part, *b, k)),
            );
        }
        for k in sets {
            script.key(k);
        }
        script
            .arg(&part)
            .arg(now_ms)
            .arg(&self.node)
            .arg(buckets.len());
        for b in &buckets {
            script.arg(*b);
        }
        for (_, id, b, rec) in &cands {
            script.arg(*b).arg(id.0).arg(rec.as_slice());
        }
        script.invoke_async(&mut c).await
    }
}

/// What one attempt at a dialog's turn found.
enum Begun {
    Cseq(u32),
    HeldBy(String),
    Gone,
    /// The record changed between the read that declared its index sets and the script.
    Changed,
}

impl RedisStore {
    async fn try_begin(
        &self,
        id: SubId,
        depends_on: Option<&[ProfileKey]>,
        dead: &str,
    ) -> Result<Begun, StoreError> {
        let (part, b, hash) = self.locate(id);
        let (now, until) = turn_times();
        let mut script = scripts::BEGIN_NOTIFY.key(&hash);
        script.key(format!("{part}:t"));
        if let Some(keys) = depends_on {
            // The index sets of the stored dependencies and of the new ones (the subject's
            // own entry is implicit when the record sits in the subject's bucket).
            let Some(old) = self.raw(&hash, id).await? else {
                return Ok(Begun::Gone);
            };
            let stored = decode(id, &old)?;
            // Before the index entries exist, for as long as the subscription lives.
            self.hint(id, keys, stored.expires_at_ms).await?;
            let implicit = Self::colocated(id, &stored.subject);
            let mut sets = index_sets(&part, b, &[&old])?;
            sets.extend(
                keys.iter()
                    .filter(|k| !(implicit && **k == stored.subject))
                    .map(|k| set_key(&part, b, &codec::key_bytes(k))),
            );
            for k in sets {
                script.key(k);
            }
        }
        script
            .arg(part)
            .arg(b)
            .arg(id.0)
            .arg(&self.node)
            .arg(now)
            .arg(until)
            .arg(dead)
            .arg(self.floor());
        match depends_on {
            Some(keys) => {
                script.arg("1");
                for k in keys {
                    script.arg(codec::key_bytes(k));
                }
            }
            None => {
                script.arg("0");
            }
        }
        let mut c = self.conn.clone();
        let v: redis::Value = match script.invoke_async(&mut c).await {
            Ok(v) => v,
            Err(e) if is_script_error(&e, "RETRY") => return Ok(Begun::Changed),
            Err(e) => return Err(map_err(e)),
        };
        Ok(match v {
            redis::Value::Nil => Begun::Gone,
            redis::Value::Int(c) => Begun::Cseq(u32::try_from(c).unwrap_or(u32::MAX)),
            redis::Value::BulkString(h) => Begun::HeldBy(String::from_utf8_lossy(&h).into_owned()),
            other => {
                return Err(StoreError::Other(format!(
                    "unexpected answer to begin_notify: {other:?}"
                )));
            }
        })
    }
}

/// Now and when a turn taken now lapses, wall-clock milliseconds (shared by the tier).
fn turn_times() -> (u64, u64) {
    let now = SystemClock.now_ms();
    (now, now + TURN_HOLD.as_millis() as u64)
}

/// A script's CSeq answer as a turn: nil gone, 0 busy.
fn turn_of(cseq: Option<u32>) -> Turn {
    match cseq {
        None => Turn::Gone,
        Some(0) => Turn::Busy,
        Some(c) => Turn::Granted(c),
    }
}

/// A job's field (its target) and value (`version:effective_by:rollout_window`, empty
/// parts for none, then `:traceparent` when it has one) in a partition's hash.
fn job_fields(job: &FanoutJob) -> (Vec<u8>, String) {
    let field = match &job.target {
        Some(k) => codec::key_bytes(k),
        None => b"*".to_vec(),
    };
    let opt = |v: Option<u32>| v.map(|e| e.to_string()).unwrap_or_default();
    let mut value = format!(
        "{}:{}:{}",
        job.version,
        opt(job.effective_by),
        opt(job.rollout_window)
    );
    // A traceparent is hex and dashes: it never holds the separator.
    if let Some(tp) = job.traceparent.as_deref().filter(|tp| !tp.contains(':')) {
        value.push(':');
        value.push_str(tp);
    }
    (field, value)
}

fn parse_job(field: &[u8], value: &str) -> Option<FanoutJob> {
    let target = match field {
        b"*" => None,
        k => Some(codec::parse_key(k)?),
    };
    let mut parts = value.split(':');
    let version = parts.next()?.parse().ok()?;
    let mut opt = || -> Option<Option<u32>> {
        match parts.next().unwrap_or_default() {
            "" => Some(None),
            e => e.parse().ok().map(Some),
        }
    };
    let (effective_by, rollout_window) = (opt()?, opt()?);
    Some(FanoutJob {
        target,
        version,
        effective_by,
        rollout_window,
        traceparent: parts.next().map(str::to_owned),
    })
}

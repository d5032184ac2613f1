//! The Redis backend: documents shared by every content node of a tier.
//!
//! One hash per profile key, `{prefix}:c:{<key>}` (the key is the hash tag, so one key's
//! fields share a slot and keys spread over a Cluster):
//!
//! | field       | value                                                  |
//! |-------------|--------------------------------------------------------|
//! | `v`         | the key's version (decimal)                            |
//! | `m`         | [`KeyMeta`] as JSON: documents without bytes, default user |
//! | `r`         | [`Recent`] as JSON: the last change ids applied        |
//! | `b:<name>`  | the bytes of document `<name>`                         |
//!
//! An emptied key (a tombstone) expires after `content.tombstone_ttl`. Before a change
//! empties a key, the tier's version floor `{prefix}:c-floor` is raised to the version it
//! writes; a key created where none is held starts above the floor, so it never repeats a
//! version of an expired tombstone. The floor is its own key (no script spans slots): raised
//! first, a failed write leaves it merely higher than needed.
//!
//! A resolve reads `m` of at most three keys; a fetch reads `m` and one `b:` field. A change
//! is read, decided by [`model::apply`] and written back with a compare-and-set on `v`, so
//! two content nodes applying one key at once (a Kafka rebalance hands a partition over
//! while its old owner finishes a message) cannot lose a write: the loser re-reads and finds
//! the change id already applied.

use bytes::Bytes;
use redis::Script;
use redis_conn::{Conn, RedisFailure};
use std::sync::LazyLock;
use uaprof_api::ProfileKey;

use crate::error::ContentError;
use crate::model::{self, BytesEffect, Decision, DocMeta, KeyMeta, Prepared, Recent};

/// Compare-and-set of one key: `ARGV[1]` the version read ("" when absent), `ARGV[2]` the
/// new version, `ARGV[3]` meta, `ARGV[4]` recent ids, `ARGV[5]` seconds until the key
/// expires (0: never; a live key), `ARGV[6]` how many field/value pairs follow to set, then
/// the pairs, then the fields to delete. Returns 1, or 0 when `v` moved.
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], 'v')
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'm', ARGV[3], 'r', ARGV[4])
if ARGV[5] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
return 1
",
    )
});

/// Raises the version floor `KEYS[1]` to `ARGV[1]` if it is lower.
static RAISE_FLOOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
",
    )
});

/// Attempts at a compare-and-set before giving up. Only a concurrent writer of the same key
/// makes an attempt fail, and each failure means that writer made progress.
const CAS_ATTEMPTS: usize = 16;

pub(crate) struct RedisDocs {
    conn: Conn,
    prefix: String,
    tombstone_ttl_secs: u64,
}

fn map_err(e: redis::RedisError) -> ContentError {
    if e.code() == Some("OOM") {
        // maxmemory reached: nothing was written (Redis refuses a script's first write).
        return ContentError::StoreFull(e.to_string());
    }
    match redis_conn::classify(&e) {
        RedisFailure::Unavailable(m) => ContentError::Unavailable(m),
        other => ContentError::Fault(other.to_string()),
    }
}

fn corrupt(key: &ProfileKey, what: &str, e: impl std::fmt::Display) -> ContentError {
    ContentError::Fault(format!("undecodable {what} of {key} in Redis: {e}"))
}

impl RedisDocs {
    pub fn new(conn: Conn, prefix: &str, tombstone_ttl: std::time::Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            tombstone_ttl_secs: tombstone_ttl.as_secs().max(1),
        }
    }

    fn floor_key(&self) -> String {
        format!("{}:c-floor", self.prefix)
    }

    /// The tier's version floor: the highest version an emptied key reached.
    async fn floor(&self) -> Result<u64, ContentError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.floor_key())
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        raw.map_or(Ok(0), |f| {
            f.parse()
                .map_err(|e| ContentError::Fault(format!("undecodable version floor {f:?}: {e}")))
        })
    }

    fn hash(&self, key: &ProfileKey) -> String {
        format!("{}:c:{{{key}}}", self.prefix)
    }

    fn parse_meta(key: &ProfileKey, raw: Option<Vec<u8>>) -> Result<Option<KeyMeta>, ContentError> {
        raw.map(|m| serde_json::from_slice(&m).map_err(|e| corrupt(key, "metadata", e)))
            .transpose()
    }

    /// The metadata of each key (`None` for keys never written), read concurrently.
    pub async fn metas(&self, keys: &[&ProfileKey]) -> Result<Vec<Option<KeyMeta>>, ContentError> {
        let reads = keys.iter().map(|k| async move {
            let mut c = self.conn.clone();
            let raw: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(self.hash(k))
                .arg("m")
                .query_async(&mut c)
                .await
                .map_err(map_err)?;
            Self::parse_meta(k, raw)
        });
        futures_util::future::try_join_all(reads).await
    }

    /// One document's metadata and bytes.
    pub async fn document(
        &self,
        key: &ProfileKey,
        name: &str,
    ) -> Result<Option<(DocMeta, Bytes)>, ContentError> {
        let mut c = self.conn.clone();
        let (meta, bytes): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.hash(key))
            .arg("m")
            .arg(format!("b:{name}"))
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        let Some(meta) = Self::parse_meta(key, meta)? else {
            return Ok(None);
        };
        match (meta.docs.get(name), bytes) {
            (Some(doc), Some(bytes)) => Ok(Some((doc.clone(), Bytes::from(bytes)))),
            _ => Ok(None),
        }
    }

    /// The version a change id produced on `key`, if it was applied recently.
    pub async fn applied_version(
        &self,
        key: &ProfileKey,
        change_id: &str,
    ) -> Result<Option<u64>, ContentError> {
        let mut c = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.hash(key))
            .arg("r")
            .query_async(&mut c)
            .await
            .map_err(map_err)?;
        let recent: Recent = match raw {
            Some(r) => serde_json::from_slice(&r).map_err(|e| corrupt(key, "change ids", e))?,
            None => Recent::default(),
        };
        Ok(recent.applied_version(change_id))
    }

    /// Applies one change: read, decide, compare-and-set.
    pub async fn apply(&self, change: &Prepared) -> Result<Decision, ContentError> {
        let hash = self.hash(&change.key);
        for _ in 0..CAS_ATTEMPTS {
            let mut c = self.conn.clone();
            let (v, meta, recent): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
                redis::cmd("HMGET")
                    .arg(&hash)
                    .arg("v")
                    .arg("m")
                    .arg("r")
                    .query_async(&mut c)
                    .await
                    .map_err(map_err)?;
            let mut meta = Self::parse_meta(&change.key, meta)?.unwrap_or_default();
            let mut recent: Recent = match recent {
                Some(r) => {
                    serde_json::from_slice(&r).map_err(|e| corrupt(&change.key, "change ids", e))?
                }
                None => Recent::default(),
            };
            let floor = if v.is_none() { self.floor().await? } else { 0 };
            let decision = model::apply(&mut meta, &mut recent, change, floor);
            let Decision::Applied { version, bytes, .. } = &decision else {
                return Ok(decision);
            };
            let ttl = if meta.is_live() {
                0
            } else {
                RAISE_FLOOR
                    .key(self.floor_key())
                    .arg(*version)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map_err(map_err)?;
                self.tombstone_ttl_secs
            };
            let meta_json =
                serde_json::to_vec(&meta).map_err(|e| ContentError::Fault(e.to_string()))?;
            let recent_json =
                serde_json::to_vec(&recent).map_err(|e| ContentError::Fault(e.to_string()))?;
            let mut inv = CAS.key(&hash);
            inv.arg(v.unwrap_or_default())
                .arg(version.to_string())
                .arg(meta_json)
                .arg(recent_json)
                .arg(ttl);
            match bytes {
                BytesEffect::None => {
                    inv.arg(0);
                }
                BytesEffect::Put(name, b) => {
                    inv.arg(1).arg(format!("b:{name}")).arg(b.as_ref());
                }
                BytesEffect::Delete(names) => {
                    inv.arg(0);
                    for n in names {
                        inv.arg(format!("b:{n}"));
                    }
                }
            }
            let done: i64 = inv.invoke_async(&mut c).await.map_err(map_err)?;
            if done == 1 {
                return Ok(decision);
            }
            metrics::counter!(crate::telemetry::STORE_CAS_RETRIES).increment(1);
        }
        Err(ContentError::Unavailable(format!(
            "{}: {CAS_ATTEMPTS} concurrent writers in a row",
            change.key
        )))
    }
}

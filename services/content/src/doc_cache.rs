//! Document bytes kept in memory on a content node whose documents live in Redis.
//!
//! A change to a class document makes every phone of the model fetch the same bytes: without
//! a cache each fetch carries them out of Redis again, so a 100k-phone change moves 100k
//! copies through one Redis. With it, a fetch reads the key's small metadata from Redis
//! (which is where the current version and hash of each document live, whichever content
//! node applied the change) and takes the bytes from memory when the hash matches. A stale
//! entry can never be served: it is found by name but used only under the current hash.
//!
//! Prewarm fills it before the fetches come: a notifier node that is about to fan a change
//! out names the changed keys (`ContentResolver::prewarm`), and this node loads their
//! documents. The journal backend holds every document in memory already and needs none.
//!
//! Bounded by bytes; when an insert would pass the budget, arbitrary entries are evicted
//! (the map's order), which keeps no recency bookkeeping on the fetch path. Documents
//! larger than an eighth of the budget are not cached.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use metrics::{counter, gauge};
use uaprof_api::ProfileKey;

use crate::telemetry as m;

struct Entry {
    sha1_hex: String,
    bytes: Bytes,
}

struct Inner {
    map: HashMap<(ProfileKey, String), Entry>,
    bytes: usize,
}

pub struct DocCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl DocCache {
    /// A cache of at most `budget` bytes of documents.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of `owner`'s document `name` if the cached copy has hash `sha1_hex`.
    pub fn get(&self, owner: &ProfileKey, name: &str, sha1_hex: &str) -> Option<Bytes> {
        let inner = self.lock();
        let hit = inner
            .map
            .get(&(owner.clone(), name.to_owned()))
            .filter(|e| e.sha1_hex == sha1_hex)
            .map(|e| e.bytes.clone());
        drop(inner);
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        counter!(m::CACHE_LOOKUPS, "outcome" => outcome).increment(1);
        hit
    }

    /// Whether the copy of `owner`'s `name` with hash `sha1_hex` is cached (no metric).
    pub fn has(&self, owner: &ProfileKey, name: &str, sha1_hex: &str) -> bool {
        self.lock()
            .map
            .get(&(owner.clone(), name.to_owned()))
            .is_some_and(|e| e.sha1_hex == sha1_hex)
    }

    /// Caches the bytes of `owner`'s `name` at hash `sha1_hex`, replacing any other copy.
    pub fn put(&self, owner: &ProfileKey, name: &str, sha1_hex: &str, bytes: Bytes) {
        if bytes.len() > self.budget / 8 {
            return;
        }
        let mut inner = self.lock();
        let key = (owner.clone(), name.to_owned());
        if let Some(old) = inner.map.remove(&key) {
            inner.bytes -= old.bytes.len();
        }
        while inner.bytes + bytes.len() > self.budget {
            let Some(victim) = inner.map.keys().next().cloned() else {
                break;
            };
            if let Some(old) = inner.map.remove(&victim) {
                inner.bytes -= old.bytes.len();
            }
        }
        inner.bytes += bytes.len();
        inner.map.insert(
            key,
            Entry {
                sha1_hex: sha1_hex.to_owned(),
                bytes,
            },
        );
        gauge!(m::CACHE_BYTES).set(inner.bytes as f64);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ProfileKey {
        ProfileKey::class("acme", "Z100").unwrap()
    }

    #[test]
    fn serves_only_the_copy_with_the_current_hash() {
        let c = DocCache::new(1 << 20);
        c.put(&key(), "fw.xml", "aa", Bytes::from_static(b"<v1/>"));
        assert_eq!(
            c.get(&key(), "fw.xml", "aa").as_deref(),
            Some(&b"<v1/>"[..])
        );
        assert_eq!(
            c.get(&key(), "fw.xml", "bb"),
            None,
            "a changed document misses"
        );
        c.put(&key(), "fw.xml", "bb", Bytes::from_static(b"<v2/>"));
        assert_eq!(c.get(&key(), "fw.xml", "aa"), None, "the old copy is gone");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn stays_within_its_budget() {
        let c = DocCache::new(800);
        for i in 0..20 {
            c.put(&key(), &format!("d{i}"), "h", Bytes::from(vec![b'x'; 100]));
            assert!(c.lock().bytes <= 800);
        }
        assert_eq!(c.len(), 8);
        // Larger than an eighth of the budget: not cached at all.
        c.put(&key(), "big", "h", Bytes::from(vec![b'x'; 101]));
        assert!(!c.has(&key(), "big", "h"));
    }
}

//! The Redis store against real Redis: the store contract on a standalone server and on a
//! 3-master Cluster, plus what only a shared store has (ownership, fencing, outages).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notifier::store::contract::{run_all, sample, sample_id};
use notifier::store::redis::{PARTITIONS, RedisConfig, RedisStore};
use notifier::store::{StoreError, SubId, SubscriptionStore, Turn};
use testkit::{RedisCluster, RedisServer};
use uaprof_api::ProfileKey;

static PREFIX: AtomicU64 = AtomicU64::new(0);

fn config(urls: Vec<String>, cluster: bool) -> RedisConfig {
    RedisConfig {
        urls,
        cluster,
        prefix: format!(
            "t{}-{}",
            std::process::id(),
            PREFIX.fetch_add(1, Ordering::Relaxed)
        ),
        lease_ttl: Duration::from_secs(3),
        timeout: Duration::from_millis(500),
    }
}

/// A store that is the only node of its tier: it holds every partition.
async fn sole_node(config: &RedisConfig) -> Result<RedisStore, StoreError> {
    let store = RedisStore::connect(config, "solo".into()).await?;
    assert_eq!(store.membership_tick().await?, usize::from(PARTITIONS));
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_standalone_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    run_all(|| {
        let c = config(vec![url.clone()], false);
        async move { sole_node(&c).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    run_all(|| {
        let c = config(urls.clone(), true);
        async move { sole_node(&c).await }
    })
    .await;
    // The partitions really are spread over the masters: lease keys, and the subscription
    // records themselves (each master holds a fair part of them, not one master nearly all).
    let keys: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| testkit::redis_cli(*p, &["DBSIZE"]))
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.trim().parse::<u64>().unwrap_or(0) > 0),
        "some master holds no keys: {keys:?}"
    );
    let records: Vec<u64> = cluster
        .ports()
        .iter()
        .map(|p| {
            testkit::redis_cli(*p, &["KEYS", "*:h:*"])
                .lines()
                .filter(|k| !k.is_empty())
                .map(|k| {
                    testkit::redis_cli(*p, &["HLEN", k])
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
                .sum()
        })
        .collect();
    let total: u64 = records.iter().sum();
    assert!(
        total > 200,
        "too few records to judge the spread: {records:?}"
    );
    // A fair share is a third; a sixth leaves room for chance, not for a layout that puts
    // every record in one slot.
    assert!(
        records.iter().all(|n| *n * 6 >= total),
        "subscription records are not spread over the masters: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_new_connection_and_keeps_cseq() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let store = sole_node(&c).await.expect("store");
    let subject = ProfileKey::Device("mac:0004f2000001".into());
    let mut sub = sample(0, "mac:0004f2000001");
    sub.id = store.allocate_id(&subject, 42);
    sub.dialog.local_tag = sub.id.tag();
    store.insert(sub.clone()).await.expect("insert");
    store
        .end_notify(sub.id, None)
        .await
        .expect("first NOTIFY ended");
    let Turn::Granted(c1) = store.begin_notify(sub.id, None).await.expect("cseq") else {
        panic!("the turn is free");
    };

    // Another node (a new connection) shares the dialog's turn: it waits while this
    // node's NOTIFY is in flight, and takes the next CSeq once it has ended.
    let again = RedisStore::connect(&c, "other".into())
        .await
        .expect("reconnect");
    assert_eq!(
        again.get(sub.id).await.expect("get").map(|s| s.dialog),
        Some(sub.dialog.clone())
    );
    assert_eq!(
        again.begin_notify(sub.id, None).await.expect("cseq"),
        Turn::Busy
    );
    assert!(
        !again.end_notify(sub.id, None).await.expect("not its turn"),
        "ending another node's turn does nothing"
    );
    assert!(
        !store.end_notify(sub.id, None).await.expect("end"),
        "a busy begin_notify tries again by itself; it wants nothing"
    );
    drop(store);
    let Turn::Granted(c2) = again.begin_notify(sub.id, None).await.expect("cseq") else {
        panic!("the turn is free again");
    };
    assert!(c2 > c1);
    assert_eq!(again.count().await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocated_subject_is_found_without_an_index_entry() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let store = sole_node(&c).await.expect("store");
    let device = "mac:0004f2abcdef";
    let key = ProfileKey::Device(device.into());
    let mut sub = sample(0, device);
    sub.id = store.allocate_id(&key, 7);
    sub.dialog.local_tag = sub.id.tag();
    store.insert(sub.clone()).await.expect("insert");
    assert_eq!(
        store.by_key(&key, None, 10).await.expect("by_key").ids,
        vec![sub.id]
    );
    // Only the class has an explicit entry, and only its hint names a partition.
    let lines = |out: String| out.lines().filter(|l| !l.is_empty()).count();
    let sets = redis.cli(&["KEYS", &format!("{}:*:k:*", c.prefix)]);
    assert_eq!(lines(sets.clone()), 1, "{sets}");
    assert!(sets.contains("acme/Z100"), "{sets}");
    let hints = redis.cli(&["KEYS", &format!("{}:x:*", c.prefix)]);
    assert_eq!(lines(hints.clone()), 1, "{hints}");
    assert!(hints.contains("acme/Z100"), "{hints}");
    // A second subscription of the same device with another id is found too.
    let mut other = sample(0, device);
    other.id = store.allocate_id(&key, 8);
    other.dialog.local_tag = other.id.tag();
    other.dialog.call_id = "other".into();
    store.insert(other.clone()).await.expect("insert");
    let mut ids = store.by_key(&key, None, 10).await.expect("by_key").ids;
    ids.sort();
    let mut want = vec![sub.id, other.id];
    want.sort();
    assert_eq!(ids, want);
    // Dropping the device from the dependencies removes it from lookups.
    store
        .end_notify(sub.id, None)
        .await
        .expect("first NOTIFY ended");
    assert!(matches!(
        store
            .begin_notify(sub.id, Some(vec![sub.depends_on[1].clone()]))
            .await
            .expect("cseq"),
        Turn::Granted(_)
    ));
    assert_eq!(
        store.by_key(&key, None, 10).await.expect("by_key").ids,
        vec![other.id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_partitions_and_expiry_is_fenced() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let a = Arc::new(RedisStore::connect(&c, "node-a".into()).await.expect("a"));
    let b = Arc::new(RedisStore::connect(&c, "node-b".into()).await.expect("b"));
    a.membership_tick().await.expect("tick");
    // b joins: a must give up b's share before b can take it.
    b.membership_tick().await.expect("tick");
    a.membership_tick().await.expect("tick");
    let nb = b.membership_tick().await.expect("tick");
    let na = a.membership_tick().await.expect("tick");
    assert_eq!(na + nb, usize::from(PARTITIONS), "a={na} b={nb}");
    assert!(na > 64 && nb > 64, "uneven split a={na} b={nb}");

    // 200 subscriptions spread over partitions, all expired.
    for n in 0..200u64 {
        let device = format!("mac:{n:012x}");
        let mut s = sample(0, &device);
        s.id = a.allocate_id(&ProfileKey::Device(device.clone()), n);
        s.dialog.local_tag = s.id.tag();
        s.expires_at_ms = 1_000;
        a.insert(s).await.expect("insert");
    }
    let ta = a.take_due(2_000, 1000).await.expect("due a");
    let tb = b.take_due(2_000, 1000).await.expect("due b");
    assert_eq!(ta.len() + tb.len(), 200);
    assert!(!ta.is_empty() && !tb.is_empty());
    let mut all: Vec<SubId> = ta.iter().chain(&tb).map(|s| s.id).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "a subscription was ended twice");

    // b leaves (SIGTERM): a takes everything at its next tick.
    b.resign().await;
    assert_eq!(
        a.membership_tick().await.expect("tick"),
        usize::from(PARTITIONS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_lapsed_cannot_expire_anything() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let a = RedisStore::connect(&c, "node-a".into()).await.expect("a");
    a.membership_tick().await.expect("tick");
    let mut s = sample(0, "mac:000000000abc");
    s.expires_at_ms = 1_000;
    a.insert(s.clone()).await.expect("insert");
    // a stalls (a long pause, a partition from Redis) while its leases and its registry
    // entry lapse in Redis; it still believes it owns everything.
    let leases = redis.cli(&["KEYS", &format!("{}:*:lease", c.prefix)]);
    for key in leases.lines().filter(|l| !l.is_empty()) {
        redis.cli(&["DEL", key]);
    }
    redis.cli(&["ZREM", &format!("{}:{{m}}:nodes", c.prefix), "node-a"]);
    let b = RedisStore::connect(&c, "node-b".into()).await.expect("b");
    assert_eq!(
        b.membership_tick().await.expect("tick"),
        usize::from(PARTITIONS)
    );
    // The stale owner is fenced inside Redis; the new owner ends the subscription once.
    assert!(a.take_due(2_000, 10).await.expect("due").is_empty());
    assert_eq!(b.take_due(2_000, 10).await.expect("due").len(), 1);
    assert!(a.take_due(2_000, 10).await.expect("due").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_and_recovers() {
    let mut redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let store = sole_node(&c).await.expect("store");
    store
        .insert(sample(1, "mac:000000000001"))
        .await
        .expect("insert");
    redis.stop();
    let err = store
        .insert(sample(2, "mac:000000000002"))
        .await
        .expect_err("insert with Redis down");
    assert!(
        matches!(err, StoreError::Unavailable(_)),
        "not unavailable: {err:?}"
    );
    redis.restart();
    // The connection comes back by itself (the data is gone: this Redis has no persistence).
    let mut last = None;
    for _ in 0..50 {
        match store.insert(sample(3, "mac:000000000003")).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "store did not recover: {last:?}");
    assert!(store.get(sample_id(3)).await.expect("get").is_some());
}

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
        ..RedisConfig::default()
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

/// A wall clock the test sets.
struct Manual(AtomicU64);

impl notifier::Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A failover that loses an acknowledged write (the promoted replica holds the record as it
/// was before the last NOTIFY's CSeq was taken): the next NOTIFY still gets a larger CSeq
/// than the one the phone saw, so the phone does not reject it as out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_does_not_make_a_cseq_reused() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    // 2026-06-01: the floor is far above the sample's CSeq.
    let t0 = 1_780_272_000_000;
    let clock = Arc::new(Manual(AtomicU64::new(t0)));
    let store = sole_node(&c)
        .await
        .expect("store")
        .with_clock(clock.clone());
    let sub = sample(12, "mac:000000000012");
    store.insert(sub.clone()).await.expect("insert");
    store.end_notify(sub.id, None).await.expect("end first");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:h:*", c.prefix))
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    let field = sub.id.0.to_string();
    let before: Vec<u8> = redis::cmd("HGET")
        .arg(&hashes[0])
        .arg(&field)
        .query_async(&mut raw)
        .await
        .expect("HGET");
    let Turn::Granted(sent) = store.begin_notify(sub.id, None).await.expect("begin") else {
        panic!("the turn is free");
    };
    store.end_notify(sub.id, None).await.expect("end");
    // The failover: the record goes back to what it was; the tier carries on seconds later.
    let _: i64 = redis::cmd("HSET")
        .arg(&hashes[0])
        .arg(&field)
        .arg(before)
        .query_async(&mut raw)
        .await
        .expect("HSET");
    assert_eq!(
        store.get(sub.id).await.expect("get").map(|s| s.local_cseq),
        Some(sub.local_cseq)
    );
    clock.0.store(t0 + 5_000, Ordering::Relaxed);
    let Turn::Granted(next) = store.begin_notify(sub.id, None).await.expect("begin") else {
        panic!("the turn is free");
    };
    assert!(next > sent, "CSeq {next} reused after {sent} was sent");
    // A refresh after the same loss does not reuse one either.
    store.end_notify(sub.id, None).await.expect("end");
    clock.0.store(t0 + 10_000, Ordering::Relaxed);
    let mut refreshed = sub.clone();
    refreshed.expires_at_ms += 1000;
    let Turn::Granted(r) = store.refresh(refreshed).await.expect("refresh") else {
        panic!("the turn is free");
    };
    assert!(r > next, "refresh CSeq {r} after {next}");
}

/// Every key matching `pattern`, by SCAN, and its PTTL.
async fn scan_keys(url: &str, pattern: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(url).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        for k in batch {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .expect("PTTL");
            keys.push((String::from_utf8_lossy(&k).into_owned(), ttl));
        }
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Hint sets of made-up vendor/model values go away once no subscription needs them (an
/// hour after the last one's expiry; here that hour is nearly over when they are written),
/// while the hint a live subscription needs stays and the change still finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_nobody_needs_any_more_go_away() {
    let redis = RedisServer::start();
    let c = config(vec![redis.url()], false);
    let store = sole_node(&c).await.expect("store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let grace = 3_600_000;
    let made_up = |n: u64, model: &str| {
        let mut s = sample(n, &format!("mac:{:012x}", 0x9000 + n));
        s.model = Some(model.into());
        s.depends_on[1] = ProfileKey::Class {
            vendor: "acme".into(),
            model: model.into(),
        };
        s
    };
    for n in 0..60u64 {
        let mut s = made_up(500 + n, &format!("rnd-{:08x}", n.wrapping_mul(0x2545_f491)));
        s.expires_at_ms = now + 1_500 - grace;
        store.insert(s.clone()).await.expect("insert");
        store.remove(s.id).await.expect("remove");
    }
    // A live one whose class hashes elsewhere than the subscription (so it needs a hint).
    // Placed by its subject, as a node places it: the device needs no hint.
    let live = (600..700u64)
        .map(|n| {
            let mut s = made_up(n, &format!("kept-{n}"));
            s.id = store.allocate_id(&s.subject, n);
            s.dialog.local_tag = s.id.tag();
            s
        })
        .find(|s| {
            let class_home = RedisStore::allocate(&s.depends_on[1], 0);
            (class_home.0 >> 49) / 64 != (s.id.0 >> 49) / 64
        })
        .expect("a subscription outside its class's partition");
    let live = notifier::store::Subscription {
        expires_at_ms: now + grace,
        ..live
    };
    store.insert(live.clone()).await.expect("insert live");
    let pattern = format!("{}:x:*", c.prefix);
    let before = scan_keys(&redis.url(), &pattern).await;
    assert!(before.len() > 40, "too few hints written: {before:?}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = scan_keys(&redis.url(), &pattern).await;
    assert_eq!(after.len(), 1, "hints left behind: {after:?}");
    let (key, ttl) = &after[0];
    assert!(key.contains("kept-"), "{after:?}");
    assert!(
        *ttl > grace as i64,
        "the live hint lapses before its subscription: {ttl} ms"
    );
    // (The sleep outlasted the leases' local validity: renew them, as the tier would.)
    store.membership_tick().await.expect("tick");
    assert_eq!(
        store
            .by_key(&live.depends_on[1], None, 10)
            .await
            .expect("by_key")
            .ids,
        vec![live.id]
    );
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

/// A MONITOR session on a raw connection: every command the server runs, scripts' own
/// included (`[0 lua]` lines follow the EVALSHA that ran them; a script is atomic, so
/// nothing interleaves).
struct Monitor {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    const END: &'static str = "monitor-end-of-workload";

    fn start(port: u16) -> Monitor {
        use std::io::{BufRead, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = std::io::BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim(), "+OK");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let end = line.contains(Self::END);
                sink.lock().expect("lines").push(line);
                if end {
                    break;
                }
            }
        });
        Monitor {
            lines,
            reader: Some(reader),
        }
    }

    /// Marks the end of the workload and returns everything seen up to it.
    fn finish(mut self, port: u16) -> Vec<String> {
        testkit::redis_cli(port, &["ECHO", Self::END]);
        self.reader.take().expect("reader").join().expect("reader");
        std::mem::take(&mut *self.lines.lock().expect("lines"))
    }
}

/// The quoted arguments of a MONITOR line, escapes kept as Redis printed them (so equal
/// bytes compare equal), and who ran it (`lua` for a script's own commands).
fn monitor_args(line: &str) -> Option<(&str, Vec<String>)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let who = line[open + 1..close].split(' ').nth(1)?;
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    arg.push(c);
                    arg.extend(chars.next());
                }
                '"' => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    Some((who, args))
}

/// Commands the store's scripts may run, each of which names exactly one key, first.
const ONE_KEY_FIRST: &[&str] = &[
    "HSET",
    "HGET",
    "HDEL",
    "HEXISTS",
    "HGETALL",
    "HKEYS",
    "HVALS",
    "SADD",
    "SREM",
    "SMEMBERS",
    "ZADD",
    "ZREM",
    "ZSCORE",
    "ZRANGEBYSCORE",
    "ZREMRANGEBYSCORE",
    "ZCARD",
    "ZRANGE",
    "PEXPIREAT",
    "PTTL",
    "INCRBY",
    "GET",
    "SET",
    "PEXPIRE",
    "DEL",
];

/// Drives every script of the store on a real Redis and checks, from what the server itself
/// reports (MONITOR), that each key a script touches was declared in its KEYS: what a Redis
/// Cluster migrating a slot and a proxy routing by KEYS rely on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_touch_only_declared_keys() {
    let redis = RedisServer::start();
    let monitor = Monitor::start(redis.port());
    let url = redis.url();
    run_all(|| {
        let c = config(vec![url.clone()], false);
        async move { sole_node(&c).await }
    })
    .await;
    // What the contract leaves out: expiry across several buckets of one partition, with
    // dependency changes and refreshes before it, then a node leaving.
    let c = config(vec![url.clone()], false);
    let store = sole_node(&c).await.expect("store");
    let device = "mac:0004f2000777";
    let subject = ProfileKey::Device(device.into());
    for n in 0..40u64 {
        let mut s = sample(n, &format!("mac:0004f2{n:06x}"));
        if n % 2 == 0 {
            s.id = store.allocate_id(&subject, n);
            s.dialog.local_tag = s.id.tag();
        }
        s.expires_at_ms = 1_000 + n;
        s.instance = Some(format!("urn:uuid:{n}"));
        store.insert(s.clone()).await.expect("insert");
        s.depends_on
            .push(ProfileKey::User(format!("u{n}@example.com")));
        store.refresh(s.clone()).await.expect("refresh");
        store.end_notify(s.id, None).await.expect("end");
        store
            .begin_notify(s.id, Some(vec![ProfileKey::User("x@example.com".into())]))
            .await
            .expect("begin");
    }
    assert_eq!(store.take_due(5_000, 1000).await.expect("due").len(), 40);
    store.resign().await;
    let lines = monitor.finish(redis.port());

    let mut declared: Vec<String> = Vec::new();
    let mut script = String::new();
    let mut ran = std::collections::BTreeSet::new();
    let mut touched = 0usize;
    let mut undeclared = Vec::new();
    for line in &lines {
        let Some((who, args)) = monitor_args(line) else {
            continue;
        };
        let Some(cmd) = args.first().map(|c| c.to_ascii_uppercase()) else {
            continue;
        };
        if who == "lua" {
            if !ONE_KEY_FIRST.contains(&cmd.as_str()) {
                undeclared.push(format!("unknown command (teach the test its keys): {line}"));
            } else if !args.get(1).is_some_and(|k| declared.contains(k)) {
                undeclared.push(format!("{script}: {line}"));
            }
            touched += 1;
        } else if cmd == "EVALSHA" || cmd == "EVAL" {
            let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
            declared = args.iter().skip(3).take(n).cloned().collect();
            script = args.get(1).cloned().unwrap_or_default();
            ran.insert(script.clone());
        } else {
            declared.clear();
        }
    }
    assert!(
        touched > 1000,
        "the workload ran too little: {touched} commands"
    );
    assert!(
        undeclared.is_empty(),
        "{} commands touched undeclared keys, e.g.:\n{}",
        undeclared.len(),
        undeclared
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for sha in RedisStore::script_hashes() {
        assert!(ran.contains(&sha), "script {sha} never ran");
    }
}

/// A master and one replica of it, as two real servers.
fn master_and_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    for _ in 0..100 {
        if replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            return (master, replica);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the replica never synced: {}", replica.log());
}

/// With `wait_replicas`, a subscription write is acknowledged only once a replica has it;
/// without the replica it is an error (the SUBSCRIBE gets 503), not a silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_writes_wait_for_replicas() {
    let (master, mut replica) = master_and_replica();
    let mut c = config(vec![master.url()], false);
    c.wait_replicas = 1;
    c.wait_timeout = Duration::from_millis(200);
    let store = sole_node(&c).await.expect("store");
    let sub = sample(1, "mac:000000000001");
    store
        .insert(sub.clone())
        .await
        .expect("insert reaches the replica");
    let on_replica = replica.cli(&["KEYS", &format!("{}:*:h:*", c.prefix)]);
    assert!(
        on_replica.lines().any(|k| !k.is_empty()),
        "the record is on the replica when the insert returns"
    );
    store.end_notify(sub.id, None).await.expect("end");

    replica.stop();
    let err = store
        .insert(sample(2, "mac:000000000002"))
        .await
        .expect_err("an insert no replica has must not be acknowledged");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let mut refreshed = sub.clone();
    refreshed.expires_at_ms += 1000;
    let err = store
        .refresh(refreshed)
        .await
        .expect_err("a refresh no replica has must not be acknowledged");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    // Without the option the same writes succeed on the master alone.
    let plain = sole_node(&config(vec![master.url()], false))
        .await
        .expect("store");
    plain
        .insert(sample(3, "mac:000000000003"))
        .await
        .expect("asynchronous replication acknowledges at once");
}

//! A tier on the Kafka path under a node failure: Redis, two content nodes, two notifier
//! nodes, ten thousand simulated phones (`loadtest`), and a `kill -9` of a notifier in the
//! middle of a class change's fan-out. Its own test binary, so that it does not share the
//! two cores with the other Kafka tests.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Server, kafka_config, tier_node, topic, wait_for_full_ownership};
use testkit::{KafkaBroker, RedisServer};

#[test]
fn kill_9_of_a_notifier_mid_fanout_loses_nothing() {
    const PHONES: u64 = 10_000;
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Slow fan-out, so that the kill lands in the middle of it.
    let cfg = kafka_config(
        dir.path(),
        &broker.bootstrap(),
        "[notifier]\nfanout_concurrency = 8\nfanout_page = 100\n\
         [redis]\nlease_ttl = \"3s\"\ntimeout = \"5s\"\n",
    );
    let content_a = tier_node("content", &redis.url(), &cfg, &["--grpc", "127.0.0.1:0"]);
    // Content nodes of a tier share one public URL (a load balancer in production; here
    // node A's address), so that whichever node resolves, phones are told the same thing.
    let public = format!("http://{}", content_a.http);
    let content_b = tier_node(
        "content",
        &redis.url(),
        &cfg,
        &["--grpc", "127.0.0.1:0", "--public-url", &public],
    );
    let grpc = |c: &Server| format!("http://{}", c.grpc.expect("gRPC"));
    let node_a = tier_node(
        "notifier",
        &redis.url(),
        &cfg,
        &["--content-url", &grpc(&content_a), "--node-id", "node-a"],
    );
    let mut node_b = tier_node(
        "notifier",
        &redis.url(),
        &cfg,
        &["--content-url", &grpc(&content_b), "--node-id", "node-b"],
    );
    wait_for_full_ownership(&[&node_a, &node_b]);

    let mut storm = loadtest::Config::new(
        loadtest::Scenario::ChangeStorm {
            // Gentle enough for debug builds of four nodes sharing two cores: at 400 boots/s
            // (25 s) a slower machine answered most first SUBSCRIBEs 503 and some phones gave
            // up before the change (the base commit failed that way too).
            boot_over: Duration::from_secs(60),
            effective_by: None,
            via: loadtest::ChangeVia::Kafka {
                brokers: broker.bootstrap(),
                topic: topic(&cfg, "changes"),
            },
        },
        PHONES,
        node_a.udp,
        content_a.http,
    );
    storm.provision = content_a.provision;
    storm.max_time = Duration::from_secs(240);
    storm.progress = false;
    storm.source_ips = 32;
    storm.ports_per_ip = 4;
    storm.http_conns = 16;
    storm.time_scale = 0.05;
    let started = Instant::now();
    let run = thread::spawn(move || loadtest::run(storm));

    // Kill node B while it is fanning the change out.
    let deadline = Instant::now() + Duration::from_secs(200);
    let sent_at_kill = loop {
        let sent = node_b.metric("fanout_notifies_total{result=\"sent\"");
        if sent >= 200.0 {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "node B never started the fan-out"
        );
        thread::sleep(Duration::from_millis(5));
    };
    node_b.kill9();
    let killed_at = started.elapsed().as_secs_f64();

    let r = run.join().expect("storm thread").expect("storm");
    let summary = loadtest::report::summary(&r);
    println!(
        "killed node B after {sent_at_kill} NOTIFYs, {killed_at:.2} s into the run\n{summary}"
    );
    assert!(r.completed, "{summary}");
    assert_eq!(
        r.counters.phones_changed, PHONES,
        "every phone got the change: {summary}"
    );
    assert_eq!(r.counters.hash_mismatches, 0, "{summary}");
    let last_fetch =
        r.change_published_at_s.unwrap_or(0.0) + r.change_to_last_fetch_s.unwrap_or(0.0);
    assert!(
        last_fetch > killed_at,
        "the fan-out had finished before the kill ({last_fetch:.2} s <= {killed_at:.2} s)"
    );
    let duplicates = r.counters.change_refetches;
    println!("duplicates: {duplicates} of {PHONES}");
    assert!(
        duplicates * 100 <= PHONES,
        "{duplicates} phones were told twice (more than 1 %)"
    );
    // The notifier that took the change told its content node to load the new document
    // before the NOTIFYs left; the node the phones fetch from served it from memory (and,
    // by the hash check above, never stale).
    let prewarmed = content_a.metric("content_prewarmed_documents_total")
        + content_b.metric("content_prewarmed_documents_total");
    assert!(prewarmed >= 1.0, "no content node was prewarmed");
    let hits = content_a.metric("content_cache_lookups_total{outcome=\"hit\"");
    assert!(
        hits > 0.0,
        "the phones' fetches were not served from the cache"
    );
    drop(content_b);
}

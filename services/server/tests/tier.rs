//! A tier of notifier nodes sharing one Redis, with a content node behind gRPC: nodes are
//! killed (`kill -9`) and drained (SIGTERM) mid-run, and every phone checks that it lost
//! nothing, got no second timeout NOTIFY and saw NOTIFY CSeqs only go up.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Phone, Server, Sub, answer_notifies, put_doc, sha1_hex, wait_for_full_ownership};
use testkit::RedisServer;

fn content_node() -> Server {
    Server::start(&["--role", "content", "--grpc", "127.0.0.1:0"])
}

fn notifier_node(redis: &str, content: &Server, name: &str, extra: &[&str]) -> Server {
    let grpc = format!("http://{}", content.grpc.expect("content serves gRPC"));
    let mut args = vec![
        "--role",
        "notifier",
        "--redis",
        redis,
        "--content-url",
        &grpc,
        "--node-id",
        name,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// What one phone saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every NOTIFY transaction (retransmissions folded): (CSeq, Subscription-State, text).
    notifies: Vec<(u32, String, String)>,
    regressions: Vec<(u32, u32)>,
}

/// Runs a phone until `until`: answers every NOTIFY 200 to whichever node sent it.
fn listen(phone: Phone, until: Instant, seen: Arc<Mutex<Seen>>) {
    let mut last_cseq = 0;
    answer_notifies(&phone, until, |m| {
        let cseq = m.cseq();
        let mut s = seen.lock().expect("lock");
        if cseq <= last_cseq {
            s.regressions.push((last_cseq, cseq));
        }
        let state = m
            .header("Subscription-State")
            .unwrap_or_default()
            .to_owned();
        s.notifies.push((cseq, state, m.raw.clone()));
        last_cseq = cseq;
    });
}

#[test]
fn kill_9_and_drain_lose_nothing_and_end_each_subscription_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let content = content_node();
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes: Vec<Server> = names
        .iter()
        .map(|n| notifier_node(&url, &content, n, &["--expires-min", "5"]))
        .collect();
    let formed = wait_for_full_ownership(&nodes.iter().collect::<Vec<_>>());
    println!("tier of 3 formed in {formed:?}");

    let class = |body: &[u8]| {
        put_doc(
            &content,
            "class",
            "acme:Z100",
            "settings.xml",
            "application/xml",
            body,
        )
    };
    assert_eq!(class(b"<settings v='1'/>"), 201);

    // 90 phones, 30 through each node; the last 30 subscribe for 12 s only.
    const PHONES: usize = 90;
    const SHORT: usize = 30;
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let node = &nodes[i % 3];
        let mut phone = Phone::new(node.udp, &format!("MAC%3a0004f2{i:06x}"));
        let expires = if i >= PHONES - SHORT { 12 } else { 3600 };
        let (resp, _) = phone.subscribe(&Sub {
            expires: Some(expires),
            ..Sub::default()
        });
        assert_eq!(resp.status(), Some(200), "phone {i}: {}", resp.raw);
        let first = phone.expect_notify(Duration::from_secs(10), 200);
        assert!(
            first.raw.contains(&sha1_hex(b"<settings v='1'/>")),
            "phone {i}: {}",
            first.raw
        );
        phones.push(phone);
    }

    // Each phone listens in its own thread until the end of the run.
    let until = Instant::now() + Duration::from_secs(40);
    let seen: Vec<Arc<Mutex<Seen>>> = (0..PHONES).map(|_| Arc::default()).collect();
    let listeners: Vec<_> = phones
        .into_iter()
        .zip(&seen)
        .map(|(p, s)| {
            let s = Arc::clone(s);
            thread::spawn(move || listen(p, until, s))
        })
        .collect();

    // kill -9 one node, then change the class document right away: the dead node's
    // partitions must still get their NOTIFYs once the survivors take them over.
    let killed_at = Instant::now();
    nodes[0].kill9();
    let v2 = b"<settings v='2'/>";
    assert_eq!(class(v2), 200);
    wait_for_full_ownership(&[&nodes[1], &nodes[2]]);
    println!(
        "takeover after kill -9: {:?} (lease TTL 5 s)",
        killed_at.elapsed()
    );

    // Drain one survivor half-way through; the last node must end up owning everything.
    thread::sleep(Duration::from_secs(12));
    let drained_at = Instant::now();
    let status = nodes[1].stop();
    let drain = drained_at.elapsed();
    assert!(
        status.success(),
        "node-b exit status after SIGTERM: {status}"
    );
    wait_for_full_ownership(&[&nodes[2]]);
    let handover = drained_at.elapsed() - drain;
    println!(
        "SIGTERM drain: exited in {drain:?}, partitions owned by the last node {handover:?} later"
    );

    for l in listeners {
        l.join().expect("phone thread");
    }
    let v2_hash = sha1_hex(v2);
    let mut report = BTreeMap::new();
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock().expect("lock");
        assert!(
            s.regressions.is_empty(),
            "phone {i}: CSeq went back: {:?}",
            s.regressions
        );
        let changed = s
            .notifies
            .iter()
            .any(|(_, st, body)| st.starts_with("active") && body.contains(&v2_hash));
        let timeouts = s
            .notifies
            .iter()
            .filter(|(_, st, _)| st.starts_with("terminated") && st.contains("reason=timeout"))
            .count();
        if i < PHONES - SHORT {
            assert!(changed, "phone {i} lost the change: {:?}", s.notifies);
            assert_eq!(timeouts, 0, "phone {i} timed out early: {:?}", s.notifies);
        } else {
            assert_eq!(
                timeouts, 1,
                "phone {i}: {timeouts} timeout NOTIFYs: {:?}",
                s.notifies
            );
        }
        *report.entry(s.notifies.len()).or_insert(0) += 1;
    }
    println!("NOTIFY transactions per phone after the kill: {report:?}");
}

#[test]
fn redis_outage_answers_503_and_the_node_recovers() {
    let mut redis = RedisServer::start();
    let server = Server::start(&["--redis", &redis.url()]);
    let mut phone = Phone::new(server.udp, "MAC%3a0004f2000001");
    let (ok, _) = phone.subscribe(&Sub::default());
    assert_eq!(ok.status(), Some(200));
    phone.expect_notify(Duration::from_secs(10), 200);

    redis.stop();
    let mut down = Phone::new(server.udp, "MAC%3a0004f2000002");
    let (resp, _) = down.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(503), "{}", resp.raw);
    assert!(resp.header("Retry-After").is_some(), "{}", resp.raw);

    redis.restart();
    let mut result = None;
    for attempt in 0..50 {
        let mut again = Phone::new(server.udp, &format!("MAC%3a0004f21000{attempt:02x}"));
        let (resp, _) = again.subscribe(&Sub::default());
        if resp.status() == Some(200) {
            result = Some(again);
            break;
        }
        assert_eq!(resp.status(), Some(503), "{}", resp.raw);
        thread::sleep(Duration::from_millis(200));
    }
    let again = result.expect("node never recovered after Redis came back");
    again.expect_notify(Duration::from_secs(10), 200);
}

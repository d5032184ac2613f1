//! The Kafka path end to end: a real Kafka-protocol broker (tansu), the real binary in its
//! roles, an OSS producer this project did not write (Python confluent-kafka with the
//! protobuf schema compiled from `proto/`), Redis for the tier tests, and phones.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Msg, Phone, Server, Sub, answer_notifies, http, kafka_config, put_doc, sha1_hex, tier_node,
    topic, wait_for_full_ownership,
};
use sha2::Digest;
use testkit::{KafkaBroker, RedisServer};

const T: Duration = Duration::from_secs(20);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oss/oss.py")
}

/// Runs the OSS script; panics with its stderr when it fails.
fn oss(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(testkit::kafka::python())
        .arg(script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write actions");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "oss.py {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn produce(broker: &KafkaBroker, config: &Path, actions: &[serde_json::Value]) {
    let lines: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
    oss(
        &["produce", &broker.bootstrap(), &topic(config, "changes")],
        &lines.join("\n"),
    );
}

/// Reads `count` records of a topic (from the beginning) as JSON objects.
fn dump(broker: &KafkaBroker, topic: &str, count: usize) -> Vec<serde_json::Value> {
    let out = oss(
        &["dump", &broker.bootstrap(), topic, &count.to_string(), "30"],
        "",
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn put_action(id: &str, version: u64, name: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "change_id": id,
        "class": ["acme", "Z100"],
        "version": version,
        "put": {"name": name, "content_type": "application/xml", "content": content},
    })
}

/// The URLs of the documents a NOTIFY points at, with their hashes. One document travels in
/// the NOTIFY's own Content-Type, several as parts of a multipart body.
fn documents(n: &Msg) -> Vec<(String, String)> {
    let body = &n.raw;
    // A parameter's value, quoted or a token.
    let attr = |part: &str, name: &str| -> Option<String> {
        let start = part.find(&format!(";{name}="))? + name.len() + 2;
        let v = &part[start..];
        Some(match v.strip_prefix('"') {
            Some(q) => q[..q.find('"')?].to_owned(),
            None => v[..v.find([';', '\r', '\n']).unwrap_or(v.len())].to_owned(),
        })
    };
    body.split("message/external-body")
        .skip(1)
        .filter_map(|part| Some((attr(part, "URL")?, attr(part, "hash")?)))
        .collect()
}

/// GETs a document URL (`http://host:port/path`).
fn fetch(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    http(host.parse().expect("addr"), "GET", path, &[], b"")
}

#[test]
fn oss_events_reach_phones_and_bad_events_are_dead_lettered_without_blocking() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // A producer named in [provisioning] may change only its keys (devices here); the API
    // needs a token.
    let digest = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let cfg = kafka_config(
        dir.path(),
        &broker.bootstrap(),
        &format!(
            "[content]\nmax_document_bytes = 4096\n[provisioning]\ntokens = [\
             {{ name = \"oss-devices\", sha256 = \"{}\", allow = [\"device/*\"] }}, \
             {{ name = \"oss-admin\", sha256 = \"{}\", allow = [\"*\"] }}]\n",
            digest("devices-secret"),
            digest("admin-secret")
        ),
    );
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let mut phone = Phone::new(srv.udp, "MAC%3a00000000c0a1");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    let first = phone.expect_notify(T, 200);
    assert!(documents(&first).is_empty(), "nothing provisioned yet");

    // One key, one partition, in this order: a record that is no event, then a valid one,
    // then four that are refused. The refused ones must not hold up the valid one.
    let good = "<settings v=\"5\"/>";
    let bad_mac = serde_json::json!({
        "change_id": "c-bad-key", "device": "not-a-mac", "record_key": "class/acme:Z100",
        "put": {"name": "a.xml", "content_type": "application/xml", "content": "<a/>"},
    });
    let mut rogue = put_action("c-rogue", 0, "fw.xml", "<rogue/>");
    rogue["producer"] = "rogue".into();
    let mut outside = put_action("c-outside", 0, "fw.xml", "<outside/>");
    outside["producer"] = "oss-devices".into();
    let mut with_trace = put_action("c-1", 5, "fw.xml", good);
    with_trace["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    produce(
        &broker,
        &cfg,
        &[
            serde_json::json!({"raw": "08ffffffff0f1201", "record_key": "class/acme:Z100"}),
            with_trace.clone(),
            rogue,
            outside,
            put_action("c-2", 3, "fw.xml", "<older/>"),
            put_action("c-3", 0, "big.xml", &"x".repeat(5000)),
            bad_mac,
        ],
    );
    let n = phone.expect_notify(T, 200);
    let docs = documents(&n);
    assert_eq!(docs.len(), 1, "{}", n.raw);
    assert_eq!(docs[0].1, sha1_hex(good.as_bytes()));
    let (st, body) = fetch(&docs[0].0);
    assert_eq!((st, body.as_slice()), (200, good.as_bytes()));
    assert!(
        phone.expect_silence(Duration::from_millis(1500)).is_none(),
        "refused events changed nothing, so nothing more is sent"
    );

    let dlq = dump(&broker, &topic(&cfg, "dead_letter"), 6);
    let reasons: BTreeSet<String> = dlq
        .iter()
        .map(|r| {
            r["headers"]["uaprof-reason"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "malformed",
        "producer_not_allowed",
        "producer_forbidden",
        "version_not_increasing",
        "too_large",
        "bad_key",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(reasons, expected, "{dlq:?}");
    let raw = dlq
        .iter()
        .find(|r| r["headers"]["uaprof-reason"] == "malformed")
        .expect("the malformed record");
    assert_eq!(
        raw["value_hex"], "08ffffffff0f1201",
        "dead letters keep the bytes"
    );
    assert_eq!(raw["key"], "class/acme:Z100");
    for r in &dlq {
        let source = r["headers"]["uaprof-source"].as_str().unwrap_or_default();
        assert!(source.starts_with(&topic(&cfg, "changes")), "{r}");
        assert!(r["headers"]["uaprof-error"].is_string(), "{r}");
    }

    // The applied record carries the trace context on.
    let applied = dump(&broker, &topic(&cfg, "applied"), 1);
    assert_eq!(applied[0]["key"], "class/acme:Z100");
    assert_eq!(
        applied[0]["headers"]["traceparent"],
        with_trace["traceparent"]
    );

    // An old event replayed (same change id) changes nothing and notifies no one.
    produce(&broker, &cfg, &[with_trace]);
    assert!(
        phone.expect_silence(Duration::from_millis(1500)).is_none(),
        "a replayed event sends no NOTIFY"
    );
    let deadline = Instant::now() + T;
    while srv.metric("kafka_change_events_total{outcome=\"duplicate\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the replay was never consumed");
        thread::sleep(Duration::from_millis(50));
    }

    // The provisioning API goes through the same ordered path and answers once applied.
    let (st, body) = http(
        srv.provision,
        "PUT",
        "/provision/v1/class/acme:Z100/documents/fw.xml",
        &[
            ("Content-Type", "application/xml"),
            ("Authorization", "Bearer admin-secret"),
        ],
        b"<settings v=\"6\"/>",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let receipt: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(receipt["status"], "applied");
    assert_eq!(receipt["version"], 6, "the next version after the OSS's 5");
    let n = phone.expect_notify(T, 200);
    assert_eq!(documents(&n)[0].1, sha1_hex(b"<settings v=\"6\"/>"));
}

/// Answers every NOTIFY of `phone` 200 until `until`; records the hashes each carried.
fn listen(phone: Phone, until: Instant, seen: Arc<Mutex<Vec<Vec<String>>>>) {
    answer_notifies(&phone, until, |m| {
        let hashes = documents(&m).into_iter().map(|(_, h)| h).collect();
        seen.lock().expect("lock").push(hashes);
    });
}

#[test]
fn a_burst_of_100_events_for_one_key_costs_at_most_two_notifies() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let mut seen = Vec::new();
    let mut listeners = Vec::new();
    let until = Instant::now() + Duration::from_secs(25);
    for i in 0..20 {
        let mut phone = Phone::new(srv.udp, &format!("MAC%3a0000000ab{i:03x}"));
        let (r, _) = phone.subscribe(&Sub::default());
        assert_eq!(r.status(), Some(200));
        phone.expect_notify(T, 200);
        let s = Arc::new(Mutex::new(Vec::new()));
        seen.push(Arc::clone(&s));
        listeners.push(thread::spawn(move || listen(phone, until, s)));
    }
    let bodies: Vec<String> = (0..100).map(|i| format!("<fw build=\"{i}\"/>")).collect();
    let actions: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| put_action(&format!("burst-{i}"), 0, "fw.xml", b))
        .collect();
    produce(&broker, &cfg, &actions);
    let last = sha1_hex(bodies[99].as_bytes());
    // Every phone ends on the last version.
    let deadline = Instant::now() + T;
    loop {
        let done = seen.iter().all(|s| {
            s.lock()
                .expect("lock")
                .last()
                .is_some_and(|h| h.contains(&last))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every phone got the last version"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Let anything still queued arrive before counting.
    thread::sleep(Duration::from_secs(2));
    let counts: Vec<usize> = seen.iter().map(|s| s.lock().expect("lock").len()).collect();
    println!("NOTIFYs per phone after the burst: {counts:?}");
    for (i, s) in seen.iter().enumerate() {
        let got = s.lock().expect("lock").len();
        assert!(
            (1..=2).contains(&got),
            "phone {i}: {got} NOTIFYs for a burst of 100 changes to one key"
        );
    }
    drop(listeners);
}

#[test]
fn a_content_node_slow_to_apply_holds_the_notify_back() {
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let content = tier_node("content", &redis.url(), &cfg, &["--grpc", "127.0.0.1:0"]);
    let grpc = format!("http://{}", content.grpc.expect("gRPC"));
    let node = tier_node("notifier", &redis.url(), &cfg, &["--content-url", &grpc]);
    wait_for_full_ownership(&[&node]);

    // The provisioning API of a content node in a tier answers once the change is applied.
    assert_eq!(
        put_doc(
            &content,
            "class",
            "acme:Z100",
            "fw.xml",
            "application/xml",
            b"<v1/>"
        ),
        201
    );
    let mut phone = Phone::new(node.udp, "MAC%3a00000000c0b1");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    let n = phone.expect_notify(T, 200);
    assert_eq!(documents(&n)[0].1, sha1_hex(b"<v1/>"));

    // The content node stops applying; the OSS publishes a change meanwhile.
    content.signal("STOP");
    produce(&broker, &cfg, &[put_action("slow-1", 0, "fw.xml", "<v2/>")]);
    let early = phone.expect_silence(Duration::from_secs(3));
    content.signal("CONT");
    assert!(
        early.is_none(),
        "a NOTIFY went out before the content tier had the change: {early:?}"
    );
    let n = phone.expect_notify(T, 200);
    let docs = documents(&n);
    assert_eq!(docs[0].1, sha1_hex(b"<v2/>"));
    let (st, body) = fetch(&docs[0].0);
    assert_eq!((st, body.as_slice()), (200, b"<v2/>".as_slice()));
}

#[test]
fn a_broker_restart_mid_stream_loses_no_event() {
    let mut broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let mut phone = Phone::new(srv.udp, "MAC%3a00000000c0c1");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    phone.expect_notify(T, 200);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = {
        let seen = Arc::clone(&seen);
        let until = Instant::now() + Duration::from_secs(60);
        thread::spawn(move || listen(phone, until, seen))
    };

    // A producer publishing steadily while the broker is killed and restarted.
    let actions: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            put_action(
                &format!("r-{i}"),
                0,
                &format!("doc{i}.xml"),
                &format!("<d{i}/>"),
            )
        })
        .collect();
    let (first, second) = actions.split_at(20);
    produce(&broker, &cfg, first);
    let bootstrap = broker.bootstrap();
    let changes = topic(&cfg, "changes");
    let rest: Vec<String> = second.iter().map(|a| a.to_string()).collect();
    let producer = thread::spawn(move || {
        // Starts while the broker is down; librdkafka retries until it is back.
        oss(&["produce", &bootstrap, &changes], &rest.join("\n"))
    });
    broker.restart();
    producer.join().expect("producer");

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (st, body) = http(
            srv.provision,
            "GET",
            "/provision/v1/class/acme:Z100",
            &[],
            b"",
        );
        let listing: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let n = listing["documents"].as_array().map_or(0, Vec::len);
        let last_notify = seen.lock().expect("lock").last().map_or(0, Vec::len);
        if st == 200 && n == 40 && last_notify == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the broker restart: {n} of 40 documents stored, last NOTIFY names {last_notify}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(listener);
}

/// The key's version and the hash of one of its documents, from the provisioning API.
fn class_state(srv: &Server, name: &str) -> Option<(u64, String)> {
    let (st, body) = http(
        srv.provision,
        "GET",
        "/provision/v1/class/acme:Z100",
        &[],
        b"",
    );
    if st != 200 {
        return None;
    }
    let listing: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let doc = listing["documents"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)?;
    Some((
        listing["version"].as_u64()?,
        doc["sha1"].as_str()?.to_owned(),
    ))
}

#[test]
fn a_content_node_killed_mid_burst_applies_each_change_exactly_once() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let args = ["--config", cfg.to_str().expect("path")];
    let mut srv = Server::start(&args);
    let data = srv.data.clone();
    let _keep = srv.take_tmp();
    // "Next version" changes carry no version to compare: only their ids make a
    // redelivery harmless.
    let bodies: Vec<String> = (0..300).map(|i| format!("<fw build=\"{i}\"/>")).collect();
    let actions: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| put_action(&format!("once-{i}"), 0, "fw.xml", b))
        .collect();
    produce(&broker, &cfg, &actions);
    let deadline = Instant::now() + T;
    loop {
        if class_state(&srv, "fw.xml").is_some_and(|(v, _)| v >= 50) {
            break;
        }
        assert!(Instant::now() < deadline, "the burst is not being applied");
        thread::sleep(Duration::from_millis(5));
    }
    srv.kill9();
    let at_kill = "killed mid-burst";
    let srv = Server::start_in(&data, &args);
    let last = sha1_hex(bodies[299].as_bytes());
    let deadline = Instant::now() + Duration::from_secs(40);
    let (version, hash) = loop {
        if let Some((v, h)) = class_state(&srv, "fw.xml")
            && h == last
        {
            break (v, h);
        }
        assert!(
            Instant::now() < deadline,
            "{at_kill}: the burst never finished"
        );
        thread::sleep(Duration::from_millis(50));
    };
    // Redelivered changes after the restart must not be applied a second time.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(class_state(&srv, "fw.xml"), Some((version, hash)));
    assert_eq!(version, 300, "each of the 300 changes applied exactly once");
}

/// With `kafka.event_signing_key_files`, a producer's events must carry its HMAC in header
/// `uaprof-signature`: an unsigned or forged one is dead-lettered before anything is stored,
/// a signed one applies (signed by the Python OSS client with its own HMAC).
#[test]
fn signed_events_are_checked_before_anything_is_stored() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "the-oss-and-uaprof-share-this-secret";
    let key = dir.path().join("oss-test.key");
    std::fs::write(&key, format!("{secret}\n")).expect("write");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    // The signing keys belong in [kafka]: append them to the generated table.
    let text = std::fs::read_to_string(&cfg).expect("read");
    let text = text.replacen(
        "[kafka.topics]",
        &format!(
            "event_signing_key_files = {{ oss-test = {k:?}, provisioning-api = {k:?} }}\n\
             [kafka.topics]",
            k = key.to_str().expect("path")
        ),
        1,
    );
    std::fs::write(&cfg, text).expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let mut unsigned = put_action("c-unsigned", 0, "fw.xml", "<unsigned/>");
    unsigned["change_id"] = "c-unsigned".into();
    let mut forged = put_action("c-forged", 0, "fw.xml", "<forged/>");
    forged["signing_key"] = "a-guess-that-is-not-the-secret".into();
    let mut signed = put_action("c-signed", 0, "fw.xml", "<signed/>");
    signed["signing_key"] = secret.into();
    produce(&broker, &cfg, &[unsigned, forged, signed]);

    let listing = "/provision/v1/class/acme:Z100";
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (st, body) = http(srv.provision, "GET", listing, &[], b"");
        if st == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the signed event was never applied"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        doc["version"], 1,
        "only the signed event was applied: {doc}"
    );
    assert_eq!(doc["documents"][0]["sha1"], sha1_hex(b"<signed/>"));
    let dlq = dump(&broker, &topic(&cfg, "dead_letter"), 2);
    let reasons: Vec<&str> = dlq
        .iter()
        .map(|r| r["headers"]["uaprof-reason"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(reasons, ["bad_signature", "bad_signature"], "{dlq:?}");

    // With a key for provisioning-api, the tier signs its own API's events, and they apply.
    let (st, body) = http(
        srv.provision,
        "PUT",
        "/provision/v1/class/acme:Z100/documents/fw.xml",
        &[("Content-Type", "application/xml")],
        b"<from-the-api/>",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let receipt: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(receipt["status"], "applied");
    assert_eq!(receipt["version"], 2);
}

/// The OSS sets a device's resync target with a `SetResync` event and clears it with an
/// empty one: a change to the device's documents then sends a check-sync NOTIFY to the
/// target, and nothing once it is cleared.
#[test]
fn a_set_resync_event_aims_check_sync_at_a_device_and_an_empty_one_clears_it() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let phone = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    phone.set_read_timeout(Some(T)).expect("timeout");
    let contact = format!("sip:2002@{}", phone.local_addr().expect("addr"));
    let mac = "00:04:f2:aa:bb:08";
    let put = |id: &str, content: &str| {
        serde_json::json!({
            "change_id": id, "device": mac,
            "put": {"name": "phone.cfg", "content_type": "text/plain", "content": content},
        })
    };
    produce(
        &broker,
        &cfg,
        &[
            put("r-1", "v1"),
            serde_json::json!({"change_id": "r-2", "device": mac,
                               "resync": {"contact": contact, "event": "check-sync"}}),
        ],
    );
    assert_eq!(
        srv.metric_reaching("check_sync_targets_total{op=\"set\"}", 1.0, T),
        1.0
    );
    produce(&broker, &cfg, &[put("r-3", "v2")]);
    let mut buf = vec![0u8; 65_536];
    let (n, from) = phone.recv_from(&mut buf).expect("a check-sync NOTIFY");
    let m = Msg::parse(&buf[..n]);
    assert!(
        m.first.starts_with(&format!("NOTIFY {contact} ")),
        "{}",
        m.raw
    );
    assert_eq!(
        m.header("Event"),
        Some("check-sync;reboot=false"),
        "{}",
        m.raw
    );
    phone
        .send_to(m.response(200, "OK").as_bytes(), from)
        .expect("answer");

    produce(
        &broker,
        &cfg,
        &[serde_json::json!({"change_id": "r-4", "device": mac, "resync": null})],
    );
    assert_eq!(
        srv.metric_reaching("check_sync_targets_total{op=\"cleared\"}", 1.0, T),
        1.0
    );
    produce(&broker, &cfg, &[put("r-5", "v3")]);
    phone
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(
        phone.recv_from(&mut buf).is_err(),
        "a cleared target is sent nothing"
    );
    assert_eq!(
        srv.metric("kafka_change_events_total{outcome=\"applied\"}"),
        5.0
    );
}

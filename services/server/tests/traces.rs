//! Traces over OTLP: the real binary exports to an in-process OTLP/gRPC collector, and the
//! spans of a SUBSCRIBE (its store write and its NOTIFY under it) and of a document fetch
//! arrive there with their parent links.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Phone, Server, Sub, http, kafka_config, put_doc};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};

const T: Duration = Duration::from_secs(10);

/// Drives one subscription through a change and a document fetch, then stops the server
/// gracefully (which flushes its batched spans); returns its JSON log.
fn session(endpoint: &str) -> String {
    let args = ["--otlp-endpoint", endpoint, "--log-format", "json"];
    let (mut srv, log) = Server::start_logged(&args, "warn,notifier::subscribe=debug");
    let mut phone = Phone::new(srv.udp, "MAC%3a00df1e00bb02");
    let (resp, early) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    match early.into_iter().next() {
        Some(first) => phone.send(&first.response(200, "OK")),
        None => drop(phone.expect_notify(T, 200)),
    }
    let doc = b"<config/>";
    let st = put_doc(
        &srv,
        "device",
        "00:DF:1E:00:BB:02",
        "s.xml",
        "application/x-acme+xml",
        doc,
    );
    assert_eq!(st, 201);
    let change = phone.expect_notify(T, 200);
    let ctype = change.header("Content-Type").expect("Content-Type");
    let path = &common::profile_path(ctype);
    assert_eq!(http(srv.http, "GET", path, &[], b"").0, 200);
    assert!(srv.stop().success());
    std::fs::read_to_string(log).expect("log")
}

/// Runs `session` against a fresh in-process collector and returns what it returned and every
/// span exported meanwhile. The collector hands spans over a small channel: it is drained
/// while the server runs, or a large export would stall the server's flush.
async fn collect<R: Send + 'static>(session: fn(&str) -> R) -> (R, Vec<ExportedSpan>) {
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let run = tokio::task::spawn_blocking(move || session(&endpoint));
    let mut spans: Vec<ExportedSpan> = Vec::new();
    while !run.is_finished() {
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(200))
                .await,
        );
    }
    let out = run.await.expect("session");
    spans.extend(collector.exported_spans(1, Duration::from_secs(2)).await);
    (out, spans)
}

// The exporter's gRPC client and the collector both run on Tokio; the collector needs
// worker threads of its own while the test thread blocks on the SIP exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_store_notify_and_fetch_spans_reach_the_collector_with_parent_links() {
    let (log, spans) = collect(session).await;

    let by_id: BTreeMap<&str, &ExportedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let parent_of = |s: &ExportedSpan| by_id.get(s.parent_span_id.as_str()).copied();

    // The collector renders attribute values with `Debug` (`IntValue(1)`, `StringValue("x")`).
    let attr = |s: &ExportedSpan, key: &str, value: &str| {
        s.attributes.get(key).is_some_and(|v| {
            v.contains(&format!("IntValue({value})"))
                || v.contains(&format!("StringValue({value:?})"))
        })
    };
    let subscribe = spans
        .iter()
        .find(|s| s.name == "sip.subscribe" && attr(s, "status", "200"))
        .unwrap_or_else(|| panic!("no sip.subscribe span with status 200 in {names:?}"));
    let under_subscribe = |name: &str| {
        spans.iter().find(|s| {
            s.name == name
                && parent_of(s).is_some_and(|p| p.span_id == subscribe.span_id)
                && s.trace_id == subscribe.trace_id
        })
    };
    assert!(
        under_subscribe("store.insert").is_some(),
        "no store.insert span under sip.subscribe: {names:?}"
    );
    let notify = under_subscribe("sip.notify")
        .unwrap_or_else(|| panic!("no sip.notify span under sip.subscribe: {names:?}"));
    // The first NOTIFY's CSeq starts at the store's clock floor (seconds since 2025), not 1.
    assert!(
        notify
            .attributes
            .get("cseq")
            .is_some_and(|v| v.contains("StringValue(\"") || v.contains("IntValue(")),
        "{notify:?}"
    );
    let fetch = spans
        .iter()
        .find(|s| s.name == "content.fetch")
        .unwrap_or_else(|| panic!("no content.fetch span: {names:?}"));
    assert!(attr(fetch, "name", "s.xml"), "{fetch:?}");

    // A log line written inside the SUBSCRIBE's span names its trace.
    let answered = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "SUBSCRIBE answered" && v["span"]["status"] == 200)
        .unwrap_or_else(|| panic!("no 'SUBSCRIBE answered' line in {log}"));
    assert_eq!(
        answered["trace_id"],
        subscribe.trace_id.as_str(),
        "{answered}"
    );
    assert_eq!(
        answered["span_id"],
        subscribe.span_id.as_str(),
        "{answered}"
    );
}

/// Provisions one document through the Kafka path (role all with `[kafka]`) to a subscribed
/// phone, then stops the server.
fn kafka_session(endpoint: &str) {
    let broker = testkit::KafkaBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(dir.path(), &broker.bootstrap(), "");
    let mut srv = Server::start(&[
        "--config",
        cfg.to_str().expect("path"),
        "--otlp-endpoint",
        endpoint,
    ]);
    let mut phone = Phone::new(srv.udp, "MAC%3a00df1e00bb03");
    let (resp, early) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    match early.into_iter().next() {
        Some(first) => phone.send(&first.response(200, "OK")),
        None => drop(phone.expect_notify(T, 200)),
    }
    let doc = b"<config/>";
    let st = put_doc(
        &srv,
        "device",
        "00:DF:1E:00:BB:03",
        "k.xml",
        "application/x-acme+xml",
        doc,
    );
    assert_eq!(st, 201);
    phone.expect_notify(Duration::from_secs(20), 200);
    assert!(srv.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_carries_its_trace_through_kafka_headers_to_the_fanout_walk_and_its_notifies() {
    let (_, spans) = collect(kafka_session).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let child_of = |name: &str, parent: &ExportedSpan| {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.parent_span_id == parent.span_id
                    && s.trace_id == parent.trace_id
            })
            .unwrap_or_else(|| panic!("no {name} under {}: {names:?}", parent.name))
    };
    let produce = spans
        .iter()
        .find(|s| s.name == "kafka.produce")
        .unwrap_or_else(|| panic!("no kafka.produce span: {names:?}"));
    // Producer → change topic → content tier → applied topic → notifier, each hop carried
    // in the record's traceparent header.
    let change = child_of("kafka.change", produce);
    let batch = child_of("fanout.batch", change);
    child_of("store.enqueue_fanout", batch);
    // The job carries the batch's trace through the subscription store to the walk, and the
    // walk's NOTIFY (to the subscribed phone) is in it too.
    let walk = child_of("fanout.walk", batch);
    let notify = child_of("fanout.notify", walk);
    let sent = child_of("sip.notify", notify);
    assert!(
        sent.attributes.contains_key("cseq"),
        "{:?}",
        sent.attributes
    );
}

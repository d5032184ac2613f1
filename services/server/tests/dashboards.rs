//! The dashboards (`deploy/grafana/*.json`) and alert rules (`deploy/prometheus/*.yaml`) name
//! only metrics the server exposes. A content node (gRPC) and a notifier node on Redis, the
//! production shape, serve a phone's SUBSCRIBE, a change and a document fetch so that lazily
//! registered metrics exist; their `/metrics` are scraped and every metric a dashboard or rule
//! uses must be among them, or in [`NOT_SCRAPED`] with its reason. The scrape also shows that
//! every metric has HELP text and that latencies are Prometheus histograms with buckets.
//! (The PromQL itself is checked by `deploy/check-monitoring.sh` with promtool.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Phone, Server, Sub, answer_notifies, http, put_doc, wait_for_full_ownership};
use testkit::RedisServer;

/// Metrics used by a dashboard or rule that this test's two nodes do not expose, and why. Each
/// is still looked up as a string literal in the workspace sources, so a misspelt name fails
/// here as it would in a scrape.
const NOT_SCRAPED: &[(&str, &str)] = &[
    // Only with `[kafka]` configured (the bus crate); tests/kafka.rs runs those with a broker.
    ("kafka_consumer_lag", "kafka"),
    ("kafka_change_events_total", "kafka"),
    ("kafka_dead_letters_total", "kafka"),
    ("kafka_change_store_retries_total", "kafka"),
    ("kafka_publish_retries_total", "kafka"),
    ("kafka_applied_received_total", "kafka"),
    ("kafka_applied_malformed_total", "kafka"),
    ("kafka_applied_delay_seconds", "kafka"),
    // Only with the Redis document store (`content.store = "redis"`), which has the cache.
    ("content_cache_lookups_total", "redis content store"),
    ("content_cache_bytes", "redis content store"),
    ("content_store_cas_retries_total", "redis content store"),
    ("content_prewarmed_documents_total", "redis content store"),
    // Counted only when something fails, is refused or repeats; a clean run has none.
    ("store_errors_total", "on failure"),
    ("store_replication_shortfalls_total", "on failure"),
    ("sip_shed_total", "on overload"),
    ("sip_malformed_total", "on failure"),
    ("sip_send_errors_total", "on failure"),
    ("sip_merged_requests_total", "on a merged request"),
    ("sip_retransmissions_absorbed_total", "on a retransmission"),
    ("notify_retransmissions_total", "on a retransmission"),
    ("notify_retries_total", "on failure"),
    ("notify_coalesced_total", "on a NOTIFY burst in one dialog"),
    ("notify_udp_oversize_total", "on an oversize NOTIFY"),
    ("notify_turns_taken_over_total", "when a node dies"),
    ("notify_bodiless_total", "without fetch credit"),
    ("content_fetches_refused_total", "on overload"),
    ("content_http_connections_refused_total", "on overload"),
    ("content_writes_rejected_total", "on a bad write"),
    (
        "content_changes_await_timeout_total",
        "on a slow change log",
    ),
    ("content_changes_duplicate_total", "on a replayed change"),
    ("content_rpc_credit_reconnects_total", "on failure"),
    // Counted only for traffic this test does not send.
    ("sip_tcp_connections_total", "once a TCP connection opens"),
    ("dns_lookups_total", "a Contact with a host name"),
    ("subscriptions_removed_total", "on unsubscribe or expiry"),
];

/// Series Prometheus itself adds to every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// Metric names in a PromQL expression: identifiers that are not functions, aggregations,
/// keywords, label names (inside braces or a grouping list), strings or durations.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan", // aggregations may put their grouping first:
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Skips to the character that closes the one at `i`, strings included.
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => i = skip_to(i + 1, '}') + 1,
            '[' => i = skip_to(i + 1, ']') + 1,
            '0'..='9' | '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let call = j < chars.len() && chars[j] == '(';
                if GROUPING.contains(&word.as_str()) {
                    if call {
                        i = skip_to(j + 1, ')') + 1;
                    }
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
}

/// The PromQL of a Grafana dashboard: its panels' queries and its variables' `label_values`.
fn dashboard_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        let q = &v["query"];
        let q = q["query"].as_str().or_else(|| q.as_str()).unwrap_or("");
        if let Some(inner) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel)
        {
            exprs.push(inner.to_owned());
        }
    }
    exprs
}

/// The `expr:` values of a Prometheus rule file, inline or as an indented block.
fn rule_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read rules");
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        i += 1;
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with('|') && !value.starts_with('>') {
            exprs.push(value.trim_matches(['"', '\'']).to_owned());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() {
            let l = lines[i];
            if !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent {
                break;
            }
            block.push_str(l.trim());
            block.push('\n');
            i += 1;
        }
        exprs.push(block);
    }
    exprs
}

/// What a scrape says: each metric family's type, which have HELP, and every sample's name.
#[derive(Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    helped: BTreeSet<String>,
    samples: BTreeSet<String>,
}

impl Scrape {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                    self.types.insert(name.to_owned(), kind.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ')
                    && !help.trim().is_empty()
                {
                    self.helped.insert(name.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                self.samples.insert(name);
            }
        }
    }

    /// Whether a name a query uses is exposed: a family's own samples, or a histogram's
    /// `_bucket`/`_sum`/`_count` series.
    fn exposes(&self, name: &str) -> bool {
        if let Some(base) = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            && self.types.get(base).is_some_and(|k| k == "histogram")
        {
            return self.samples.contains(name);
        }
        self.samples.contains(name) && self.types.get(name).is_some_and(|k| k != "histogram")
    }
}

fn scrape(server: &Server) -> String {
    let (status, body) = http(server.admin, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8 metrics")
}

/// Polls until `f` holds, for at most 20 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dashboards_and_alerts_use_only_metrics_the_server_exposes() {
    let redis = RedisServer::start();
    // With a fetch ceiling, as carriers run it: the credit metrics exist only then.
    let content = Server::start(&[
        "--role",
        "content",
        "--grpc",
        "127.0.0.1:0",
        "--content-max-rate",
        "1000",
    ]);
    let grpc = format!("http://{}", content.grpc.expect("content serves gRPC"));
    let notifier = Server::start(&[
        "--role",
        "notifier",
        "--redis",
        &redis.url(),
        "--content-url",
        &grpc,
        "--node-id",
        "dash-1",
    ]);
    wait_for_full_ownership(&[&notifier]);

    // A SUBSCRIBE, its NOTIFYs, a change's NOTIFY and the document fetch it points at.
    let mut phone = Phone::new(notifier.udp, "MAC%3a00df1e00da5e");
    let (resp, early) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    // The device is unknown so far: its first NOTIFY is active and empty.
    match early.into_iter().next() {
        Some(first) => phone.send(&first.response(200, "OK")),
        None => {
            phone.expect_notify(Duration::from_secs(10), 200);
        }
    }
    let doc = b"<config><sip-server>sbc.example.net</sip-server></config>";
    let put = put_doc(
        &content,
        "device",
        "00:DF:1E:00:DA:5E",
        "s.xml",
        "application/x-acme+xml",
        doc,
    );
    assert_eq!(put, 201);
    let change = phone.expect_notify(Duration::from_secs(10), 200);
    let ctype = change.header("Content-Type").expect("Content-Type");
    let path = &common::profile_path(ctype);
    let (st, body) = http(content.http, "GET", path, &[], b"");
    assert_eq!((st, body.as_slice()), (200, doc.as_slice()));
    answer_notifies(&phone, Instant::now() + Duration::from_millis(500), |_| {});

    // The gauges an SRE reads first, with their values.
    eventually("notifier_subscriptions_held = 1", || {
        notifier.metric("notifier_subscriptions_held") == 1.0
    });
    assert_eq!(notifier.metric("notifier_partitions_owned"), 256.0);
    eventually("no NOTIFY in flight", || {
        notifier.metric("notifier_notifies_inflight") == 0.0
    });

    let mut exposed = Scrape::default();
    let notifier_text = scrape(&notifier);
    assert!(
        notifier_text.contains("notifier_notifies_inflight{priority=\"subscribe\"}"),
        "no in-flight gauge by priority:\n{notifier_text}"
    );
    exposed.add(&notifier_text);
    exposed.add(&scrape(&content));

    // Every metric has HELP text; latencies are histograms with buckets, not summaries.
    let unhelped: Vec<&String> = exposed
        .types
        .keys()
        .filter(|n| !exposed.helped.contains(*n))
        .collect();
    assert!(unhelped.is_empty(), "metrics without HELP: {unhelped:?}");
    for (name, kind) in &exposed.types {
        assert_ne!(kind, "summary", "{name} is a summary, not a histogram");
        if kind == "histogram" {
            assert!(
                exposed.samples.contains(&format!("{name}_bucket")),
                "histogram {name} has no buckets"
            );
        }
    }
    for h in [
        "subscribe_handling_seconds",
        "notify_round_trip_seconds",
        "content_fetch_seconds",
    ] {
        assert_eq!(
            exposed.types.get(h).map(String::as_str),
            Some("histogram"),
            "{h}"
        );
    }

    // Every metric name the dashboards and rules use.
    let root = workspace();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sources = Vec::new();
    files(&root.join("deploy/grafana"), "json", &mut sources);
    let dashboards = sources.len();
    files(&root.join("deploy/prometheus"), "yaml", &mut sources);
    assert!(dashboards >= 4, "dashboards missing under deploy/grafana");
    for path in &sources {
        let exprs = if path.extension().is_some_and(|e| e == "json") {
            dashboard_exprs(path)
        } else if path.to_string_lossy().ends_with(".test.yaml") {
            continue;
        } else {
            rule_exprs(path)
        };
        assert!(!exprs.is_empty(), "{}: no expressions", path.display());
        let mut names = BTreeSet::new();
        for e in &exprs {
            metric_names(e, &mut names);
        }
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for n in names {
            used.entry(n).or_default().insert(file.clone());
        }
    }
    assert!(used.contains_key("notifier_subscriptions_held"), "{used:?}");

    let allowed: BTreeMap<&str, &str> = NOT_SCRAPED.iter().copied().collect();
    let base = |n: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .filter(|b| !exposed.types.contains_key(n) && !b.is_empty())
            .unwrap_or(n)
            .to_owned()
    };
    let missing: Vec<String> = used
        .iter()
        .filter(|(n, _)| !exposed.exposes(n))
        .filter(|(n, _)| !PROMETHEUS_SERIES.contains(&n.as_str()))
        .filter(|(n, _)| !allowed.contains_key(base(n).as_str()))
        .map(|(n, files)| format!("{n} (in {files:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboards or rules use metrics the server does not expose:\n  {}",
        missing.join("\n  ")
    );

    // The allow-list names metrics that exist in the code and that something uses.
    let mut code = String::new();
    let mut rs = Vec::new();
    files(&root.join("services"), "rs", &mut rs);
    files(&root.join("loadtest"), "rs", &mut rs);
    for f in rs {
        code.push_str(&std::fs::read_to_string(f).expect("read source"));
    }
    let used_bases: BTreeSet<String> = used.keys().map(|n| base(n)).collect();
    for (name, why) in NOT_SCRAPED {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "{name} ({why}) is in NOT_SCRAPED but no source emits it: a typo?"
        );
        assert!(
            used_bases.contains(*name),
            "{name} is in NOT_SCRAPED but no dashboard or rule uses it"
        );
    }
}

//! The controller: provisions through the HTTP API, starts the shards, drives the
//! scenario's phases from the shared counters, shows progress, and stops the run when it
//! is complete or the time limit is reached.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::config::{ChangeVia, Config, Scenario, Transport};
use crate::engine::{ShardResult, Shared, run_shard};
use crate::stats::{Counters, Latencies, LatencySummary, Slot, Timeline};

/// How often the controller looks at the counters.
const POLL: Duration = Duration::from_millis(10);
/// The baseline and change documents live under this name in the class.
pub const DOC_NAME: &str = "storm.xml";

/// Everything a run measured, as written to `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub phones: u64,
    /// Of which went silent once provisioned (`--ghosts`).
    pub ghosts: u64,
    pub transport: String,
    /// How phones fetched their documents: http1, https, h2 or h3.
    pub fetch: String,
    pub profiles: Vec<String>,
    pub seed: u64,
    pub threads: usize,
    /// The scenario reached its end condition (rather than the time limit).
    pub completed: bool,
    pub stop_reason: String,
    pub wall_s: f64,
    /// CPU time of the shard threads (the simulator's own cost).
    pub cpu_s: f64,
    pub msgs_per_s: f64,
    /// SIP messages sent + received per second of shard CPU time: the per-core rate.
    pub msgs_per_cpu_s: f64,
    /// Phones booted per second during the boot phase.
    pub boot_rate_per_s: f64,
    pub time_to_last_provisioned_s: Option<f64>,
    pub change_published_at_s: Option<f64>,
    pub change_to_last_fetch_s: Option<f64>,
    pub refresh_storm_s: Option<f64>,
    pub counters: Counters,
    pub latency: BTreeMap<String, LatencySummary>,
    pub timeline_slot_s: f64,
    pub timeline: Vec<Slot>,
}

impl RunResult {
    /// Failures a correct run has none of.
    pub fn failures(&self) -> u64 {
        let c = &self.counters;
        c.phones_failed
            + c.hash_mismatches
            + c.size_mismatches
            + c.bad_bodies
            + c.fetch_http_errors
            + c.fetch_transport_errors
            + c.timeouts_subscribe
            + c.timeouts_first_notify
            + c.responses_4xx
            + c.responses_5xx
    }
}

/// A blocking one-shot HTTP request (provisioning only; not on the hot path), with a
/// bearer `token` when given.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Ok(Some((r, _))) = crate::http::parse_response(&raw) {
            return Ok((r.status, r.body));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("{method} {path}: connection closed before a complete response");
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// PUTs the class document every simulated phone's SUBSCRIBE names.
pub fn put_class_doc(cfg: &Config, body: &[u8], effective_by: Option<u32>) -> anyhow::Result<()> {
    let mut path = format!(
        "/provision/v1/class/{}:{}/documents/{DOC_NAME}",
        cfg.vendor, cfg.model
    );
    let query: Vec<String> = [
        ("effective-by", effective_by),
        ("rollout-window", cfg.rollout_window),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let token = cfg.token.as_deref();
    let (st, resp) = http_request(cfg.provision, "PUT", &path, "application/xml", body, token)?;
    if !(200..300).contains(&st) {
        bail!("PUT {path}: {st} {}", String::from_utf8_lossy(&resp).trim());
    }
    Ok(())
}

/// Publishes the class document as a `uaprof.events.v1.ProfileChange` on the change topic,
/// as an OSS would, and waits until the broker has it.
pub fn publish_class_doc(
    cfg: &Config,
    brokers: &str,
    topic: &str,
    body: &[u8],
    effective_by: Option<u32>,
) -> anyhow::Result<()> {
    let kafka = bus::KafkaConfig {
        brokers: brokers.to_owned(),
        topics: bus::config::Topics {
            changes: topic.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let change = uaprof_api::Change {
        change_id: content::new_change_id(),
        key: uaprof_api::ProfileKey::class(&cfg.vendor, &cfg.model)?,
        version: None,
        op: uaprof_api::ChangeOp::PutDocument {
            name: DOC_NAME.into(),
            content_type: "application/xml".into(),
            bytes: bytes::Bytes::copy_from_slice(body),
        },
        timing: uaprof_api::Timing {
            effective_by,
            rollout_window: cfg.rollout_window,
        },
        producer: "uaprof-storm".into(),
        occurred_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let producer = bus::ChangeProducer::new(&kafka).map_err(anyhow::Error::msg)?;
        producer
            .send(&change, None)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    Ok(())
}

fn progress_bar(cfg: &Config) -> ProgressBar {
    let target = if cfg.progress && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(cfg.phones), target);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} provisioned  {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// `doc` grown to `len` bytes with an XML comment (documents the size of real profiles).
fn padded(mut doc: String, len: usize) -> String {
    if doc.len() + 7 < len {
        doc.push_str("<!--");
        doc.extend(std::iter::repeat_n('x', len - doc.len() - 3));
        doc.push_str("-->");
    }
    doc
}

/// Runs one scenario to completion (or the time limit) and returns what it measured.
pub fn run(cfg: Config) -> anyhow::Result<RunResult> {
    cfg.validate()?;
    if cfg.setup {
        let baseline = padded("<storm version=\"baseline\"/>".into(), cfg.doc_bytes);
        put_class_doc(&cfg, baseline.as_bytes(), None)
            .context("provisioning the baseline class document")?;
    }
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::new());
    let threads = cfg.threads.min(cfg.phones as usize).max(1);
    let mut handles = Vec::new();
    for i in 0..threads {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("storm-{i}"))
                .spawn(move || run_shard(cfg, shared, i, threads))?,
        );
    }
    let n = cfg.phones;
    let nprof = cfg.profiles.len() as u64;
    let max = cfg.max_time.as_micros() as u64;
    let pb = progress_bar(&cfg);
    let mut phase = 0; // 0 boot/provision, 1 storm, 2 done
    let mut completed = false;
    let mut stop_reason = String::from("time limit");
    let mut change_t0 = None;
    let mut refresh = None;
    let mut refresh_t0 = 0;
    let mut last_prov = None;
    let mut publish_err = None;
    loop {
        std::thread::sleep(POLL);
        let now = shared.now();
        let prov = shared.provisioned.load(Relaxed);
        let failed = shared.failed.load(Relaxed);
        let changed = shared.changed.load(Relaxed);
        pb.set_position(prov);
        pb.set_message(format!(
            "booted {} failed {failed} changed {changed} refreshed {}",
            shared.booted.load(Relaxed),
            shared.refreshed.load(Relaxed)
        ));
        if handles.iter().any(|h| h.is_finished()) {
            stop_reason = "a shard stopped".into();
            break;
        }
        if now >= max {
            break;
        }
        let all_provisioned = prov + failed >= n;
        if phase == 0 && all_provisioned {
            last_prov = Some(now);
            match &cfg.scenario {
                Scenario::PowerUp { .. } => {
                    completed = true;
                    stop_reason = "every phone provisioned or failed".into();
                    break;
                }
                Scenario::ChangeStorm {
                    effective_by, via, ..
                } => {
                    let body = format!(
                        "<storm version=\"{:x}-{}\"/>",
                        cfg.seed,
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or(0)
                    );
                    let body = padded(body, cfg.doc_bytes);
                    let hash: [u8; 20] = Sha1::digest(body.as_bytes()).into();
                    let t0 = shared.now();
                    if let Ok(mut c) = shared.change.lock() {
                        *c = Some((hash, t0));
                    }
                    shared.change_gen.fetch_add(1, Relaxed);
                    change_t0 = Some(t0);
                    let published = match via {
                        ChangeVia::Http => put_class_doc(&cfg, body.as_bytes(), *effective_by),
                        ChangeVia::Kafka { brokers, topic } => {
                            publish_class_doc(&cfg, brokers, topic, body.as_bytes(), *effective_by)
                        }
                    };
                    if let Err(e) = published {
                        publish_err = Some(e);
                        stop_reason = "publishing the change failed".into();
                        break;
                    }
                    phase = 1;
                }
                Scenario::RefreshStorm { .. } => {
                    refresh_t0 = shared.now();
                    shared.refresh_go.store(true, Relaxed);
                    phase = 1;
                }
                Scenario::Steady { .. } => phase = 1,
            }
        }
        if phase == 1 {
            let done = match &cfg.scenario {
                Scenario::ChangeStorm { .. } => changed + failed >= n - cfg.ghosts,
                Scenario::RefreshStorm { .. } => shared.refreshed.load(Relaxed) >= n * nprof,
                Scenario::Steady { .. } => shared.done.load(Relaxed) + failed >= n,
                Scenario::PowerUp { .. } => true,
            };
            if done {
                if matches!(cfg.scenario, Scenario::RefreshStorm { .. }) {
                    refresh = Some(shared.now() - refresh_t0);
                }
                completed = true;
                stop_reason = "scenario complete".into();
                break;
            }
        }
    }
    shared.stop.store(true, Relaxed);
    pb.finish_and_clear();
    let wall = shared.now();
    let mut results: Vec<ShardResult> = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => bail!("a shard panicked"),
        }
    }
    if let Some(e) = publish_err {
        return Err(e);
    }
    let mut counters = Counters::default();
    let mut lat = Latencies::default();
    let mut timeline = Timeline::new(max + 10_000_000);
    let mut cpu = Duration::ZERO;
    let mut last_prov_us = 0;
    let mut last_changed_us = 0;
    for r in &results {
        counters.merge(&r.counters);
        lat.merge(&r.latencies);
        timeline.merge(&r.timeline);
        cpu += r.cpu;
        last_prov_us = last_prov_us.max(r.last_provisioned_us);
        last_changed_us = last_changed_us.max(r.last_changed_us);
    }
    timeline.truncate(wall);
    let secs = |us: u64| us as f64 / 1e6;
    let msgs = (counters.msgs_sent + counters.msgs_received) as f64;
    let boot_span = cfg.scenario.boot_over().as_secs_f64().max(1e-3);
    let mut latency = BTreeMap::new();
    for (name, h) in [
        ("subscribe_to_200", &lat.subscribe_to_200),
        ("ok_to_first_notify", &lat.ok_to_first_notify),
        ("notify_to_fetched", &lat.notify_to_fetched),
        ("http_get", &lat.http_get),
        ("refresh_to_response", &lat.refresh_to_response),
        ("boot_to_provisioned", &lat.boot_to_provisioned),
        ("change_to_fetched", &lat.change_to_fetched),
    ] {
        latency.insert(name.to_owned(), h.summary());
    }
    Ok(RunResult {
        scenario: cfg.scenario.name().into(),
        phones: n,
        ghosts: cfg.ghosts,
        transport: match cfg.transport {
            Transport::Udp => "udp".into(),
            Transport::Tcp => "tcp".into(),
            Transport::Tls => "tls".into(),
        },
        fetch: cfg.fetch.name().into(),
        profiles: cfg.profiles.iter().map(|p| p.token().to_owned()).collect(),
        seed: cfg.seed,
        threads,
        completed,
        stop_reason,
        wall_s: secs(wall),
        cpu_s: cpu.as_secs_f64(),
        msgs_per_s: msgs / secs(wall).max(1e-6),
        msgs_per_cpu_s: msgs / cpu.as_secs_f64().max(1e-6),
        boot_rate_per_s: counters.phones_booted as f64 / boot_span,
        time_to_last_provisioned_s: (counters.phones_provisioned > 0)
            .then(|| secs(last_prov_us))
            .or(last_prov.map(secs)),
        change_published_at_s: change_t0.map(secs),
        change_to_last_fetch_s: change_t0
            .filter(|_| counters.phones_changed > 0)
            .map(|t0| secs(last_changed_us.saturating_sub(t0))),
        refresh_storm_s: refresh.map(secs),
        counters,
        latency,
        timeline_slot_s: secs(timeline.slot_us),
        timeline: timeline.slots,
    })
}

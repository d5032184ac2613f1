//! `uaprof-kafka-latency`: the time from a change event on Kafka to its NOTIFY on the wire,
//! at idle.
//!
//! One phone subscribes to its device profile; then, one at a time, the tool publishes a
//! change to that device's document on the change topic (as an OSS would) and waits for the
//! NOTIFY that announces it. It prints the distribution of event → NOTIFY (from just before
//! the record is handed to the producer until the NOTIFY datagram arrives) and of the
//! broker's acknowledgement alone. Bounded by `--events` and a per-event timeout.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use loadtest::sip::{self, Subscribe};
use uaprof_api::{Change, ChangeOp, ProfileKey, Timing};

#[derive(Parser)]
#[command(name = "uaprof-kafka-latency")]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long)]
    kafka: String,
    /// The change topic.
    #[arg(long, default_value = "uaprof.changes")]
    topic: String,
    /// The notifier's SIP UDP address (loopback only).
    #[arg(long, default_value = "127.0.0.1:5060")]
    server: SocketAddr,
    /// Events to time.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Pause between events, in milliseconds. Every event changes the same key, and the
    /// fan-out lets a key walked within the last 300 ms settle before walking it again (so
    /// that bursts coalesce): gaps shorter than that measure the debounce, not the path.
    #[arg(long, default_value_t = 500)]
    gap_ms: u64,
}

/// Longest wait for one NOTIFY.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !cli.server.ip().is_loopback() {
        bail!("--server must be a loopback address");
    }
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let local = sock.local_addr()?.to_string();
    let mac = format!("02{:010x}", std::process::id());
    let aor = format!("sip:MAC%3a{mac}@example.com");
    let mut buf = Vec::new();
    sip::write_subscribe(
        &mut buf,
        &Subscribe {
            transport: "UDP",
            local: &local,
            request_uri: &aor,
            aor: &aor,
            from_tag: "lat1",
            to_tag: None,
            call_id: &format!("lat-{mac}"),
            cseq: 1,
            branch: "z9hG4bKlat1",
            contact_user: "phone",
            instance: &format!("urn:uuid:00000000-0000-0000-0000-{mac}"),
            event: "ua-profile;profile-type=device",
            expires: 3600,
            suppress_if_match: None,
        },
    );
    sock.send_to(&buf, cli.server)?;
    // The 200 and the first NOTIFY, in either order.
    let (mut ok, mut first) = (false, false);
    while !(ok && first) {
        let m = recv(&sock, &mut buf).context("waiting for the 200 and the first NOTIFY")?;
        ok |= m.0.is_some_and(|s| (200..300).contains(&s));
        first |= m.1;
    }
    let kafka = bus::KafkaConfig {
        brokers: cli.kafka.clone(),
        topics: bus::config::Topics {
            changes: cli.topic.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let key = ProfileKey::device(&mac)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let producer = bus::ChangeProducer::new(&kafka).map_err(anyhow::Error::msg)?;
    let mut to_notify = Vec::with_capacity(cli.events);
    let mut to_ack = Vec::with_capacity(cli.events);
    for i in 0..cli.events {
        let change = Change {
            change_id: content::new_change_id(),
            key: key.clone(),
            version: None,
            op: ChangeOp::PutDocument {
                name: "phone.xml".into(),
                content_type: "application/xml".into(),
                bytes: format!("<phone rev=\"{i}\"/>").into_bytes().into(),
            },
            timing: Timing::default(),
            producer: "uaprof-kafka-latency".into(),
            occurred_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let t0 = Instant::now();
        rt.block_on(producer.send(&change, None))
            .map_err(anyhow::Error::msg)?;
        to_ack.push(t0.elapsed());
        loop {
            let (_, notify) = recv(&sock, &mut buf).with_context(|| format!("event {i}"))?;
            if notify {
                to_notify.push(t0.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(cli.gap_ms));
    }
    report("event -> NOTIFY on the wire", &mut to_notify);
    report("event -> broker ack        ", &mut to_ack);
    Ok(())
}

/// Receives one message, answering a NOTIFY with 200. Returns (response status, was NOTIFY).
fn recv(sock: &UdpSocket, buf: &mut Vec<u8>) -> anyhow::Result<(Option<u16>, bool)> {
    sock.set_read_timeout(Some(NOTIFY_TIMEOUT))?;
    let mut rx = vec![0u8; 65_536];
    let (n, from) = sock
        .recv_from(&mut rx)
        .context("nothing received in time")?;
    let Some(m) = sip::parse(&rx[..n]) else {
        return Ok((None, false));
    };
    if m.method == Some("NOTIFY") {
        sip::write_response(buf, &m, 200, "OK");
        sock.send_to(buf, from)?;
        return Ok((None, true));
    }
    Ok((m.status, false))
}

fn report(what: &str, v: &mut [Duration]) {
    v.sort_unstable();
    let q = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}

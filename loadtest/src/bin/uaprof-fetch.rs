//! `uaprof-fetch`: fetches one document URL over and over, over one protocol, and prints
//! requests/s and latency percentiles: the same client for HTTP/1.1, HTTPS, HTTP/2 and
//! HTTP/3, so the protocols are compared on equal terms (`loadtest/bench/https-fetch.sh`).
//!
//!   uaprof-fetch --fetch h3 --ca ca.crt --requests 20000 --conns 32 https://127.0.0.1:8443/profiles/...
//!
//! Bounded in count and time; loopback only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use loadtest::fetch::{FetchProtocol, Fetcher, TlsClient};

#[derive(Parser)]
#[command(name = "uaprof-fetch")]
struct Cli {
    /// The document URL (http:// or https://, 127.0.0.0/8).
    url: String,
    /// http1, https, h2 or h3.
    #[arg(long, default_value = "http1")]
    fetch: String,
    /// CA certificate (PEM) for TLS.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// HTTP/3's UDP address, when not the URL's.
    #[arg(long)]
    http3: Option<String>,
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Connections, each with one request at a time (as phones fetch).
    #[arg(long, default_value_t = 32)]
    conns: u64,
    /// Stop after this many seconds whatever is left.
    #[arg(long, default_value_t = 120.0)]
    max_time: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let protocol = FetchProtocol::parse(&cli.fetch)?;
    let rest = cli
        .url
        .strip_prefix("http://")
        .or_else(|| cli.url.strip_prefix("https://"))
        .ok_or_else(|| anyhow::anyhow!("{}: want http:// or https://", cli.url))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let mut addr = loadtest::config::parse_http(authority)?;
    if protocol == FetchProtocol::H3
        && let Some(a) = &cli.http3
    {
        addr = loadtest::config::parse_http(a)?;
    }
    anyhow::ensure!(addr.ip().is_loopback(), "{addr}: loopback only");
    anyhow::ensure!(cli.conns >= 1 && cli.conns <= 4096, "--conns in 1..=4096");
    anyhow::ensure!(
        cli.requests >= 1 && cli.requests <= 10_000_000,
        "--requests in 1..=1e7"
    );
    let tls = match (&cli.ca, protocol) {
        (_, FetchProtocol::Http1) => None,
        (Some(ca), p) => {
            let alpn: &[u8] = match p {
                FetchProtocol::H2 => b"h2",
                FetchProtocol::H3 => b"h3",
                _ => b"http/1.1",
            };
            Some(TlsClient::new(ca, &cli.tls_name, &[alpn])?)
        }
        (None, p) => anyhow::bail!("--fetch {} needs --ca", p.name()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let deadline = Instant::now() + Duration::from_secs_f64(cli.max_time);
    let (lat, failed, wall) = local.block_on(&rt, async {
        let next = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        for _ in 0..cli.conns {
            let mut f = Fetcher::new(protocol, addr, tls.as_ref())?;
            let next = next.clone();
            let path = path.clone();
            let total = cli.requests;
            tasks.push(tokio::task::spawn_local(async move {
                let (mut lat, mut failed) = (Vec::new(), 0u64);
                loop {
                    let n = next.get();
                    if n >= total || Instant::now() >= deadline {
                        break;
                    }
                    next.set(n + 1);
                    let t = Instant::now();
                    match f.get(&path).await {
                        Ok(r) if r.status == 200 => lat.push(t.elapsed().as_micros() as u32),
                        other => {
                            if failed == 0 {
                                match other {
                                    Ok(r) => eprintln!(
                                        "uaprof-fetch: first failure: status {}",
                                        r.status
                                    ),
                                    Err(e) => eprintln!("uaprof-fetch: first failure: {e}"),
                                }
                            }
                            failed += 1;
                        }
                    }
                }
                (lat, failed)
            }));
        }
        let (mut lat, mut failed) = (Vec::new(), 0u64);
        for t in tasks {
            let (l, f) = t.await?;
            lat.extend(l);
            failed += f;
        }
        anyhow::Ok((lat, failed, t0.elapsed()))
    })?;
    let mut lat = lat;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "fetch={} ok={} failed={} wall_s={:.3} req_per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
        protocol.name(),
        lat.len(),
        failed,
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64().max(1e-9),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

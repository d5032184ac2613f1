//! What a run is asked to do: the scenario and every knob, as a plain struct the CLI fills
//! and tests build directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::fetch::FetchProtocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS (RFC 3261 §26): TCP connections with rustls, trusting `ca_file`.
    Tls,
}

impl Transport {
    /// Over a connection: no retransmissions, only Timer F.
    pub fn reliable(self) -> bool {
        self != Self::Udp
    }

    /// As a Via header names it.
    pub fn via(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// RFC 6080 profile types a phone subscribes to, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Device,
    User,
    LocalNetwork,
}

impl ProfileKind {
    pub fn token(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::User => "user",
            Self::LocalNetwork => "local-network",
        }
    }

    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Self>> {
        let mut out = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let k = match t {
                "device" => Self::Device,
                "user" => Self::User,
                "local-network" => Self::LocalNetwork,
                _ => bail!("unknown profile type {t:?} (device, user, local-network)"),
            };
            if !out.contains(&k) {
                out.push(k);
            }
        }
        if out.is_empty() {
            bail!("--profiles is empty");
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub enum Scenario {
    /// `phones` boot evenly over `over`.
    PowerUp { over: Duration },
    /// Boot all (over `boot_over`), wait until all are provisioned, publish one class
    /// document change, time until every phone fetched it.
    ChangeStorm {
        boot_over: Duration,
        effective_by: Option<u32>,
        /// How the change is published.
        via: ChangeVia,
    },
    /// Boot all, wait until provisioned, then every subscription refreshes at once.
    RefreshStorm { boot_over: Duration, suppress: bool },
    /// `rate` new phones per second for `duration`; each subscribes, is provisioned,
    /// refreshes after `hold` and unsubscribes after another `hold`.
    Steady {
        rate: f64,
        duration: Duration,
        hold: Duration,
    },
}

/// How `change-storm` publishes its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeVia {
    /// A PUT to the provisioning API (`--http`).
    Http,
    /// A `uaprof.events.v1.ProfileChange` record on the change topic, as an OSS would send it.
    Kafka { brokers: String, topic: String },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Self::PowerUp { .. } => "power-up",
            Self::ChangeStorm { .. } => "change-storm",
            Self::RefreshStorm { .. } => "refresh-storm",
            Self::Steady { .. } => "steady",
        }
    }

    /// How long booting every phone takes.
    pub fn boot_over(&self) -> Duration {
        match self {
            Self::PowerUp { over } => *over,
            Self::ChangeStorm { boot_over, .. } | Self::RefreshStorm { boot_over, .. } => {
                *boot_over
            }
            Self::Steady { duration, .. } => *duration,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub scenario: Scenario,
    /// Number of simulated phones (for `steady`: rate × duration).
    pub phones: u64,
    pub transport: Transport,
    /// SIP address of the deployment (loopback only).
    pub server: SocketAddr,
    /// HTTP address of the content tier's documents (loopback only).
    pub http: SocketAddr,
    /// The provisioning API (loopback only); by default the port after `http`'s, as the
    /// server's defaults have it (8080, 8081).
    pub provision: SocketAddr,
    /// Bearer token for the provisioning API, when it wants one.
    pub token: Option<String>,
    pub seed: u64,
    /// Hard limit on the whole run; it stops by itself when reached.
    pub max_time: Duration,
    /// Shards, each a current-thread runtime on its own OS thread.
    pub threads: usize,
    /// Distinct 127.x.y.z source addresses per shard.
    pub source_ips: usize,
    /// UDP sockets (distinct ports) per source address.
    pub ports_per_ip: usize,
    /// TCP connections per shard (phones share them round-robin).
    pub tcp_conns: usize,
    /// Keep-alive HTTP connections per shard.
    pub http_conns: usize,
    /// How phones fetch documents.
    pub fetch: FetchProtocol,
    /// HTTP/3's UDP address (loopback only); default `http`'s.
    pub http3: Option<SocketAddr>,
    /// CA certificates (PEM) the content tier's certificate is checked against (TLS fetches).
    pub ca_file: Option<PathBuf>,
    /// The name the content tier's certificate is checked for.
    pub tls_name: String,
    pub profiles: Vec<ProfileKind>,
    /// Randomise back-off (RFC 5626 §4.5 style, 50–100 %); without it phones retry in lockstep.
    pub jitter: bool,
    /// Multiplies server-driven waits (effective-by, back-off, Retry-After, refresh
    /// interval) so tests and demos stay short. SIP transaction timers are not scaled.
    pub time_scale: f64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Subscription attempts per subscription before the phone counts as failed.
    pub max_attempts: u32,
    /// Expires asked for in every SUBSCRIBE.
    pub expires: u32,
    pub vendor: String,
    pub model: String,
    pub domain: String,
    /// First octet of every simulated MAC (02 = locally administered).
    pub mac_prefix: u8,
    /// Added to every phone number, so several processes can split one population.
    pub id_offset: u64,
    /// Phones (of `phones`) that go silent once provisioned, without unsubscribing: their
    /// subscriptions stay, NOTIFYs to them go unanswered. change-storm ends when every
    /// other phone has the change.
    pub ghosts: u64,
    /// Seconds the server spreads change-storm's change over (`rollout-window`, or the
    /// event's `rollout_window_seconds` with Kafka).
    pub rollout_window: Option<u32>,
    /// Size the class documents are padded to (0: as small as they come).
    pub doc_bytes: usize,
    /// Provision a baseline class document before booting, so phones have something to
    /// fetch.
    pub setup: bool,
    /// Write result.json, report.html and plot.png here.
    pub out: Option<PathBuf>,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
}

impl Config {
    /// A config with every knob at its default, for `scenario` with `phones` phones.
    pub fn new(scenario: Scenario, phones: u64, server: SocketAddr, http: SocketAddr) -> Self {
        Self {
            scenario,
            phones,
            transport: Transport::Udp,
            server,
            http,
            provision: SocketAddr::new(http.ip(), http.port().saturating_add(1)),
            token: None,
            seed: 1,
            max_time: Duration::from_secs(120),
            threads: 1,
            source_ips: 64,
            ports_per_ip: 4,
            tcp_conns: 256,
            http_conns: 64,
            fetch: FetchProtocol::Http1,
            http3: None,
            ca_file: None,
            tls_name: "localhost".into(),
            profiles: vec![ProfileKind::Device],
            jitter: true,
            time_scale: 1.0,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(1800),
            max_attempts: 5,
            expires: 3600,
            vendor: "acme".into(),
            model: "Z100".into(),
            domain: "example.com".into(),
            mac_prefix: 0x02,
            id_offset: 0,
            ghosts: 0,
            rollout_window: None,
            doc_bytes: 0,
            setup: true,
            out: None,
            progress: true,
        }
    }

    /// Checks the bounds that keep a run finite and on this machine.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (what, a) in [
            ("--server", self.server),
            ("--http", self.http),
            ("--provision", self.provision),
            ("--http3", self.http3.unwrap_or(self.http)),
        ] {
            match a {
                SocketAddr::V4(v4) if v4.ip().is_loopback() => {}
                _ => bail!("{what} {a}: traffic is only sent to 127.0.0.0/8"),
            }
        }
        if self.ghosts >= self.phones {
            bail!(
                "--ghosts {} must be fewer than --phones {}",
                self.ghosts,
                self.phones
            );
        }
        if self.phones == 0 || self.phones > 10_000_000 {
            bail!("--phones must be in 1..=10000000");
        }
        if self.id_offset + self.phones >= 1 << 40 {
            bail!("phone ids must fit in 40 bits (the MAC)");
        }
        if self.max_time.is_zero() || self.max_time > Duration::from_secs(24 * 3600) {
            bail!("--max-time must be in (0, 24h]");
        }
        if !(self.threads >= 1 && self.threads <= 64) {
            bail!("--threads must be in 1..=64");
        }
        if self.source_ips == 0 || self.source_ips > 250 * 250 {
            bail!("--source-ips must be in 1..=62500");
        }
        if self.ports_per_ip == 0 || self.ports_per_ip > 64 {
            bail!("--ports-per-ip must be in 1..=64");
        }
        if self.http_conns == 0 || self.tcp_conns == 0 {
            bail!("--http-conns and --tcp-conns must be positive");
        }
        if !(self.time_scale > 0.0 && self.time_scale <= 100.0) {
            bail!("--time-scale must be in (0, 100]");
        }
        if self.transport == Transport::Tls && self.ca_file.is_none() {
            bail!("--server tls:// needs --ca (the SIP server's CA certificate)");
        }
        if self.fetch.is_tls() && self.ca_file.is_none() {
            bail!(
                "--fetch {} needs --ca (the content tier's CA certificate)",
                self.fetch.name()
            );
        }
        if self.profiles.is_empty() {
            bail!("--profiles is empty");
        }
        if self.max_attempts == 0 {
            bail!("--max-attempts must be positive");
        }
        if let Scenario::Steady { rate, .. } = self.scenario
            && !(rate > 0.0 && rate <= 1e7)
        {
            bail!("--rate must be in (0, 1e7]");
        }
        Ok(())
    }
}

/// Parses `udp://127.0.0.1:5060` / `tcp://...` / `tls://...` (scheme optional, UDP by
/// default).
pub fn parse_server(s: &str) -> anyhow::Result<(Transport, SocketAddr)> {
    let (t, rest) = if let Some(r) = s.strip_prefix("udp://") {
        (Transport::Udp, r)
    } else if let Some(r) = s.strip_prefix("tcp://") {
        (Transport::Tcp, r)
    } else if let Some(r) = s.strip_prefix("tls://") {
        (Transport::Tls, r)
    } else {
        (Transport::Udp, s)
    };
    let addr = rest
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--server {s:?}: want udp://IP:PORT or tcp://IP:PORT"))?;
    Ok((t, addr))
}

/// Parses `http://127.0.0.1:8080` (or `https://`: the scheme is `--fetch`'s business).
pub fn parse_http(s: &str) -> anyhow::Result<SocketAddr> {
    s.strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--http {s:?}: want http://IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_bounds() {
        let (t, a) = parse_server("tcp://127.0.0.1:5060").expect("ok");
        assert_eq!((t, a.port()), (Transport::Tcp, 5060));
        assert_eq!(parse_server("127.0.0.2:1").expect("ok").0, Transport::Udp);
        assert_eq!(
            parse_http("http://127.0.0.1:8080/").expect("ok").port(),
            8080
        );
        let s = Scenario::PowerUp {
            over: Duration::from_secs(1),
        };
        let ok = Config::new(s.clone(), 10, a, a);
        assert!(ok.validate().is_ok());
        let far: SocketAddr = "10.0.0.1:5060".parse().expect("addr");
        assert!(Config::new(s, 10, far, a).validate().is_err());
        assert_eq!(
            ProfileKind::parse_list("device,user,local-network,user")
                .expect("ok")
                .len(),
            3
        );
        assert!(ProfileKind::parse_list("foo").is_err());
    }
}

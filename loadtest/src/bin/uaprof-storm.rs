//! `uaprof-storm`: the storm simulator's command line. See `loadtest/README.md`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::config::{ChangeVia, Config, ProfileKind, Scenario, parse_http, parse_server};

#[derive(Parser)]
#[command(
    name = "uaprof-storm",
    about = "Plays RFC 6080 phones against a uaprof deployment"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N phones boot over T seconds (a building: 5000 in 2 s).
    PowerUp {
        #[command(flatten)]
        common: Common,
        /// Seconds over which the phones boot.
        #[arg(long, default_value_t = 2.0)]
        over: f64,
    },
    /// Subscribe N phones, then publish one class-document change and time the fetches.
    ChangeStorm {
        #[command(flatten)]
        common: Common,
        /// Seconds over which the phones boot before the change (default: N / 20000).
        #[arg(long)]
        over: Option<f64>,
        /// `effective-by` seconds passed to the provisioning API with the change.
        #[arg(long)]
        effective_by: Option<u32>,
        /// Publish the change through the provisioning API (`http`) or as a protobuf event
        /// on the Kafka change topic (`kafka`, needs --kafka).
        #[arg(long, default_value = "http")]
        via: String,
        /// Kafka bootstrap servers, for `--via kafka`.
        #[arg(long)]
        kafka: Option<String>,
        /// The change topic, for `--via kafka`.
        #[arg(long, default_value = "uaprof.changes")]
        topic: String,
    },
    /// Subscribe N phones, then refresh every subscription at once.
    RefreshStorm {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        over: Option<f64>,
        /// Refresh without Suppress-If-Match (every refresh then costs a NOTIFY).
        #[arg(long)]
        no_suppress: bool,
    },
    /// RATE new phones per second for DURATION; each subscribes, refreshes, unsubscribes.
    Steady {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long)]
        duration: f64,
        /// Seconds between a phone's subscribe, refresh and unsubscribe.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
    },
}

#[derive(Args)]
struct Common {
    /// Number of phones (ignored by `steady`, which uses rate × duration).
    #[arg(long, default_value_t = 1000)]
    phones: u64,
    /// SIP server: udp://IP:PORT, tcp://IP:PORT or tls://IP:PORT (127.0.0.0/8 only; TLS
    /// trusts --ca).
    #[arg(long, default_value = "udp://127.0.0.1:5060")]
    server: String,
    /// Content tier: where phones fetch documents.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// The provisioning API (the baseline and changed class documents go there).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    provision: String,
    /// Bearer token for the provisioning API.
    #[arg(long, env = "UAPROF_STORM_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hard time limit in seconds; the run stops by itself.
    #[arg(long, default_value_t = 120.0)]
    max_time: f64,
    /// Shards (OS threads, one current-thread runtime each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Source addresses per shard (127.10+shard.x.y).
    #[arg(long, default_value_t = 64)]
    source_ips: usize,
    /// UDP sockets per source address.
    #[arg(long, default_value_t = 4)]
    ports_per_ip: usize,
    /// TCP connections per shard (tcp:// and tls:// only).
    #[arg(long, default_value_t = 256)]
    tcp_conns: usize,
    /// Keep-alive HTTP connections for document fetches.
    #[arg(long, default_value_t = 64)]
    http_conns: usize,
    /// How phones fetch documents: http1 (clear), https (HTTP/1.1 over TLS), h2, or h3
    /// (QUIC, to --http3).
    #[arg(long, default_value = "http1")]
    fetch: String,
    /// HTTP/3's UDP address (IP:PORT); default: --http's.
    #[arg(long)]
    http3: Option<String>,
    /// CA certificate (PEM) of the content tier, for --fetch https, h2 and h3, and of the
    /// SIP server, for tls://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The name the content tier's certificate is checked for.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Profile types each phone subscribes to.
    #[arg(long, default_value = "device")]
    profiles: String,
    /// Randomise the back-off between subscription retries (on|off).
    #[arg(long, default_value = "on")]
    jitter: String,
    /// Multiplies effective-by, back-off, Retry-After and refresh intervals.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Back-off base seconds (doubles per failure, capped at --backoff-max).
    #[arg(long, default_value_t = 30.0)]
    backoff_base: f64,
    #[arg(long, default_value_t = 1800.0)]
    backoff_max: f64,
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Expires requested in SUBSCRIBE.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    #[arg(long, default_value = "acme")]
    vendor: String,
    #[arg(long, default_value = "Z100")]
    model: String,
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// Added to phone numbers so several processes can split one population.
    #[arg(long, default_value_t = 0)]
    id_offset: u64,
    /// Phones that go silent once provisioned (unplugged, still subscribed).
    #[arg(long, default_value_t = 0)]
    ghosts: u64,
    /// change-storm: seconds the server spreads the change's NOTIFYs over (rollout window).
    #[arg(long)]
    rollout_window: Option<u32>,
    /// Pad the class documents to this many bytes (real profiles are kilobytes).
    #[arg(long, default_value_t = 0)]
    doc_bytes: usize,
    /// Do not provision the baseline class document first.
    #[arg(long)]
    no_setup: bool,
    /// Write result.json, report.html and plot.png here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("{what}: {v} is not a duration"))
}

fn config(c: Common, scenario: Scenario, phones: u64) -> anyhow::Result<Config> {
    let (transport, server) = parse_server(&c.server)?;
    let mut cfg = Config::new(scenario, phones, server, parse_http(&c.http)?);
    cfg.provision = parse_http(&c.provision)?;
    cfg.token = c.token;
    cfg.transport = transport;
    cfg.seed = c.seed;
    cfg.max_time = secs(c.max_time, "--max-time")?;
    cfg.threads = c.threads;
    cfg.source_ips = c.source_ips;
    cfg.ports_per_ip = c.ports_per_ip;
    cfg.tcp_conns = c.tcp_conns;
    cfg.http_conns = c.http_conns;
    cfg.fetch = loadtest::fetch::FetchProtocol::parse(&c.fetch)?;
    cfg.ca_file = c.ca;
    cfg.http3 = c.http3.as_deref().map(parse_http).transpose()?;
    cfg.tls_name = c.tls_name;
    cfg.profiles = ProfileKind::parse_list(&c.profiles)?;
    cfg.jitter = match c.jitter.as_str() {
        "on" | "true" => true,
        "off" | "false" => false,
        o => anyhow::bail!("--jitter {o:?}: on or off"),
    };
    cfg.time_scale = c.time_scale;
    cfg.backoff_base = secs(c.backoff_base, "--backoff-base")?;
    cfg.backoff_max = secs(c.backoff_max, "--backoff-max")?;
    cfg.max_attempts = c.max_attempts;
    cfg.expires = c.expires;
    cfg.vendor = c.vendor;
    cfg.model = c.model;
    cfg.domain = c.domain;
    cfg.id_offset = c.id_offset;
    cfg.ghosts = c.ghosts;
    cfg.rollout_window = c.rollout_window;
    cfg.doc_bytes = c.doc_bytes;
    cfg.setup = !c.no_setup;
    cfg.out = c.out;
    cfg.progress = !c.no_progress;
    Ok(cfg)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = (|| -> anyhow::Result<Config> {
        Ok(match cli.cmd {
            Cmd::PowerUp { common, over } => {
                let n = common.phones;
                config(
                    common,
                    Scenario::PowerUp {
                        over: secs(over, "--over")?,
                    },
                    n,
                )?
            }
            Cmd::ChangeStorm {
                common,
                over,
                effective_by,
                via,
                kafka,
                topic,
            } => {
                let n = common.phones;
                let over = over.unwrap_or(n as f64 / 20_000.0);
                let via = match (via.as_str(), kafka) {
                    ("http", _) => ChangeVia::Http,
                    ("kafka", Some(brokers)) => ChangeVia::Kafka { brokers, topic },
                    ("kafka", None) => anyhow::bail!("--via kafka needs --kafka BROKERS"),
                    (other, _) => anyhow::bail!("--via {other:?}: expected http or kafka"),
                };
                config(
                    common,
                    Scenario::ChangeStorm {
                        boot_over: secs(over, "--over")?,
                        effective_by,
                        via,
                    },
                    n,
                )?
            }
            Cmd::RefreshStorm {
                common,
                over,
                no_suppress,
            } => {
                let n = common.phones;
                let over = over.unwrap_or(n as f64 / 20_000.0);
                config(
                    common,
                    Scenario::RefreshStorm {
                        boot_over: secs(over, "--over")?,
                        suppress: !no_suppress,
                    },
                    n,
                )?
            }
            Cmd::Steady {
                common,
                rate,
                duration,
                hold,
            } => {
                let n = (rate * duration).ceil().max(1.0) as u64;
                config(
                    common,
                    Scenario::Steady {
                        rate,
                        duration: secs(duration, "--duration")?,
                        hold: secs(hold, "--hold")?,
                    },
                    n,
                )?
            }
        })
    })();
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uaprof-storm: {e:#}");
            return std::process::ExitCode::from(64);
        }
    };
    let out = cfg.out.clone();
    match loadtest::run(cfg) {
        Ok(r) => {
            print!("{}", loadtest::report::summary(&r));
            if let Some(dir) = out {
                if let Err(e) = loadtest::report::write_all(&r, &dir) {
                    eprintln!("uaprof-storm: writing the report: {e:#}");
                    return std::process::ExitCode::FAILURE;
                }
                println!(
                    "\nwrote {}/{{result.json,report.html,plot.png}}",
                    dir.display()
                );
            }
            if r.completed {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("uaprof-storm: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

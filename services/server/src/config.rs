//! Configuration: a TOML file, overridden by environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bus::KafkaConfig;
use clap::{Parser, ValueEnum};
use content::{ContentConfig, ProvisioningConfig, StoreKind, TlsConfig};
use notifier::NotifierConfig;
use notifier::store::redis::RedisConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Notifier and content tier in one process (the default).
    All,
    /// SIP notifier only.
    Notifier,
    /// Content tier only (documents, provisioning API).
    Content,
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which tiers this process runs.
    pub role: Role,
    /// Where the embedded stores keep their journals (subscriptions, documents).
    pub data_dir: PathBuf,
    /// fsync every group commit of the embedded stores. Off trades crash durability of the
    /// last few milliseconds on power loss for throughput (a process crash loses nothing).
    pub fsync: bool,
    /// Admin endpoints (`/live`, `/ready`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The content tier's HTTP listener for phones (documents).
    pub http_listen: SocketAddr,
    /// The provisioning API's listener (roles `content` and `all`), apart from the phones'.
    /// Beyond loopback it needs `[provisioning] tokens` (or `allow_open`).
    pub provision_listen: SocketAddr,
    /// Who may use the provisioning API, and for which keys.
    pub provisioning: ProvisioningConfig,
    /// HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on `http_listen`: certificate and key files.
    pub http_tls: Option<TlsConfig>,
    /// HTTP/3 (QUIC) listener for document fetches, UDP; needs `http_tls` (its certificate),
    /// and the HTTPS listener then advertises it (`Alt-Svc`). Off when unset.
    pub http3_listen: Option<SocketAddr>,
    /// The UDP port clients reach HTTP/3 at, as `Alt-Svc` names it, when a load balancer
    /// maps ports (a Kubernetes Service); default: `http3_listen`'s port.
    pub http3_alt_svc_port: Option<u16>,
    /// HTTPS on `provision_listen`, so bearer tokens never cross the network in clear.
    pub provision_tls: Option<TlsConfig>,
    /// How long SIGTERM waits for in-flight work before exiting.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// gRPC listener of the content tier (roles `content` and `all`); off when unset.
    pub grpc_listen: Option<SocketAddr>,
    /// gRPC endpoint of the content tier (`http://host:port`), for role `notifier`.
    pub content_url: Option<String>,
    /// This node's name in the tier (partition leases); default: host name, pid and a
    /// random suffix, so a restarted process never mistakes an old lease for its own.
    pub node_id: Option<String>,
    /// Subscription store in Redis, shared by every notifier node. Without it, role `all`
    /// keeps subscriptions in its embedded journal store. With Kafka, content nodes keep
    /// their documents there too (`content.store`).
    pub redis: Option<RedisConfig>,
    /// The Kafka path: change events in, applied records between the tiers. Without it,
    /// changes come only from the provisioning API and reach notifiers in-process or over
    /// the content tier's gRPC long-poll.
    pub kafka: Option<KafkaConfig>,
    pub notifier: NotifierConfig,
    pub content: ContentConfig,
    /// Traces over OTLP.
    pub telemetry: TelemetryConfig,
}

/// The `[telemetry]` table: where spans go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint of a collector (`http://collector:4317`); tracing is off when unset.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of this process's spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "uaprof".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            data_dir: PathBuf::from("data"),
            fsync: true,
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            http_listen: ([127, 0, 0, 1], 8080).into(),
            provision_listen: ([127, 0, 0, 1], 8081).into(),
            provisioning: ProvisioningConfig::default(),
            http_tls: None,
            http3_listen: None,
            http3_alt_svc_port: None,
            provision_tls: None,
            shutdown_grace: Duration::from_secs(10),
            grpc_listen: None,
            content_url: None,
            node_id: None,
            redis: None,
            kafka: None,
            notifier: NotifierConfig::default(),
            content: ContentConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// The UA-profile delivery server (RFC 6080 profile delivery, RFC 6665 subscriptions).
///
/// Every flag can also be set by the environment variable shown, and in the TOML file given
/// by --config; flags win over the environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "uaprof", version)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "UAPROF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit (0 valid, 64 invalid).
    #[arg(long)]
    pub check_config: bool,
    #[arg(long, env = "UAPROF_ROLE", value_enum)]
    pub role: Option<Role>,
    #[arg(long, env = "UAPROF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// SIP over UDP listen address ("off" disables).
    #[arg(long, env = "UAPROF_SIP_UDP")]
    pub sip_udp: Option<String>,
    /// SIP over TCP listen address ("off" disables).
    #[arg(long, env = "UAPROF_SIP_TCP")]
    pub sip_tcp: Option<String>,
    /// Host[:port] advertised in Via/Contact of NOTIFYs.
    #[arg(long, env = "UAPROF_ADVERTISE")]
    pub advertise: Option<String>,
    /// Content tier HTTP listen address (document fetches).
    #[arg(long, env = "UAPROF_HTTP")]
    pub http: Option<SocketAddr>,
    /// HTTP/3 (QUIC, UDP) listen address for document fetches, or `off`; needs `[http_tls]`.
    #[arg(long, env = "UAPROF_HTTP3")]
    pub http3: Option<String>,
    /// Provisioning API listen address.
    #[arg(long, env = "UAPROF_PROVISION")]
    pub provision: Option<SocketAddr>,
    /// Admin (/live, /ready, /metrics) listen address.
    #[arg(long, env = "UAPROF_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Base URL put in NOTIFYs for documents (default: http://<http listen address>).
    #[arg(long, env = "UAPROF_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Minimum subscription duration in seconds (423 below it).
    #[arg(long, env = "UAPROF_EXPIRES_MIN")]
    pub expires_min: Option<u32>,
    /// fsync the embedded journals on every commit (true/false).
    #[arg(long, env = "UAPROF_FSYNC")]
    pub fsync: Option<bool>,
    /// gRPC listen address of the content tier, or `off`.
    #[arg(long, env = "UAPROF_GRPC")]
    pub grpc: Option<String>,
    /// Content tier gRPC endpoint for role notifier, e.g. `http://10.0.0.5:8090`.
    #[arg(long, env = "UAPROF_CONTENT_URL")]
    pub content_url: Option<String>,
    /// Redis URL(s), comma-separated (`redis://host:6379/`); several seeds imply a Cluster.
    #[arg(long, env = "UAPROF_REDIS")]
    pub redis: Option<String>,
    /// Treat the Redis URL(s) as a Redis Cluster.
    #[arg(long, env = "UAPROF_REDIS_CLUSTER")]
    pub redis_cluster: Option<bool>,
    #[arg(long, env = "UAPROF_NODE_ID")]
    pub node_id: Option<String>,
    /// Document fetches per second the content tier admits (and grants fetch credits for).
    #[arg(long, env = "UAPROF_CONTENT_MAX_RATE")]
    pub content_max_rate: Option<u32>,
    /// Kafka bootstrap servers (`host:port[,host:port]`): turns the Kafka change path on.
    #[arg(long, env = "UAPROF_KAFKA")]
    pub kafka: Option<String>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "UAPROF_LOG", default_value = "info")]
    pub log: String,
    /// Log line format on stderr: `text` for people, `json` (one object a line) for log
    /// shippers.
    #[arg(long, env = "UAPROF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint for traces (`http://host:4317`); off when unset.
    #[arg(long, env = "UAPROF_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, with the current span and its trace id.
    Json,
}

fn parse_listen(v: &str, what: &str) -> Result<Option<SocketAddr>, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e| format!("{what}: invalid address {v:?}: {e}"))
}

impl Config {
    /// Where this node's content tier keeps documents.
    pub fn content_store(&self) -> StoreKind {
        match self.content.store {
            StoreKind::Auto if self.redis.is_some() && self.kafka.is_some() => StoreKind::Redis,
            StoreKind::Auto => StoreKind::Journal,
            other => other,
        }
    }
}

impl Cli {
    /// Builds the effective configuration; the error names the bad input.
    pub fn load(&self) -> Result<Config, String> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<Config>(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(r) = self.role {
            cfg.role = r;
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(v) = &self.sip_udp {
            cfg.notifier.udp = parse_listen(v, "--sip-udp")?;
        }
        if let Some(v) = &self.sip_tcp {
            cfg.notifier.tcp = parse_listen(v, "--sip-tcp")?;
        }
        if let Some(a) = &self.advertise {
            cfg.notifier.advertise = Some(a.clone());
        }
        if let Some(a) = self.http {
            cfg.http_listen = a;
        }
        if let Some(v) = &self.http3 {
            cfg.http3_listen = parse_listen(v, "--http3")?;
        }
        if let Some(a) = self.provision {
            cfg.provision_listen = a;
        }
        if let Some(a) = self.admin {
            cfg.admin_listen = a;
        }
        if let Some(u) = &self.public_url {
            cfg.content.public_base_url = u.clone();
        }
        if let Some(m) = self.expires_min {
            cfg.notifier.expires_min = m;
        }
        if let Some(f) = self.fsync {
            cfg.fsync = f;
        }
        if let Some(v) = &self.grpc {
            cfg.grpc_listen = parse_listen(v, "--grpc")?;
        }
        if let Some(u) = &self.content_url {
            cfg.content_url = Some(u.clone());
        }
        if let Some(urls) = &self.redis {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            let r = cfg.redis.get_or_insert_with(RedisConfig::default);
            r.cluster = r.cluster || urls.len() > 1;
            r.urls = urls;
        }
        if let Some(c) = self.redis_cluster {
            cfg.redis.get_or_insert_with(RedisConfig::default).cluster = c;
        }
        if let Some(n) = &self.node_id {
            cfg.node_id = Some(n.clone());
        }
        if let Some(r) = self.content_max_rate {
            cfg.content.max_fetch_rate = Some(r);
        }
        if let Some(b) = &self.kafka {
            cfg.kafka.get_or_insert_with(KafkaConfig::default).brokers = b.clone();
        }
        if let Some(e) = &self.otlp_endpoint {
            cfg.telemetry.otlp_endpoint =
                Some(e.clone()).filter(|e| !e.eq_ignore_ascii_case("off"));
        }
        cfg.notifier.validate()?;
        cfg.content.validate().map_err(|e| e.to_string())?;
        if let Some(r) = &cfg.redis {
            r.validate()?;
        }
        if let Some(k) = &cfg.kafka {
            k.validate()?;
        }
        if cfg.content.store == StoreKind::Redis && (cfg.redis.is_none() || cfg.kafka.is_none()) {
            return Err(
                "content.store = \"redis\" needs both redis (--redis URL) and kafka \
                        (--kafka BROKERS): applied changes reach the notifiers through Kafka"
                    .into(),
            );
        }
        if cfg.role == Role::Notifier {
            if cfg.redis.is_none() {
                return Err("role notifier needs a shared store: set redis (--redis URL)".into());
            }
            if cfg.content_url.is_none() {
                return Err(
                    "role notifier needs the content tier: set content_url (--content-url)".into(),
                );
            }
        }
        cfg.provisioning.validate()?;
        for tls in [&cfg.http_tls, &cfg.provision_tls].into_iter().flatten() {
            tls.server_config()?;
        }
        match (&cfg.http3_listen, &cfg.http_tls) {
            (Some(_), None) => {
                return Err("http3_listen needs http_tls: HTTP/3 is always encrypted".into());
            }
            (Some(_), Some(t)) => {
                t.quic_server_config()?;
            }
            (None, _) => {}
        }
        let fa = &cfg.content.fetch_auth;
        let client_ca = cfg
            .http_tls
            .as_ref()
            .and_then(|t| t.client_ca_file.as_ref());
        if fa.client_certificates && client_ca.is_none() {
            return Err(
                "content.fetch_auth.client_certificates needs http_tls.client_ca_file: \
                 without a CA no client certificate is verified"
                    .into(),
            );
        }
        let open = cfg.provisioning.tokens.is_empty() && !cfg.provisioning.allow_open;
        if cfg.role != Role::Notifier && open && !cfg.provision_listen.ip().is_loopback() {
            return Err(format!(
                "provision_listen {} is beyond loopback, but [provisioning] has no tokens: \
                 anyone reaching it could rewrite every profile. Add provisioning.tokens, \
                 bind it to loopback, or set provisioning.allow_open = true",
                cfg.provision_listen
            ));
        }
        if cfg.shutdown_grace.is_zero() {
            return Err("shutdown_grace must be positive".into());
        }
        Ok(cfg)
    }
}

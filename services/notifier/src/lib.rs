//! The notifier tier: SIP in, NOTIFYs out, state in a [`store::SubscriptionStore`].
//!
//! * [`transport`]: UDP/TCP listeners (parse, shed, hand to the engine) and the send side.
//! * [`engine`]: the single task that owns SIP transactions and NOTIFYs in flight.
//! * [`subscribe`]: SUBSCRIBE handling (RFC 6665 + RFC 6080 + RFC 5839).
//! * [`notify`]: building a NOTIFY for a stored subscription.
//! * [`fanout`]: the change-feed consumer that turns document changes into durable fan-out
//!   work, and the walks that turn that work into wants.
//! * [`pipeline`]: every NOTIFY but a SUBSCRIBE's own answer leaves through it: priority
//!   queues, fetch credits, the dialog's turn, retries.
//! * [`expiry`]: the sweep that ends expired subscriptions with `reason=timeout`.
//! * [`store`]: the subscription store trait, its contract suite and the embedded store.
//! * [`metrics_desc`]: metric names and their descriptions.
//! * [`config`] holds the configuration.
//!
//! [`run`] wires these together for one node, and [`publish_held`] samples what it holds.

pub mod checksync;
pub mod config;
pub mod dialect;
pub mod digest;
pub mod engine;
pub mod expiry;
pub mod fanout;
pub mod limits;
pub mod metrics_desc;
pub mod notify;
pub mod pipeline;
pub mod store;
pub mod subscribe;
pub mod target;
pub mod transport;
pub mod want;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sip_core::transport::Transport;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uaprof_api::{ChangeSource, ContentResolver, CreditSource};

pub use config::NotifierConfig;
use engine::{ENGINE_QUEUE, Engine};
use store::SubscriptionStore;
use transport::Outbound;
use wire::EngineMsg;

/// Wall-clock source. Subscription expiry is wall-clock time (it must survive restarts and
/// be shared by nodes); protocol timers use the monotonic clock inside the sans-IO core.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }
}

/// How this node names itself in Via and Contact, per transport.
#[derive(Debug, Clone, Default)]
pub struct LocalAddrs {
    pub udp: Option<String>,
    pub tcp: Option<String>,
    pub tls: Option<String>,
}

impl LocalAddrs {
    pub fn sent_by(&self, t: Transport) -> &str {
        let pick = match t {
            Transport::Udp => self.udp.as_ref().or(self.tcp.as_ref()),
            Transport::Tcp => self.tcp.as_ref().or(self.udp.as_ref()),
            Transport::Tls => self.tls.as_ref(),
        };
        pick.map(String::as_str).unwrap_or("127.0.0.1")
    }

    pub fn contact(&self, t: Transport) -> String {
        match t {
            Transport::Udp => format!("<sip:{}>", self.sent_by(t)),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.sent_by(t)),
            // RFC 5630: a TLS dialog's Contact is a SIPS URI.
            Transport::Tls => format!("<sips:{}>", self.sent_by(t)),
        }
    }
}

/// What every task of a notifier node shares.
pub struct Ctx {
    pub config: NotifierConfig,
    pub store: Arc<dyn SubscriptionStore>,
    pub resolver: Arc<dyn ContentResolver>,
    pub local: LocalAddrs,
    pub engine: mpsc::Sender<EngineMsg>,
    pub clock: Arc<dyn Clock>,
    pub pipeline: pipeline::Pipeline,
    /// In-flight NOTIFY memory, in KiB: a delivery holds its NOTIFY's size until the
    /// transaction ends.
    pub inflight_budget: Arc<tokio::sync::Semaphore>,
    /// Next-hop names of route sets, resolved and cached.
    pub dns: target::DnsCache,
    /// The sockets and stream connections NOTIFYs leave by (which flows are open).
    pub outbound: Arc<transport::Outbound>,
    /// Digest authentication of SUBSCRIBE, when configured.
    pub digest: Option<digest::DigestAuth>,
}

/// Sockets bound before `run`, so callers can print the real addresses (port 0 in tests).
pub struct Bound {
    pub udp: Option<Arc<UdpSocket>>,
    pub tcp: Option<TcpListener>,
    /// SIP over TLS: the listener and its certificate.
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

impl Bound {
    pub async fn bind(config: &NotifierConfig) -> std::io::Result<Self> {
        let udp = match config.udp {
            Some(a) => {
                let sock = bind_udp(a, config.udp_buffer_bytes)?;
                if let Some(m) = &config.pnp_multicast {
                    // Plug-and-play SUBSCRIBEs to the group arrive on this socket and are
                    // answered from it: by unicast, to the phone's own address.
                    socket2::SockRef::from(&sock)
                        .join_multicast_v4(&m.group, &m.interface)
                        .map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!(
                                    "notifier.pnp_multicast: join {} on {}: {e}",
                                    m.group, m.interface
                                ),
                            )
                        })?;
                    tracing::info!(group = %m.group, interface = %m.interface, "listening for plug-and-play SUBSCRIBEs");
                }
                Some(Arc::new(sock))
            }
            None => None,
        };
        let tcp = match config.tcp {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => {
                let tls = t.server_config().map_err(std::io::Error::other)?;
                Some((TcpListener::bind(t.listen).await?, tls))
            }
            None => None,
        };
        Ok(Self { udp, tcp, tls })
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }
}

/// Binds the SIP UDP socket with large kernel buffers. A power-up burst arrives faster than
/// one scheduling slice can drain; with the default ~200 KiB buffer the kernel drops it and
/// every phone retransmits 500 ms later, which doubles the load exactly when it peaks. The
/// kernel caps the size at `net.core.rmem_max`/`wmem_max`.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(buffer) {
        tracing::warn!(%e, buffer, "cannot set UDP receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(buffer) {
        tracing::warn!(%e, buffer, "cannot set UDP send buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// What a notifier node works with: its store, the content tier's resolver, change feed and
/// fetch credits.
pub struct Seams {
    pub store: Arc<dyn SubscriptionStore>,
    pub resolver: Arc<dyn ContentResolver>,
    pub feed: Box<dyn ChangeSource>,
    pub credits: Arc<dyn CreditSource>,
}

/// How often [`publish_held`] reads the store: well inside a 15 s scrape interval, and on
/// Redis one GET per owned partition, which a node can afford every few seconds.
const HELD_EVERY: Duration = Duration::from_secs(5);

/// Publishes `notifier_subscriptions_held` and `notifier_partitions_owned` every
/// [`HELD_EVERY`] until `shutdown`. A failed read leaves the last values standing (store
/// errors are counted where the store does the work).
pub async fn publish_held(store: Arc<dyn SubscriptionStore>, shutdown: CancellationToken) {
    loop {
        if let Ok(h) = store.held().await {
            metrics::gauge!("notifier_subscriptions_held").set(h.subscriptions as f64);
            metrics::gauge!("notifier_partitions_owned").set(h.partitions as f64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HELD_EVERY) => {}
        }
    }
}

/// Runs one notifier node until `shutdown` fires, then drains for at most `grace`.
pub async fn run(
    config: NotifierConfig,
    bound: Bound,
    seams: Seams,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let Seams {
        store,
        resolver,
        feed,
        credits,
    } = seams;
    metrics_desc::describe();
    let advertise = |addr: Option<SocketAddr>| {
        config
            .advertise
            .clone()
            .map(|host| match addr {
                Some(a) if !host.contains(':') => format!("{host}:{}", a.port()),
                _ => host,
            })
            .or_else(|| addr.map(|a| a.to_string()))
    };
    let local = LocalAddrs {
        udp: advertise(bound.udp_addr()),
        tcp: advertise(bound.tcp_addr()),
        tls: advertise(bound.tls_addr()),
    };
    let (tx, rx) = mpsc::channel(ENGINE_QUEUE);
    let listeners = CancellationToken::new();
    let stop = CancellationToken::new();
    let out = Outbound::new(
        bound.udp.clone(),
        config.max_tcp_connections,
        tx.clone(),
        stop.clone(),
    );
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        store,
        resolver,
        local,
        engine: tx.clone(),
        clock: Arc::new(SystemClock),
        pipeline: pipeline::Pipeline::new(Arc::new(pipeline::CreditPool::new(credits))),
        inflight_budget: Arc::new(tokio::sync::Semaphore::new(
            config.max_inflight_bytes / 1024,
        )),
        dns: target::DnsCache::default(),
        outbound: Arc::clone(&out),
        digest: config
            .digest
            .as_ref()
            .map(digest::DigestAuth::load)
            .transpose()
            .map_err(std::io::Error::other)?,
    });

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(sock) = bound.udp.clone() {
        tasks.spawn(transport::serve_udp(
            sock,
            Arc::clone(&out),
            listeners.clone(),
        ));
    }
    if let Some(l) = bound.tcp {
        tasks.spawn(transport::serve_tcp(
            l,
            Arc::clone(&out),
            config.max_tcp_connections,
            listeners.clone(),
        ));
    }
    if let Some((l, tls)) = bound.tls {
        tasks.spawn(transport::serve_tls(
            l,
            tls,
            Arc::clone(&out),
            config.max_tcp_connections,
            listeners.clone(),
        ));
    }
    tasks.spawn(expiry::run(Arc::clone(&ctx), listeners.clone()));
    tasks.spawn(publish_held(Arc::clone(&ctx.store), listeners.clone()));
    tasks.spawn(pipeline::run(Arc::clone(&ctx), stop.clone()));
    tasks.spawn(fanout::run(Arc::clone(&ctx), feed, listeners.clone()));
    let engine = Engine::new(Arc::clone(&ctx), out, rx, tx, config.timers());
    let drain = CancellationToken::new();
    let engine_task = tokio::spawn(engine.run(drain.clone(), stop.clone()));
    info!(udp = ?ctx.local.udp, tcp = ?ctx.local.tcp, "notifier running");

    shutdown.cancelled().await;
    // Phase 1: stop taking new work (listeners, sweeps, fan-out).
    listeners.cancel();
    drain.cancel();
    // Phase 2: let in-flight transactions finish, bounded by the grace period.
    if tokio::time::timeout(grace, engine_task).await.is_err() {
        info!("grace period over; stopping with transactions in flight");
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

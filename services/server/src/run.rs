//! Wiring of one process: stores, tiers, listeners, signals, two-phase shutdown.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use content::{ContentConfig, ContentService, InProcessFeed, StoreKind};
use content_rpc::{RemoteContent, RemoteCredits, RemoteFeed};
use journal::JournalOptions;
use notifier::store::SubscriptionStore;
use notifier::store::embedded::EmbeddedStore;
use notifier::store::redis::RedisStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uaprof_api::{ChangeSource, ContentResolver, CreditSource};

use crate::admin::{self, Admin};
use crate::config::{Config, Role};

pub enum RunError {
    Config(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

pub async fn run(mut cfg: Config) -> Result<(), RunError> {
    let metrics = admin::install_metrics().map_err(RunError::Other)?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin_listener = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("bind admin {}", cfg.admin_listen))?;
    let journal_opts = JournalOptions {
        fsync: cfg.fsync,
        ..JournalOptions::default()
    };
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut line = String::new();
    let node = cfg.node_id.clone().unwrap_or_else(default_node_id);
    if let Some(k) = &cfg.kafka {
        bus::describe_metrics();
        if k.create_topics {
            bus::ensure_topics(k)
                .await
                .map_err(|e| RunError::Other(anyhow::anyhow!("{e}")))?;
        }
        line.push_str(&format!(" kafka={}", k.brokers));
    }
    let mut consumer = None;

    // The content tier: documents over HTTP, the resolver and change feed over gRPC.
    let http_stop = CancellationToken::new();
    let service = if cfg.role == Role::Notifier {
        None
    } else {
        let http_listener = TcpListener::bind(cfg.http_listen)
            .await
            .with_context(|| format!("bind http {}", cfg.http_listen))?;
        let http_addr = http_listener.local_addr().context("http address")?;
        let http_scheme = if cfg.http_tls.is_some() {
            "https"
        } else {
            "http"
        };
        if cfg.content.public_base_url == ContentConfig::default().public_base_url {
            cfg.content.public_base_url = format!("{http_scheme}://{http_addr}");
        }
        let http3 = match (&cfg.http_tls, cfg.http3_listen) {
            (Some(t), Some(addr)) => Some(
                content::Http3Listener::bind(
                    addr,
                    t.quic_server_config().map_err(RunError::Config)?,
                )
                .map_err(RunError::Config)?,
            ),
            _ => None,
        };
        let http3_addr = match &http3 {
            Some(l) => Some(l.local_addr().context("http3 address")?),
            None => None,
        };
        let http_listener = match &cfg.http_tls {
            Some(t) => {
                let l = content::HttpListener::tls(
                    http_listener,
                    t.server_config().map_err(RunError::Config)?,
                );
                match http3_addr {
                    Some(a) => l.with_http3(cfg.http3_alt_svc_port.unwrap_or(a.port())),
                    None => l,
                }
            }
            None => http_listener.into(),
        };
        let service = match (cfg.content_store(), &cfg.redis) {
            (StoreKind::Redis, Some(rc)) => ContentService::open_redis(rc, cfg.content.clone())
                .await
                .map_err(|e| RunError::Other(anyhow::anyhow!("content store: {e}")))?,
            _ => {
                let content_dir = cfg.data_dir.join("content");
                ContentService::open(&content_dir, cfg.content.clone(), journal_opts.clone())
                    .map_err(|e| {
                        RunError::Other(anyhow::anyhow!("open {}: {e}", content_dir.display()))
                    })?
            }
        };
        line.push_str(if service.is_shared() {
            " content-store=redis"
        } else {
            " content-store=journal"
        });
        content::describe_metrics();
        let access = Arc::new(content::Access::new(&cfg.provisioning).map_err(RunError::Config)?);
        if let Some(k) = &cfg.kafka {
            // Provisioning API writes go through the change topic, in order with the OSS's.
            let producer = bus::ChangeProducer::new(k).map_err(RunError::Config)?;
            service.set_change_log(Arc::new(producer));
            let c = bus::ContentConsumer::new(
                k.clone(),
                Arc::clone(&service),
                Arc::clone(&access),
                node.clone(),
            )
            .map_err(RunError::Config)?;
            consumer = Some(tokio::spawn(c.run(shutdown.clone())));
        }
        tasks.spawn({
            let service = Arc::clone(&service);
            let stop = http_stop.clone();
            async move {
                if let Err(e) = content::serve(http_listener, service, stop).await {
                    tracing::error!(%e, "content HTTP server failed");
                }
            }
        });
        line.push_str(&format!(" http={http_scheme}://{http_addr}"));
        if let (Some(l), Some(addr)) = (http3, http3_addr) {
            tasks.spawn(content::serve_http3(
                l,
                Arc::clone(&service),
                http_stop.clone(),
            ));
            line.push_str(&format!(" http3=udp://{addr}"));
        }
        let provision_listener = TcpListener::bind(cfg.provision_listen)
            .await
            .with_context(|| format!("bind provisioning {}", cfg.provision_listen))?;
        let provision_addr = provision_listener
            .local_addr()
            .context("provisioning address")?;
        let provision_scheme = if cfg.provision_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let provision_listener = match &cfg.provision_tls {
            Some(t) => content::HttpListener::tls(
                provision_listener,
                t.server_config().map_err(RunError::Config)?,
            ),
            None => provision_listener.into(),
        };
        if access.is_open() && provision_addr.ip().is_loopback() {
            tracing::info!(addr = %provision_addr, "provisioning API without tokens, on loopback only");
        } else if access.is_open() {
            tracing::warn!(addr = %provision_addr, "provisioning API without tokens (provisioning.allow_open): anyone reaching it may change every profile");
        }
        tasks.spawn({
            let service = Arc::clone(&service);
            let stop = http_stop.clone();
            async move {
                let served =
                    content::serve_provisioning(provision_listener, service, access, stop).await;
                if let Err(e) = served {
                    tracing::error!(%e, "provisioning API server failed");
                }
            }
        });
        line.push_str(&format!(" provision={provision_scheme}://{provision_addr}"));
        if let Some(addr) = cfg.grpc_listen {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind gRPC {addr}"))?;
            line.push_str(&format!(
                " grpc=http://{}",
                l.local_addr().context("gRPC address")?
            ));
            content_rpc::describe_metrics();
            tasks.spawn({
                let service = Arc::clone(&service);
                let stop = http_stop.clone();
                async move {
                    if let Err(e) = content_rpc::serve(l, service, stop).await {
                        tracing::error!(%e, "content gRPC server failed");
                    }
                }
            });
        }
        Some(service)
    };

    let admin_stop = CancellationToken::new();
    let admin_addr = admin_listener.local_addr().context("admin address")?;
    tasks.spawn(admin::serve(
        admin_listener,
        Admin {
            metrics,
            ready: Arc::clone(&ready),
        },
        admin_stop.clone(),
    ));

    // The notifier: subscriptions in the embedded store or in Redis, shared by the tier.
    let mut notifier_task = None;
    let mut membership = None;
    let mut embedded = None;
    if cfg.role != Role::Content {
        let store: Arc<dyn SubscriptionStore> = match &cfg.redis {
            Some(rc) => {
                let store = RedisStore::connect(rc, node.clone())
                    .await
                    .map_err(|e| RunError::Other(anyhow::anyhow!("redis: {e}")))?;
                let store = Arc::new(store);
                // Take this node's share before serving, so a lone node starts complete.
                if let Err(e) = store.membership_tick().await {
                    tracing::warn!(%e, "first membership tick failed; retrying in the background");
                }
                membership = Some(tokio::spawn(
                    Arc::clone(&store).run_membership(shutdown.clone()),
                ));
                tasks.spawn(Arc::clone(&store).run_wakeups(shutdown.clone()));
                line.push_str(&format!(" node={node} store=redis"));
                store
            }
            None => {
                let store_dir = cfg.data_dir.join("subscriptions");
                let store = EmbeddedStore::open(&store_dir, journal_opts)
                    .map_err(|e| RunError::Other(anyhow::anyhow!("{e}")))?;
                embedded = Some(store.clone());
                line.push_str(" store=embedded");
                Arc::new(store)
            }
        };
        let bound = notifier::Bound::bind(&cfg.notifier)
            .await
            .context("bind SIP listeners")?;
        if let Some(a) = bound.udp_addr() {
            line.push_str(&format!(" sip-udp={a}"));
        }
        if let Some(a) = bound.tcp_addr() {
            line.push_str(&format!(" sip-tcp={a}"));
        }
        if let Some(a) = bound.tls_addr() {
            line.push_str(&format!(" sip-tls={a}"));
        }
        let offset = store
            .feed_offset()
            .await
            .map_err(|e| RunError::Other(anyhow::anyhow!("{e}")))?;
        // Without Kafka the fan-out records its feed position in the subscription store.
        // Fetch credits come from the content tier: in process, or over its gRPC stream.
        let (resolver, mut feed, credits): (
            Arc<dyn ContentResolver>,
            Box<dyn ChangeSource>,
            Arc<dyn CreditSource>,
        ) = match &service {
            Some(service) => (
                service.clone(),
                Box::new(InProcessFeed::new(Arc::clone(service), offset)),
                if cfg.notifier.pace_fetches {
                    Arc::clone(service.admission()) as Arc<dyn CreditSource>
                } else {
                    Arc::new(uaprof_api::Unlimited)
                },
            ),
            None => {
                // The credit stream's reconnects are counted on this side.
                content_rpc::describe_metrics();
                let url = cfg.content_url.clone().unwrap_or_default();
                let remote = RemoteContent::new(&url).map_err(RunError::Config)?;
                let credits: Arc<dyn CreditSource> = if cfg.notifier.pace_fetches {
                    RemoteCredits::start(
                        remote.clone(),
                        node.clone(),
                        cfg.notifier.credit_fallback_rate,
                        shutdown.clone(),
                    )
                } else {
                    Arc::new(uaprof_api::Unlimited)
                };
                (
                    Arc::new(remote.clone()),
                    Box::new(RemoteFeed::new(remote, offset)),
                    credits,
                )
            }
        };
        if let Some(k) = &cfg.kafka {
            feed = Box::new(bus::AppliedFeed::new(k).map_err(RunError::Config)?);
        }
        notifier_task = Some(tokio::spawn(notifier::run(
            cfg.notifier.clone(),
            bound,
            notifier::Seams {
                store,
                resolver,
                feed,
                credits,
            },
            shutdown.clone(),
            cfg.shutdown_grace,
        )));
    }

    ready.store(true, Ordering::Relaxed);
    // One machine-readable line on stdout: scripts and tests read the bound addresses here.
    println!(
        "uaprof ready: role={}{line} admin=http://{admin_addr} data={}",
        match cfg.role {
            Role::All => "all",
            Role::Notifier => "notifier",
            Role::Content => "content",
        },
        cfg.data_dir.display()
    );
    let _ = std::io::stdout().flush();

    let fast = wait_for_signal().await;
    info!(fast, "shutting down");
    ready.store(false, Ordering::Relaxed);
    // Stops the listeners and, in a tier, hands this node's partitions to the others now.
    shutdown.cancel();
    let grace = if fast {
        Duration::from_millis(200)
    } else {
        cfg.shutdown_grace
    };
    if let Some(t) = notifier_task {
        match tokio::time::timeout(grace + Duration::from_secs(1), t).await {
            Ok(Ok(Err(e))) => tracing::warn!(%e, "notifier stopped with an error"),
            Ok(_) => {}
            Err(_) => tracing::warn!("notifier did not stop within the grace period"),
        }
    }
    if let Some(m) = membership
        && tokio::time::timeout(Duration::from_secs(2), m)
            .await
            .is_err()
    {
        tracing::warn!("leases not released in time; they lapse by themselves");
    }
    if let Some(c) = consumer
        && tokio::time::timeout(grace, c).await.is_err()
    {
        tracing::warn!("change consumer did not stop within the grace period");
    }
    http_stop.cancel();
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Snapshots make the next start fast; the journals alone are already complete.
    if let Some(Err(e)) = embedded.map(|s| s.snapshot()) {
        tracing::warn!(%e, "subscription snapshot failed");
    }
    if let Some(Err(e)) = service.map(|s| s.snapshot()) {
        tracing::warn!(%e, "content snapshot failed");
    }
    info!("stopped");
    Ok(())
}

/// A node name unique across restarts: host, process and 32 random bits.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Waits for SIGTERM (graceful: returns false) or SIGINT (fast: returns true).
async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return true;
        };
        tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        true
    }
}

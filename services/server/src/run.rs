//! Wiring of one process: stores, tiers, listeners, signals, two-phase shutdown.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use content::{ContentConfig, ContentService, InProcessFeed};
use journal::JournalOptions;
use notifier::store::SubscriptionStore;
use notifier::store::embedded::EmbeddedStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    if cfg.role == Role::Notifier {
        // The notifier needs a content tier to resolve subscriptions; across processes that
        // is the gRPC seam, which does not exist yet.
        return Err(RunError::Config(
            "role notifier needs a remote content tier (gRPC), which this version does not \
             have yet; run role all (notifier and content in one process)"
                .into(),
        ));
    }
    let metrics = admin::install_metrics().map_err(RunError::Other)?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin_listener = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("bind admin {}", cfg.admin_listen))?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("bind http {}", cfg.http_listen))?;
    let http_addr = http_listener.local_addr().context("http address")?;
    if cfg.content.public_base_url == ContentConfig::default().public_base_url {
        cfg.content.public_base_url = format!("http://{http_addr}");
    }
    let journal_opts = JournalOptions {
        fsync: cfg.fsync,
        ..JournalOptions::default()
    };

    let content_dir = cfg.data_dir.join("content");
    let service = ContentService::open(&content_dir, cfg.content.clone(), journal_opts.clone())
        .map_err(|e| RunError::Other(anyhow::anyhow!("open {}: {e}", content_dir.display())))?;
    content::describe_metrics();

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let http_stop = CancellationToken::new();
    tasks.spawn({
        let service = Arc::clone(&service);
        let stop = http_stop.clone();
        async move {
            if let Err(e) = content::serve(http_listener, service, stop).await {
                tracing::error!(%e, "content HTTP server failed");
            }
        }
    });
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

    let mut notifier_task = None;
    let mut sub_store = None;
    let mut sip_line = String::new();
    if cfg.role == Role::All {
        let store_dir = cfg.data_dir.join("subscriptions");
        let store = EmbeddedStore::open(&store_dir, journal_opts)
            .map_err(|e| RunError::Other(anyhow::anyhow!("{e}")))?;
        let bound = notifier::Bound::bind(&cfg.notifier)
            .await
            .context("bind SIP listeners")?;
        if let Some(a) = bound.udp_addr() {
            sip_line.push_str(&format!(" sip-udp={a}"));
        }
        if let Some(a) = bound.tcp_addr() {
            sip_line.push_str(&format!(" sip-tcp={a}"));
        }
        let offset = store
            .feed_offset()
            .await
            .map_err(|e| RunError::Other(anyhow::anyhow!("{e}")))?;
        // The fan-out records its position in the subscription store itself.
        let feed = InProcessFeed::new(Arc::clone(&service), offset);
        let store_arc: Arc<dyn SubscriptionStore> = Arc::new(store.clone());
        sub_store = Some(store);
        let resolver: Arc<dyn uaprof_api::ContentResolver> = service.clone();
        notifier_task = Some(tokio::spawn(notifier::run(
            cfg.notifier.clone(),
            bound,
            store_arc,
            resolver,
            Box::new(feed),
            shutdown.clone(),
            cfg.shutdown_grace,
        )));
    }

    ready.store(true, Ordering::Relaxed);
    // One machine-readable line on stdout: scripts and tests read the bound addresses here.
    println!(
        "uaprof ready: role={}{sip_line} http=http://{http_addr} admin=http://{admin_addr} data={}",
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
    http_stop.cancel();
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Snapshots make the next start fast; the journals alone are already complete.
    if let Some(Err(e)) = sub_store.map(|s| s.snapshot()) {
        tracing::warn!(%e, "subscription snapshot failed");
    }
    if let Err(e) = service.snapshot() {
        tracing::warn!(%e, "content snapshot failed");
    }
    info!("stopped");
    Ok(())
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

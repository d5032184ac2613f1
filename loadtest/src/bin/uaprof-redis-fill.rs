//! uaprof-redis-fill: loads N realistic subscriptions into the Redis store through the
//! store's own code path, and reports load time, rate and Redis memory per subscription.
//!
//! ```text
//! uaprof-redis-fill --redis redis://127.0.0.1:6379/ --count 1000000
//! uaprof-redis-fill --redis redis://127.0.0.1:7000/ --cluster --count 1000000
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use notifier::store::redis::{RedisConfig, RedisStore};
use notifier::store::{PackageName, Subscription, SubscriptionStore};
use sip_core::dialog::Dialog;
use sip_core::transport::Transport;
use tokio::sync::Semaphore;
use uaprof_api::{ProfileKey, ProfileType};

#[derive(Debug, Parser)]
#[command(name = "uaprof-redis-fill")]
struct Args {
    /// Redis URL; for a Cluster, every master's URL, comma-separated (memory is summed).
    #[arg(long)]
    redis: String,
    #[arg(long)]
    cluster: bool,
    #[arg(long, default_value = "uaprof")]
    prefix: String,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Inserts in flight at once (they pipeline on one multiplexed connection).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Device classes the phones are spread over (a million-member class with 1).
    #[arg(long, default_value_t = 4)]
    classes: u64,
}

/// A phone-shaped subscription: MAC subject, a class, `+sip.instance`, a confirmed entity
/// tag, and dialog fields of the lengths real phones send.
fn phone(n: u64, classes: u64, now_ms: u64) -> Subscription {
    let mac = format!("0004f2{:06x}", n & 0xff_ffff);
    let subject = ProfileKey::Device(format!("mac:{mac}"));
    let model = format!("VVX{}", 400 + (n % classes.max(1)) * 100);
    let class = ProfileKey::Class {
        vendor: "polycom".into(),
        model: model.clone(),
    };
    let id = RedisStore::allocate(&subject, n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let ip = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    let uri = format!("sip:{mac}@voip.example.com");
    Subscription {
        id,
        dialog: Dialog {
            call_id: format!("{:x}@{ip}", n.wrapping_mul(0x2545_f491_4f6c_dd1d)),
            local_tag: id.tag(),
            remote_tag: format!("{:08x}", n as u32 ^ 0x5a5a_5a5a),
            local_uri: uri.clone(),
            remote_uri: uri,
            remote_target: format!("sip:{mac}@{ip}:5060"),
            route_set: Vec::new(),
            secure: false,
            remote_cseq: 1,
        },
        transport: Transport::Udp,
        source: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 5060)),
        package: PackageName::UaProfile,
        profile_type: ProfileType::Device,
        subject: subject.clone(),
        vendor: Some("polycom".into()),
        model: Some(model),
        version: Some("6.4.3".into()),
        instance: Some(format!(
            "<urn:uuid:00000000-0000-1000-8000-{:012x}>",
            0x0004_f200_0000 | (n & 0xff_ffff)
        )),
        accept: Some(vec!["message/external-body".into()]),
        event_id: None,
        expires_at_ms: now_ms + 86_400_000 + (n % 3600) * 1000,
        local_cseq: 1,
        confirmed_etag: Some(format!("{:020x}", u128::from(n) * 0x1_0000_0001)),
        depends_on: vec![subject, class],
    }
}

async fn used_memory(urls: &[String]) -> anyhow::Result<u64> {
    let mut total = 0;
    for u in urls {
        let client = redis::Client::open(u.as_str())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("no used_memory in INFO")?;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let urls: Vec<String> = args.redis.split(',').map(str::to_owned).collect();
    let config = RedisConfig {
        urls: urls.clone(),
        cluster: args.cluster,
        prefix: args.prefix.clone(),
        timeout: Duration::from_secs(5),
        ..RedisConfig::default()
    };
    let store = Arc::new(
        RedisStore::connect(&config, "fill".into())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let before = used_memory(&urls).await?;
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let sample = phone(0, args.classes, now_ms);
    println!(
        "record: {} bytes postcard-equivalent subscription, {} classes, {} in flight",
        postcard::to_allocvec(&sample).map(|v| v.len()).unwrap_or(0),
        args.classes,
        args.concurrency
    );
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut jobs = tokio::task::JoinSet::new();
    let mut failed = 0u64;
    for n in 0..args.count {
        let permit = permits.clone().acquire_owned().await?;
        let store = Arc::clone(&store);
        let sub = phone(n, args.classes, now_ms);
        jobs.spawn(async move {
            let _permit = permit;
            store.insert(sub).await
        });
        while let Some(r) = jobs.try_join_next() {
            failed += u64::from(!matches!(r, Ok(Ok(_))));
        }
        if n > 0 && n % 100_000 == 0 {
            eprintln!(
                "  {n} loaded, {:.0}/s",
                n as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(r) = jobs.join_next().await {
        failed += u64::from(!matches!(r, Ok(Ok(_))));
    }
    let elapsed = started.elapsed();
    let after = used_memory(&urls).await?;
    let held = store.count().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded = args.count - failed;
    println!(
        "loaded {loaded} subscriptions in {:.1} s ({:.0}/s); {failed} failed; store counts {held}",
        elapsed.as_secs_f64(),
        loaded as f64 / elapsed.as_secs_f64()
    );
    println!(
        "redis used_memory: {before} -> {after} bytes; {:.1} bytes per subscription",
        (after.saturating_sub(before)) as f64 / loaded.max(1) as f64
    );
    if failed > 0 {
        bail!("{failed} inserts failed");
    }
    Ok(())
}

//! Redis connections for the stores that live in Redis: the notifier tier's subscriptions and
//! the content tier's documents.
//!
//! * [`RedisConfig`]: the `[redis]` table (standalone server or Cluster seeds, key prefix,
//!   timeouts, lease TTL of the notifier tier).
//! * [`Conn`]: one multiplexed connection, standalone or Cluster, behind one type.
//! * [`classify`] and [`is_script_error`]: what a Redis error means for the caller (retry
//!   later, or a fault).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisFuture, Value};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/` of a standalone server, or seed nodes of a Cluster.
    pub urls: Vec<String>,
    /// Use the Cluster protocol (slot routing, redirects).
    pub cluster: bool,
    /// Prefix of every key, so several deployments can share a Redis.
    pub prefix: String,
    /// How long a partition lease lasts without renewal: the takeover time after a node dies
    /// is at most this plus one tick (a third of it).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Per-command timeout and connect timeout: past it the SUBSCRIBE gets 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Replicas that must have a subscription write (a new subscription, a refresh) before
    /// it is acknowledged (`WAIT`): an answered SUBSCRIBE then survives a failover to one of
    /// them. 0: acknowledge once the master has it (asynchronous replication).
    pub wait_replicas: u32,
    /// How long a write waits for `wait_replicas`; past it the SUBSCRIBE gets 503 (the
    /// write stays on the master). Below `timeout`, which bounds the whole command.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: false,
            prefix: "uaprof".into(),
            lease_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            wait_replicas: 0,
            // A replica on the same network acknowledges within milliseconds; a quarter of
            // the command timeout leaves the rest for the write itself.
            wait_timeout: Duration::from_millis(250),
        }
    }
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("redis.urls is empty".into());
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err("several redis.urls need redis.cluster = true".into());
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err("redis.prefix must be non-empty and without braces".into());
        }
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout >= self.timeout)
        {
            return Err("redis.wait_timeout must be above zero and below redis.timeout".into());
        }
        if self.lease_ttl < Duration::from_millis(600) {
            return Err("redis.lease_ttl must be at least 600ms".into());
        }
        for u in &self.urls {
            redis::Client::open(u.as_str()).map_err(|e| format!("redis url {u}: {e}"))?;
        }
        Ok(())
    }
}

/// What a failed Redis call means to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisFailure {
    /// Transport failures and the replies of a Redis that is starting, failing over or busy:
    /// retry later (a phone gets 503, a consumer backs off).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a fault that repeating will not fix.
    #[error("redis error: {0}")]
    Fault(String),
}

/// Classifies `e` by retryability.
pub fn classify(e: &RedisError) -> RedisFailure {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "BUSY")
        );
    if transient {
        RedisFailure::Unavailable(e.to_string())
    } else {
        RedisFailure::Fault(e.to_string())
    }
}

/// Whether `e` is the error reply `code` raised by one of our scripts (Redis reports a
/// script's `error_reply` as a generic response error carrying the text).
pub fn is_script_error(e: &RedisError, code: &str) -> bool {
    e.code() == Some(code) || e.detail() == Some(code) || e.to_string().ends_with(code)
}

/// One multiplexed connection: concurrent callers' commands are pipelined on it, so a
/// node's throughput is not one round trip per request. Cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects, failing if Redis cannot be reached within the configured timeout. The
    /// connection re-establishes itself after failures.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        if config.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(config.urls.clone())
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(2)
                .build()?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        } else {
            let url = config.urls.first().map(String::as_str).unwrap_or_default();
            let client = redis::Client::open(url)?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Ok(Self::Single(
                ConnectionManager::new_with_config(client, cfg).await?,
            ))
        }
    }
}

impl Conn {
    /// Waits up to `timeout` until `replicas` replicas of the master holding `key` have
    /// every write this connection made to it (`WAIT`), and returns how many have. The
    /// write must have gone over this connection (clones share it).
    pub async fn wait_replicas(
        &mut self,
        key: &[u8],
        replicas: u32,
        timeout: Duration,
    ) -> Result<u32, RedisError> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let v = match self {
            Conn::Single(c) => cmd.query_async::<Value>(c).await?,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let to = SingleNodeRoutingInfo::SpecificNode(route);
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await?
            }
        };
        Ok(redis::from_redis_value(v)?)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

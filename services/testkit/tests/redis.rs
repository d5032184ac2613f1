//! The harness against real redis-server processes (needs redis-server and redis-cli on PATH).

use testkit::{RedisCluster, RedisServer, free_port, try_redis_cli};

#[test]
fn free_port_leaves_room_for_the_cluster_bus() {
    let a = free_port();
    let b = free_port();
    assert_ne!(a, b);
    for port in [a, b] {
        assert!(port <= 55_535, "{port}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        assert!(std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok());
    }
}

#[test]
fn standalone_answers_and_stores() {
    let redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
    assert!(redis.info_memory_used() > 0);
    // Persistence is off.
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendonly"]).trim(),
        "appendonly\nno"
    );
    assert_eq!(redis.cli(&["CONFIG", "GET", "save"]).trim(), "save");
}

#[test]
fn extra_args_apply_and_survive_restart() {
    let mut redis = RedisServer::start_with(&["--maxmemory", "10mb"]);
    assert_eq!(redis_config(&redis, "maxmemory"), "10485760");
    redis.restart();
    assert_eq!(redis_config(&redis, "maxmemory"), "10485760");
}

fn redis_config(redis: &RedisServer, name: &str) -> String {
    let out = redis.cli(&["CONFIG", "GET", name]);
    out.lines().nth(1).unwrap_or_default().trim().to_owned()
}

#[test]
fn stop_then_restart_on_the_same_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.cli(&["SET", "k", "v"]);
    redis.stop();
    assert!(
        redis.try_cli(&["PING"]).is_err(),
        "stopped server still answers"
    );
    assert!(try_redis_cli(port, &["PING"]).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    // No persistence: a restart starts empty.
    assert_eq!(redis.cli(&["EXISTS", "k"]).trim(), "0");
}

#[test]
fn drop_kills_the_server() {
    let redis = RedisServer::start();
    let port = redis.port();
    drop(redis);
    assert!(try_redis_cli(port, &["PING"]).is_err());
}

#[test]
fn cluster_of_three_masters() {
    let cluster = RedisCluster::start(3);
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        cluster.urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
    );
    for &port in &ports {
        let info = testkit::redis_cli(port, &["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_known_nodes:3"), "{port}: {info}");
    }
    let nodes = testkit::redis_cli(ports[0], &["CLUSTER", "NODES"]);
    let masters = nodes.lines().filter(|l| l.contains("master")).count();
    assert_eq!(masters, 3, "{nodes}");

    // -c follows MOVED, so any node accepts any key.
    for &port in &ports {
        let set = testkit::redis_cli(port, &["-c", "SET", "{a}x", "1"]);
        assert_eq!(set.trim(), "OK", "{port}");
    }
    assert_eq!(cluster.cli(&["GET", "{a}x"]).trim(), "1");
    assert!(cluster.info_memory_used_total() > 0);
}

//! Test support: real `redis-server` processes and a real Kafka-protocol broker on loopback.
//!
//! * [`kafka`]: [`KafkaBroker`] (tansu) and the test virtualenv's [`kafka::python`].
//! * [`pki`]: a CA and the certificates it issues, made at test time.
//!
//! [`RedisServer`] is one standalone server, [`RedisCluster`] is N cluster masters joined with
//! `redis-cli --cluster create`. Each runs on free ports of 127.0.0.1 with its data directory and
//! log in a temporary directory, persistence off, and is killed when dropped.
//!
//! The binaries `redis-server` and `redis-cli` must be on `PATH`; `deploy/install-test-deps.sh`
//! installs them (Debian `redis-server` and `redis-tools`). When they are missing every
//! constructor panics with that hint: tests that need Redis never silently skip.
//!
//! Everything here panics with a descriptive message instead of returning errors, because it is
//! only ever used from tests.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod kafka;
pub mod pki;
pub use kafka::KafkaBroker;

const HOST: &str = "127.0.0.1";
/// Redis Cluster's bus listens on the client port plus this offset.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// How long a started server gets to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a freshly created cluster gets to report `cluster_state:ok` on every node.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Attempts at starting on a fresh port when the chosen one was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// Ports handed out by this process (client and cluster-bus ports), never handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn handed_out() -> MutexGuard<'static, BTreeSet<u16>> {
    HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A free TCP port on 127.0.0.1 that also suits Redis Cluster: it is at most 55535 and
/// `port + 10000` (the cluster bus) is free as well. The port is found by binding port 0 and
/// reading the assigned port, then the listener is dropped; no port (or bus port) is returned
/// twice within one process.
pub fn free_port() -> u16 {
    for _ in 0..10_000 {
        let listener = match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => listener,
            Err(e) => panic!("testkit: cannot bind {HOST}:0 to find a free port: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => panic!("testkit: local_addr of a bound listener: {e}"),
        };
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        let mut taken = handed_out();
        if taken.contains(&port) || taken.contains(&bus) {
            continue;
        }
        if !can_bind(bus) {
            continue;
        }
        drop(listener);
        taken.insert(port);
        taken.insert(bus);
        return port;
    }
    panic!("testkit: found no free port p <= 55535 on {HOST} with p+10000 also free");
}

pub(crate) fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Panics with the install hint unless `redis-server` and `redis-cli` are both on `PATH`.
fn require_redis_tools() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        for tool in ["redis-server", "redis-cli"] {
            if find_on_path(tool).is_none() {
                return Err(format!(
                    "{tool} not found: run `bash deploy/install-test-deps.sh` \
                     (installs the Debian packages redis-server and redis-tools)"
                ));
            }
        }
        Ok(())
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...`; stdout on success, otherwise a description of
/// the failure (exit status and stderr). Note that redis-cli reports some error *replies* on
/// stdout with a zero exit status, so callers check the text too.
pub fn try_redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    require_redis_tools();
    let port_arg = port.to_string();
    let output = Command::new("redis-cli")
        .args(["-h", HOST, "-p", &port_arg])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "redis-cli -p {port} {args:?} failed ({}): stderr: {} stdout: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        ))
    }
}

/// Like [`try_redis_cli`], panicking (with redis-cli's stderr) when it fails.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    try_redis_cli(port, args).unwrap_or_else(|e| panic!("testkit: {e}"))
}

fn ping(port: u16) -> bool {
    try_redis_cli(port, &["PING"]).is_ok_and(|out| out.trim() == "PONG")
}

/// `used_memory:` from `INFO memory` of the server on `port`.
fn used_memory(port: u16) -> u64 {
    let info = redis_cli(port, &["INFO", "memory"]);
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .map(|value| {
            value.parse().unwrap_or_else(|e| {
                panic!("testkit: redis {port}: bad used_memory value {value:?}: {e}")
            })
        })
        .unwrap_or_else(|| panic!("testkit: redis {port}: no used_memory in INFO memory:\n{info}"))
}

/// Opens `path` for appending, twice: a child's stdout and stderr.
pub(crate) fn open_log(path: &Path) -> (File, File) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("testkit: cannot open {}: {e}", path.display()));
    let log_err = log
        .try_clone()
        .unwrap_or_else(|e| panic!("testkit: cannot clone log handle: {e}"));
    (log, log_err)
}

pub(crate) fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// Why a server did not become ready.
enum NotReady {
    /// The process exited; `port_taken` when its log says the port was already in use.
    Exited {
        status: String,
        port_taken: bool,
    },
    TimedOut,
}

/// One `redis-server` process and everything needed to start it again.
struct Node {
    dir: PathBuf,
    port: u16,
    cluster: bool,
    extra: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on a free port and waits until it answers `PING`; retries on a new port
    /// when the chosen one got taken between choosing and binding.
    fn start(dir: &Path, cluster: bool, extra: &[&str]) -> Node {
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut node = Node {
                dir: dir.to_path_buf(),
                port,
                cluster,
                extra: extra.clone(),
                log: dir.join(format!("redis-{port}.log")),
                child: None,
            };
            match node.spawn_and_wait() {
                Ok(()) => return node,
                Err(NotReady::Exited {
                    port_taken: true, ..
                }) if attempt < START_ATTEMPTS => attempt += 1,
                Err(why) => node.fail(why),
            }
        }
    }

    fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let mut args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            HOST,
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.push("--dir".to_owned());
        args.push(self.dir.display().to_string());
        args.push("--dbfilename".to_owned());
        args.push(format!("dump-{port}.rdb"));
        if self.cluster {
            args.extend(["--cluster-enabled".to_owned(), "yes".to_owned()]);
            args.push("--cluster-config-file".to_owned());
            args.push(
                self.dir
                    .join(format!("nodes-{port}.conf"))
                    .display()
                    .to_string(),
            );
            args.extend(["--cluster-node-timeout".to_owned(), "2000".to_owned()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn_and_wait(&mut self) -> Result<(), NotReady> {
        require_redis_tools();
        let (log, log_err) = open_log(&self.log);
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("testkit: cannot spawn redis-server: {e}"));
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let port_taken = read_log(&self.log).contains("Address already in use");
                return Err(NotReady::Exited {
                    status: status.to_string(),
                    port_taken,
                });
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn fail(&mut self, why: NotReady) -> ! {
        self.stop();
        let what = match why {
            NotReady::Exited { status, .. } => format!("exited ({status})"),
            NotReady::TimedOut => format!("did not answer PING within {READY_TIMEOUT:?}"),
        };
        panic!(
            "testkit: redis-server on {HOST}:{} {what}; args {:?}; log {}:\n{}",
            self.port,
            self.args(),
            self.log.display(),
            read_log(&self.log)
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited; waiting reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            self.fail(why);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn url(port: u16) -> String {
    format!("redis://{HOST}:{port}/")
}

pub(crate) fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("testkit: cannot create a temporary directory: {e}"))
}

/// A standalone `redis-server` on 127.0.0.1 and a free port, persistence off, data and log in a
/// temporary directory. Killed on drop.
pub struct RedisServer {
    node: Node,
    // Dropped after `node`, so the process is gone before its directory is removed.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING` (panics after ~10 s, with its log).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], appending `extra_args` (e.g. `["--maxmemory", "10mb"]`) to
    /// the command line; they override the defaults and are reused by [`RedisServer::restart`].
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        require_redis_tools();
        let dir = temp_dir("testkit-redis-");
        let node = Node::start(dir.path(), false, extra_args);
        RedisServer { node, dir }
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        url(self.node.port)
    }

    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// The temporary directory holding the data directory and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (stdout and stderr of every run on this port).
    pub fn log(&self) -> String {
        read_log(&self.node.log)
    }

    /// Kills the server and waits for it to exit. No-op when already stopped.
    pub fn stop(&mut self) {
        self.node.stop();
    }

    /// Starts the server again on the same port with the same arguments (stopping it first if it
    /// is running) and waits until it answers `PING`. With persistence off it starts empty.
    pub fn restart(&mut self) {
        self.node.restart();
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub fn info_memory_used(&self) -> u64 {
        used_memory(self.node.port)
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its stdout; panics with stderr on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.node.port, args)
    }

    /// Like [`RedisServer::cli`], returning the failure instead of panicking.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        try_redis_cli(self.node.port, args)
    }
}

/// A Redis Cluster of N masters (no replicas) on 127.0.0.1, each on a free port whose cluster
/// bus port (port + 10000) is free too, persistence off, data, node configs and logs in a
/// temporary directory. All nodes are killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    // Dropped after `nodes`, so the processes are gone before their directory is removed.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts `masters` cluster nodes, joins them with `redis-cli --cluster create` and waits
    /// until every node reports `cluster_state:ok` (panics after ~20 s, with the logs).
    /// Redis needs at least 3 masters for `--cluster create`.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, &[])
    }

    /// Like [`RedisCluster::start`], appending `extra_args` to every node's command line.
    pub fn start_with(masters: usize, extra_args: &[&str]) -> RedisCluster {
        require_redis_tools();
        assert!(
            masters >= 3,
            "testkit: redis-cli --cluster create needs at least 3 masters, got {masters}"
        );
        let dir = temp_dir("testkit-redis-cluster-");
        let nodes = (0..masters)
            .map(|_| Node::start(dir.path(), true, extra_args))
            .collect();
        let cluster = RedisCluster { nodes, dir };
        cluster.create();
        cluster.wait_ok();
        cluster
    }

    fn create(&self) {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{HOST}:{}", node.port))
            .collect();
        let mut command = Command::new("redis-cli");
        command
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null());
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run redis-cli --cluster create: {e}"));
        if !output.status.success() {
            panic!(
                "testkit: redis-cli --cluster create {} failed ({}):\nstdout:\n{}\nstderr:\n{}\n{}",
                addrs.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.logs()
            );
        }
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        loop {
            let all_ok = self.nodes.iter().all(|node| {
                try_redis_cli(node.port, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
            });
            if all_ok {
                return;
            }
            if Instant::now() >= deadline {
                let infos: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|node| {
                        let info =
                            try_redis_cli(node.port, &["CLUSTER", "INFO"]).unwrap_or_else(|e| e);
                        format!("--- CLUSTER INFO of {}:\n{info}", node.port)
                    })
                    .collect();
                panic!(
                    "testkit: cluster on {:?} not cluster_state:ok within {CLUSTER_OK_TIMEOUT:?}\n{}\n{}",
                    self.ports(),
                    infos.join("\n"),
                    self.logs()
                );
            }
            thread::sleep(POLL_INTERVAL * 4);
        }
    }

    /// All nodes' logs, each under a header line.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- {}:\n{}", node.log.display(), read_log(&node.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `redis://127.0.0.1:PORT/` of every master, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| url(node.port)).collect()
    }

    /// The client port of every master, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The temporary directory holding the nodes' data, `nodes-PORT.conf` files and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sum of `used_memory` from `INFO memory` over all masters, in bytes.
    pub fn info_memory_used_total(&self) -> u64 {
        self.nodes.iter().map(|node| used_memory(node.port)).sum()
    }

    /// Runs `redis-cli -c -p PORT ARGS...` against the first master (`-c` follows
    /// MOVED/ASK redirections) and returns its stdout; panics with stderr on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut with_c = vec!["-c"];
        with_c.extend_from_slice(args);
        redis_cli(self.ports()[0], &with_c)
    }
}

//! A real Kafka-protocol broker for tests: tansu, on a free loopback port, storing its log in
//! an SQLite file in a temporary directory so that a restart keeps every record.
//!
//! `tansu` must be on `PATH` or in `~/.cargo/bin`; `deploy/install-test-deps.sh` installs it
//! (`cargo install tansu --features dynostore,libsql`). Missing, every constructor panics with
//! that hint: Kafka tests never silently skip.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{POLL_INTERVAL, free_port, open_log, read_log, temp_dir};

/// How long a started broker gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The tansu binary: `$TANSU`, then `PATH`, then `~/.cargo/bin/tansu`.
pub fn tansu_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(p) = crate::find_on_path("tansu") {
        return p;
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match cargo_home.map(|c| c.join("bin/tansu")) {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "tansu not found: run `bash deploy/install-test-deps.sh` \
             (cargo install tansu --features dynostore,libsql)"
        ),
    }
}

/// One tansu broker. Killed on drop; its storage goes with the temporary directory.
pub struct KafkaBroker {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    // Dropped last, after the process is gone.
    dir: TempDir,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let dir = temp_dir("uaprof-kafka-");
        let port = free_port();
        let mut broker = KafkaBroker {
            port,
            log: dir.path().join("tansu.log"),
            child: None,
            dir,
        };
        broker.spawn_and_wait();
        broker
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Kills the broker (`SIGKILL`); its records stay in the storage file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    fn spawn_and_wait(&mut self) {
        let (log, log_err) = open_log(&self.log);
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu resolves an sqlite:// path against its working directory.
        let child = Command::new(tansu_path())
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("testkit: cannot spawn tansu: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "testkit: tansu on port {} exited ({status}); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "testkit: tansu on port {} not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python interpreter of the test virtualenv that `deploy/install-test-deps.sh` fills
/// with `confluent-kafka` and `protobuf` (for producers this project did not write):
/// `$UAPROF_VENV/bin/python`, default `~/.cache/uaprof/venv`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("UAPROF_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/uaprof/venv")))
        .unwrap_or_else(|| PathBuf::from(".venv"));
    let py = venv.join("bin/python");
    assert!(
        py.is_file(),
        "{} not found: run `bash deploy/install-test-deps.sh` (creates the test virtualenv \
         with confluent-kafka and protobuf)",
        py.display()
    );
    py
}

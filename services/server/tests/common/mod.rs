//! Test harness: the real `uaprof` binary on loopback ports chosen by the kernel, a small
//! blocking SIP client, and a minimal HTTP/1.1 client. Nothing here is mocked.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// SIP over TLS, when configured (`[notifier.tls]`).
    pub tls: Option<SocketAddr>,
    pub http: SocketAddr,
    /// HTTP/3 (UDP), when configured (`http3_listen`).
    pub http3: Option<SocketAddr>,
    /// The provisioning API.
    pub provision: SocketAddr,
    pub admin: SocketAddr,
    /// Content tier gRPC (`--grpc`), when served.
    pub grpc: Option<SocketAddr>,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut s = Self::start_in(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts on an existing data directory (restart tests).
    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        let log = std::env::var("UAPROF_TEST_LOG").unwrap_or_else(|_| "warn".into());
        Self::spawn(data, "127.0.0.1:0", extra, &log, Stdio::inherit())
    }

    /// Starts with SIP over UDP on `udp` instead of a loopback port.
    pub fn start_udp(udp: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let log = std::env::var("UAPROF_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let mut s = Self::spawn(&data, udp, extra, &log, Stdio::inherit());
        s._tmp = Some(tmp);
        s
    }

    /// Starts with stderr written to `data`'s sibling file `stderr.log` (log format tests),
    /// at the given log filter; returns the server and the file's path.
    pub fn start_logged(extra: &[&str], filter: &str) -> (Server, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let path = tmp.path().join("stderr.log");
        let file = std::fs::File::create(&path).expect("stderr file");
        let mut s = Self::spawn(&data, "127.0.0.1:0", extra, filter, Stdio::from(file));
        s._tmp = Some(tmp);
        (s, path)
    }

    fn spawn(data: &Path, udp: &str, extra: &[&str], log: &str, stderr: Stdio) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uaprof"));
        cmd.args([
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--sip-udp",
            udp,
            "--sip-tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--provision",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--fsync",
            "false",
            // UAPROF_TEST_LOG=notifier::fanout=debug and the like, when debugging a test.
            "--log",
            log,
        ])
        .args(extra)
        .env_remove("UAPROF_CONFIG")
        .stdout(Stdio::piped())
        .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn uaprof");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("uaprof ready:") => break l,
                Some(Ok(_)) => continue,
                _ => panic!("uaprof exited before it was ready"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // A role serves only some of these; an absent one reads as 0.0.0.0:0.
        let opt = |name: &str| -> Option<SocketAddr> {
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))?;
            let v = v
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_start_matches("udp://");
            Some(v.parse().expect("address"))
        };
        let field = |name: &str| opt(name).unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        Server {
            udp: field("sip-udp"),
            tcp: field("sip-tcp"),
            tls: opt("sip-tls"),
            http: field("http"),
            http3: opt("http3"),
            provision: field("provision"),
            admin: field("admin"),
            grpc: opt("grpc"),
            data: data.to_owned(),
            child: Some(child),
            _tmp: None,
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("uaprof did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the node dies with no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// Keeps the data directory alive beyond this server (for restarts).
    pub fn take_tmp(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    pub fn metric(&self, name_prefix: &str) -> f64 {
        let (_, body) = http(self.admin, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(name_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// [`Self::metric`] once it reaches `at_least`, or what it is after `within` (what
    /// follows a phone's answer is counted a moment after the phone sent it).
    pub fn metric_reaching(&self, name_prefix: &str, at_least: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name_prefix);
            if v >= at_least || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed SIP message, good enough for assertions.
#[derive(Debug, Clone)]
pub struct Msg {
    pub raw: String,
    pub first: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn parse(bytes: &[u8]) -> Msg {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], bytes[i + 4..].to_vec()),
            None => (&text[..], Vec::new()),
        };
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Msg {
            raw: text,
            first,
            headers,
            body,
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.first
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.split(' ').next())
            .and_then(|c| c.parse().ok())
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.first.starts_with(&format!("{method} "))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn cseq(&self) -> u32 {
        self.header("CSeq")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("CSeq")
    }

    pub fn tag(&self, header: &str) -> Option<String> {
        self.header(header)?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("tag="))
            .map(str::to_owned)
    }

    /// A 200 OK for this request (copies Via, From, To, Call-ID, CSeq).
    pub fn response(&self, status: u16, reason: &str) -> String {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for v in self.headers_named(name) {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(1);

pub fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() << 12)
}

/// A SIP phone: sends over UDP what it is told, receives with a timeout. Like every RFC 3261
/// UA it also listens on TCP at the same port, since NOTIFYs over 1300 bytes come that way
/// (§18.1.1); what arrives on TCP is received like a datagram and answered on its connection.
pub struct Phone {
    pub sock: UdpSocket,
    tcp: PhoneTcp,
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub to_tag: Option<String>,
    pub uri: String,
}

pub struct Sub<'a> {
    pub event: &'a str,
    pub expires: Option<u32>,
    pub accept: Option<&'a str>,
    pub extra: &'a str,
}

impl Default for Sub<'_> {
    fn default() -> Self {
        Sub {
            event: "ua-profile;profile-type=device;vendor=\"acme\";model=\"Z100\";version=\"1.0\"",
            expires: Some(3600),
            accept: Some("message/external-body, application/x-acme+xml"),
            extra: "",
        }
    }
}

impl Phone {
    pub fn new(server: SocketAddr, uri_user: &str) -> Phone {
        // The TCP port must match the UDP one; an ephemeral UDP port is almost always free on
        // TCP as well, and a few tries make "almost" certain.
        let (sock, tcp) = (0..20)
            .find_map(|_| {
                let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let local = sock.local_addr().expect("addr");
                PhoneTcp::listen(local).map(|tcp| (sock, tcp))
            })
            .expect("a port free on both UDP and TCP");
        let local = sock.local_addr().expect("addr");
        let n = unique();
        Phone {
            sock,
            tcp,
            server,
            local,
            call_id: format!("call-{n}@test"),
            from_tag: format!("ft{n}"),
            cseq: 0,
            to_tag: None,
            uri: format!("sip:{uri_user}@example.com"),
        }
    }

    pub fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .expect("send");
    }

    pub fn subscribe_text(&mut self, s: &Sub<'_>, branch: &str) -> String {
        self.cseq += 1;
        let to = match &self.to_tag {
            Some(t) => format!("<{}>;tag={t}", self.uri),
            None => format!("<{}>", self.uri),
        };
        let mut m = format!(
            "SUBSCRIBE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <{uri}>;tag={ft}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:phone@{local}>\r\nEvent: {event}\r\n",
            uri = self.uri,
            local = self.local,
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            event = s.event,
        );
        if let Some(e) = s.expires {
            m.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = s.accept {
            m.push_str(&format!("Accept: {a}\r\n"));
        }
        m.push_str(s.extra);
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    /// Sends a SUBSCRIBE and returns the final response (NOTIFYs arriving first are kept).
    pub fn subscribe(&mut self, s: &Sub<'_>) -> (Msg, Vec<Msg>) {
        let branch = format!("z9hG4bK{}", unique());
        let text = self.subscribe_text(s, &branch);
        self.send(&text);
        let mut early = Vec::new();
        loop {
            let m = self
                .recv(Duration::from_secs(10))
                .expect("final response to SUBSCRIBE");
            match m.status() {
                Some(st) if st >= 200 => {
                    if self.to_tag.is_none() && st < 300 {
                        self.to_tag = m.tag("To");
                    }
                    return (m, early);
                }
                Some(_) => continue,
                None => early.push(m),
            }
        }
    }

    pub fn recv(&self, timeout: Duration) -> Option<Msg> {
        self.recv_from(timeout).map(|(m, _)| m)
    }

    /// Receives one message and who sent it (in a tier, NOTIFYs come from any node).
    /// A message that came over TCP names the connection's peer as its sender; answer it
    /// with [`Phone::reply`], which writes on that connection.
    pub fn recv_from(&self, timeout: Duration) -> Option<(Msg, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Ok(got) = self.tcp.inbound.try_recv() {
                return Some(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Short slices, so a message on TCP is not stuck behind a long UDP wait.
            let slice = left.min(Duration::from_millis(20));
            self.sock.set_read_timeout(Some(slice)).expect("timeout");
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                return Some((Msg::parse(&buf[..n]), from));
            }
        }
    }

    /// True when `from` (as [`Phone::recv_from`] named it) is one of the phone's TCP peers.
    pub fn came_over_tcp(&self, from: SocketAddr) -> bool {
        self.tcp.conns.lock().expect("conns").contains_key(&from)
    }

    /// Sends `text` back to `to`: on the TCP connection it came from, or over UDP.
    pub fn reply(&self, text: &str, to: SocketAddr) {
        let conn = self
            .tcp
            .conns
            .lock()
            .expect("conns")
            .get(&to)
            .map(|c| c.try_clone());
        match conn {
            Some(Ok(mut c)) => c.write_all(text.as_bytes()).expect("answer over TCP"),
            _ => {
                self.sock.send_to(text.as_bytes(), to).expect("send");
            }
        }
    }

    /// Waits for the next NOTIFY (answering it with `status`), skipping other messages.
    pub fn expect_notify(&self, timeout: Duration, status: u16) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no NOTIFY within {timeout:?}");
            if let Some((m, from)) = self.recv_from(left)
                && m.is_request("NOTIFY")
            {
                let reply = m.response(status, if status == 200 { "OK" } else { "Error" });
                self.reply(&reply, from);
                return m;
            }
        }
    }

    /// Asserts nothing but (optionally) retransmissions arrives for `d`.
    pub fn expect_silence(&self, d: Duration) -> Option<Msg> {
        self.recv(d)
    }
}

/// The TCP side of a [`Phone`]: a listener on the phone's port whose connections' messages
/// are framed (by Content-Length) into `inbound`.
struct PhoneTcp {
    inbound: std::sync::mpsc::Receiver<(Msg, SocketAddr)>,
    conns: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<SocketAddr, TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    local: SocketAddr,
}

impl PhoneTcp {
    fn listen(local: SocketAddr) -> Option<PhoneTcp> {
        let listener = std::net::TcpListener::bind(local).ok()?;
        let (tx, inbound) = std::sync::mpsc::channel();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (conns2, stop2) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                conns2.lock().expect("conns").insert(peer, writer);
                let tx = tx.clone();
                std::thread::spawn(move || read_frames(stream, peer, tx));
            }
        });
        Some(PhoneTcp {
            inbound,
            conns,
            stop,
            local,
        })
    }
}

impl Drop for PhoneTcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag and lets the listener go.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(200));
    }
}

/// Reads Content-Length-framed SIP messages off one connection until it closes.
fn read_frames(
    mut stream: TcpStream,
    peer: SocketAddr,
    tx: std::sync::mpsc::Sender<(Msg, SocketAddr)>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let body_len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + body_len;
            if buf.len() < total {
                break;
            }
            let frame: Vec<u8> = buf.drain(..total).collect();
            // Keep-alive CRLFs before a message are not part of it (RFC 5626).
            let Some(start) = frame.iter().position(|b| !matches!(b, b'\r' | b'\n')) else {
                continue;
            };
            if tx.send((Msg::parse(&frame[start..]), peer)).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs `phone` until `until`, answering every NOTIFY 200 to whichever node sent it, and
/// hands each new NOTIFY (retransmissions folded) to `seen`.
pub fn answer_notifies(phone: &Phone, until: Instant, mut seen: impl FnMut(Msg)) {
    let mut last = (String::new(), 0);
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        let Some((m, from)) = phone.recv_from(left.min(Duration::from_millis(200))) else {
            continue;
        };
        if !m.is_request("NOTIFY") {
            continue;
        }
        phone.reply(&m.response(200, "OK"), from);
        let id = (m.header("Via").unwrap_or_default().to_owned(), m.cseq());
        if id == last {
            continue; // a retransmission of the NOTIFY just answered
        }
        last = id;
        seen(m);
    }
}

/// The `/profiles/...` path of the URL in a `message/external-body` Content-Type.
pub fn profile_path(ctype: &str) -> String {
    let url = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("URL="))
        .map(|u| u.trim_matches('"'))
        .expect("URL");
    url[url.find("/profiles/").expect("path")..].to_owned()
}

/// Minimal HTTP/1.1 client: one request per connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (st, _, body) = http_full(addr, method, path, headers, body);
    (st, body)
}

pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if hdrs
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, hdrs, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
}

/// Writes a URL-signing secret into `dir` and returns the `[content]` table that uses it.
pub fn url_signing_toml(dir: &Path) -> String {
    let key = dir.join("url-key");
    std::fs::write(&key, "a-secret-of-at-least-thirty-two-bytes\n").expect("write");
    format!(
        "[content]\nurl_signing_key_files = [{:?}]\n",
        key.to_str().expect("path")
    )
}

/// Makes `aor` the default user of device `mac` through the provisioning API; the status.
pub fn set_default_user(server: &Server, mac: &str, aor: &str) -> u16 {
    let body = format!("{{\"default_user\": \"{aor}\"}}");
    http(
        server.provision,
        "PUT",
        &format!("/provision/v1/device/{mac}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .0
}

/// Provisions a document through the API; returns the HTTP status.
pub fn put_doc(server: &Server, kind: &str, id: &str, name: &str, ctype: &str, body: &[u8]) -> u16 {
    let path = format!("/provision/v1/{kind}/{id}/documents/{name}");
    http(
        server.provision,
        "PUT",
        &path,
        &[("Content-Type", ctype)],
        body,
    )
    .0
}

/// A node of a tier: `role` with the shared Redis and the test's config file.
pub fn tier_node(role: &str, redis: &str, cfg: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--role",
        role,
        "--redis",
        redis,
        "--config",
        cfg.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Waits (bounded) until the live nodes hold every partition between them, each some;
/// returns how long that took.
pub fn wait_for_full_ownership(nodes: &[&Server]) -> Duration {
    let started = Instant::now();
    loop {
        let held: Vec<f64> = nodes
            .iter()
            .map(|n| n.metric("notifier_partitions_owned"))
            .collect();
        if held.iter().sum::<f64>() == 256.0 && held.iter().all(|h| *h > 0.0) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "partitions never fully owned: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a config file for one test: Kafka topics and groups unique to it (a broker shared
/// by tests never mixes their records, and no consumer group outlives its test), plus
/// `extra` TOML. Returns the path, inside `dir`.
pub fn kafka_config(dir: &Path, brokers: &str, extra: &str) -> PathBuf {
    let n = unique();
    let text = format!(
        "{extra}\n[kafka]\nbrokers = \"{brokers}\"\nallowed_producers = [\"oss-test\", \"uaprof-storm\"]\n\
         [kafka.topics]\nchanges = \"t{n}.changes\"\napplied = \"t{n}.applied\"\n\
         dead_letter = \"t{n}.dlq\"\n[kafka.groups]\ncontent = \"g{n}.content\"\n\
         notifier = \"g{n}.notifier\"\n\
         # tansu holds every fetch for fetch.wait.max.ms even when records arrive (a broker\n\
         # answers at once), so the tests poll it more often than production would.\n\
         [kafka.properties]\n\"fetch.wait.max.ms\" = \"20\"\n"
    );
    let path = dir.join(format!("kafka-{n}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A topic name from a config written by [`kafka_config`].
pub fn topic(config: &Path, which: &str) -> String {
    let text = std::fs::read_to_string(config).expect("read config");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{which} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {which} in {}", config.display()))
        .to_owned()
}

pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

/// Reads `want` whole SIP messages from a stream (TCP or TLS), framing by Content-Length.
pub fn read_stream_msgs(s: &mut impl Read, want: usize) -> Vec<Msg> {
    let (mut got, mut msgs, mut buf) = (Vec::new(), Vec::new(), [0u8; 8192]);
    while msgs.len() < want {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let m = Msg::parse(&got[..end + 4]);
            let len: usize = m
                .header("Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if got.len() < end + 4 + len {
                break;
            }
            msgs.push(Msg::parse(&got[..end + 4 + len]));
            got.drain(..end + 4 + len);
        }
    }
    msgs
}

/// A certificate for "localhost" made for the test, written as `tls.crt` and `tls.key` in
/// `dir`; returns it with the two paths.
pub fn localhost_cert(dir: &Path) -> (rcgen::CertifiedKey<rcgen::KeyPair>, PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).expect("write");
    std::fs::write(&key, cert.signing_key.serialize_pem()).expect("write");
    (cert, crt, key)
}

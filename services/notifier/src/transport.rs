//! SIP transports: UDP and TCP listeners feeding one engine, and the sending side.
//!
//! Listeners parse on their own task (parsing is the bulk of per-message CPU, and this spreads
//! it over the runtime's workers), answer unparseable requests with `400` themselves, and hand
//! parsed messages to the engine through a bounded channel. When that channel is full the
//! listener sheds: a request gets `503` with a randomised `Retry-After`, anything else is
//! dropped and counted. Nothing here spawns a task per datagram.
//!
//! TLS is a third listener of the same shape (a `TlsAcceptor` in front of [`serve_stream`]);
//! the `Transport::Tls` variant and the reliable-transport timer rules already cover it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use metrics::counter;
use sip_core::message;
use sip_core::transport::{Peer, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::wire::EngineMsg;

/// Outbound messages queued per TCP connection. A peer that does not read 256 messages is
/// stuck; further messages to it are dropped (and counted) rather than buffered without end.
const TCP_WRITE_QUEUE: usize = 256;

/// Idle TCP connections are closed after this long without traffic in either direction
/// (phones refresh hourly at most and reconnect as needed; keepalive CRLFs count as traffic).
const TCP_IDLE: Duration = Duration::from_secs(600);

/// A write that has not completed in this long means the peer stopped reading (its receive
/// window is closed): the connection is closed and its slot freed, instead of the task waiting
/// in the write for ever while the queue behind it fills.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends SIP messages to peers over whichever transport the peer uses.
pub struct Outbound {
    udp: Option<Arc<UdpSocket>>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    /// Bounds concurrent outbound connection attempts and open connections we own.
    tcp_slots: Arc<Semaphore>,
    engine: mpsc::Sender<EngineMsg>,
    shutdown: CancellationToken,
}

impl Outbound {
    pub fn new(
        udp: Option<Arc<UdpSocket>>,
        max_tcp_connections: usize,
        engine: mpsc::Sender<EngineMsg>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            udp,
            tcp: Mutex::new(HashMap::new()),
            tcp_slots: Arc::new(Semaphore::new(max_tcp_connections)),
            engine,
            shutdown,
        })
    }

    /// Sends without waiting. Failures are counted; SIP's retransmission and transaction
    /// timeouts deal with the loss.
    pub fn send(self: &Arc<Self>, peer: Peer, bytes: Bytes) {
        match peer.transport {
            Transport::Udp => {
                let Some(sock) = &self.udp else {
                    counter!("sip_send_errors_total", "transport" => "udp", "reason" => "no_socket")
                        .increment(1);
                    return;
                };
                if let Err(e) = sock.try_send_to(&bytes, peer.addr) {
                    debug!(%e, to = %peer.addr, "udp send failed");
                    counter!("sip_send_errors_total", "transport" => "udp", "reason" => "io")
                        .increment(1);
                }
            }
            Transport::Tcp | Transport::Tls => self.send_stream(peer, bytes),
        }
    }

    fn send_stream(self: &Arc<Self>, peer: Peer, bytes: Bytes) {
        let existing = self.tcp_conn(peer.addr);
        if let Some(tx) = existing {
            match tx.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counter!("sip_send_errors_total", "transport" => "tcp", "reason" => "queue_full")
                        .increment(1);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(b)) => {
                    self.forget(peer.addr);
                    return self.connect_and_send(peer, b);
                }
            }
        }
        self.connect_and_send(peer, bytes);
    }

    fn tcp_conn(&self, addr: SocketAddr) -> Option<mpsc::Sender<Bytes>> {
        self.tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
    }

    fn forget(&self, addr: SocketAddr) {
        self.tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }

    /// Whether a stream connection to `addr` is open (NOTIFYs prefer an existing flow).
    pub fn has_stream(&self, addr: SocketAddr) -> bool {
        self.tcp_conn(addr).is_some_and(|tx| !tx.is_closed())
    }

    fn connect_and_send(self: &Arc<Self>, peer: Peer, bytes: Bytes) {
        if peer.transport == Transport::Tls {
            counter!("sip_send_errors_total", "transport" => "tls", "reason" => "unsupported")
                .increment(1);
            return;
        }
        let Ok(permit) = self.tcp_slots.clone().try_acquire_owned() else {
            counter!("sip_send_errors_total", "transport" => "tcp", "reason" => "too_many_connections")
                .increment(1);
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(peer.addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    counter!("sip_send_errors_total", "transport" => "tcp", "reason" => "connect")
                        .increment(1);
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
            let _ = tx.try_send(bytes);
            let (rd, wr) = stream.into_split();
            this.run_stream(rd, wr, peer.addr, Transport::Tcp, tx, rx)
                .await;
        });
    }

    /// Serves one stream connection (accepted or dialled): frames inbound messages to the
    /// engine and writes queued outbound ones. Generic over the halves so that a TLS stream
    /// can share it, and so tests can drive it through an in-memory pipe.
    async fn run_stream<R, W>(
        self: Arc<Self>,
        mut rd: R,
        mut wr: W,
        addr: SocketAddr,
        transport: Transport,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, tx.clone());
        counter!("sip_tcp_connections_total").increment(1);
        let peer = Peer { transport, addr };
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut framer = message::StreamFramer::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                out = rx.recv() => match out {
                    Some(b) => match tokio::time::timeout(TCP_WRITE_TIMEOUT, wr.write_all(&b)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            counter!("sip_send_errors_total", "transport" => "tcp", "reason" => "write_timeout")
                                .increment(1);
                            debug!(%addr, "closing a TCP connection whose peer stopped reading");
                            break;
                        }
                    },
                    None => break,
                },
                n = tokio::time::timeout(TCP_IDLE, read_more(&mut rd, &mut buf)) => {
                    match n {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(_)) => {}
                    }
                    loop {
                        match framer.next_frame(&buf) {
                            Ok(Some(len)) => {
                                let frame = buf.split_to(len);
                                deliver(&self, &frame, peer);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // A stream we cannot frame cannot be resynchronised: close it.
                                counter!("sip_malformed_total", "transport" => "tcp").increment(1);
                                warn!(%addr, %e, "closing unframeable TCP stream");
                                let _ = tokio::time::timeout(TCP_WRITE_TIMEOUT, wr.shutdown()).await;
                                self.forget_if_same(addr, &tx);
                                return;
                            }
                        }
                    }
                }
            }
        }
        self.forget_if_same(addr, &tx);
    }

    fn forget_if_same(&self, addr: SocketAddr, tx: &mpsc::Sender<Bytes>) {
        let mut map = self.tcp.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&addr).is_some_and(|t| t.same_channel(tx)) {
            map.remove(&addr);
        }
    }
}

/// Reads more stream bytes, making room first (a full buffer would read as end of stream).
async fn read_more<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(8 * 1024);
    rd.read_buf(buf).await
}

/// Parses one message and hands it to the engine (or answers/sheds it here).
fn deliver(out: &Arc<Outbound>, raw: &[u8], peer: Peer) {
    match message::parse(raw) {
        Ok(mut msg) => {
            if let rsip::SipMessage::Request(req) = &mut msg {
                sip_core::via::stamp_received(req, peer.addr);
            }
            let received = std::time::Instant::now();
            match out.engine.try_send(EngineMsg::Inbound {
                msg,
                peer,
                received,
            }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(EngineMsg::Inbound { msg, peer, .. })) => {
                    counter!("sip_shed_total", "reason" => "engine_queue_full").increment(1);
                    if let rsip::SipMessage::Request(req) = msg
                        && req.method != rsip::Method::Ack
                    {
                        let resp = crate::wire::overload_response(&req);
                        let dest = sip_core::via::response_destination(&req, peer);
                        out.send(Peer { addr: dest, ..peer }, resp);
                    }
                }
                Err(_) => {}
            }
        }
        Err(e) => {
            counter!("sip_malformed_total", "transport" => transport_label(peer.transport))
                .increment(1);
            debug!(from = %peer.addr, %e, "malformed SIP message");
            if let Some((bytes, dest)) = crate::wire::bad_request_response(&e, peer) {
                out.send(Peer { addr: dest, ..peer }, bytes);
            }
        }
    }
}

fn transport_label(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

/// Receives datagrams until shutdown.
pub async fn serve_udp(sock: Arc<UdpSocket>, out: Arc<Outbound>, shutdown: CancellationToken) {
    // One datagram can never exceed 64 KiB; the buffer is reused for every receive.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some platforms.
                    debug!(%e, "udp recv error");
                    continue;
                }
            },
        };
        counter!("sip_messages_received_total", "transport" => "udp").increment(1);
        let raw = &buf[..n];
        if is_keepalive(raw) {
            continue;
        }
        deliver(
            &out,
            raw,
            Peer {
                transport: Transport::Udp,
                addr: from,
            },
        );
    }
}

/// Accepts TCP connections until shutdown; each connection gets one task, and the number of
/// connections is bounded.
pub async fn serve_tcp(
    listener: TcpListener,
    out: Arc<Outbound>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    serve_streams(listener, None, out, max_connections, shutdown).await;
}

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts SIP-over-TLS connections until shutdown, like [`serve_tcp`] and bounded by the
/// same `max_tcp_connections`. Each is registered under its peer address, so the dialog's
/// NOTIFYs go back over it.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    out: Arc<Outbound>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_streams(listener, Some(acceptor), out, max_connections, shutdown).await;
}

/// The accept loop of both stream transports: TLS when `tls` is given.
async fn serve_streams(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    out: Arc<Outbound>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(%e, "stream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counter!("sip_shed_total", "reason" => "tcp_connection_limit").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let out = Arc::clone(&out);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
            let Some(acceptor) = tls else {
                let (rd, wr) = stream.into_split();
                return out.run_stream(rd, wr, addr, Transport::Tcp, tx, rx).await;
            };
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let (rd, wr) = tokio::io::split(stream);
                    out.run_stream(rd, wr, addr, Transport::Tls, tx, rx).await;
                }
                Ok(Err(e)) => {
                    counter!("sip_tls_handshake_failures_total").increment(1);
                    debug!(%addr, %e, "TLS handshake failed");
                }
                Err(_) => {
                    counter!("sip_tls_handshake_failures_total").increment(1);
                    debug!(%addr, "TLS handshake timed out");
                }
            }
        });
    }
}

/// RFC 5626 keepalives (CRLF, double CRLF) and stray whitespace datagrams are not messages.
fn is_keepalive(raw: &[u8]) -> bool {
    raw.iter()
        .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound() -> (Arc<Outbound>, mpsc::Receiver<EngineMsg>) {
        let (engine, inbound) = mpsc::channel(16);
        (
            Outbound::new(None, 4, engine, CancellationToken::new()),
            inbound,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_loses_its_connection_instead_of_holding_it() {
        // Before the write timeout, the task sat in `write_all` for ever: its slot, its queue
        // and its entry in the connection map stayed taken by a peer that never reads.
        let (out, _inbound) = outbound();
        let addr: SocketAddr = "192.0.2.7:5060".parse().expect("addr");
        let (_phone, ours) = tokio::io::duplex(64);
        let (rd, wr) = tokio::io::split(ours);
        let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
        let task = tokio::spawn(Arc::clone(&out).run_stream(rd, wr, addr, Transport::Tcp, tx, rx));
        tokio::task::yield_now().await;
        assert!(out.has_stream(addr));
        out.send(
            Peer {
                transport: Transport::Tcp,
                addr,
            },
            Bytes::from(vec![b'x'; 4096]),
        );
        tokio::time::timeout(TCP_WRITE_TIMEOUT * 3, task)
            .await
            .expect("the connection task ends once its write times out")
            .expect("no panic");
        assert!(!out.has_stream(addr));
    }

    #[tokio::test]
    async fn messages_split_across_reads_reach_the_engine_whole() {
        let (out, mut inbound) = outbound();
        let addr: SocketAddr = "192.0.2.8:5060".parse().expect("addr");
        let (mut phone, ours) = tokio::io::duplex(4096);
        let (rd, wr) = tokio::io::split(ours);
        let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
        tokio::spawn(Arc::clone(&out).run_stream(rd, wr, addr, Transport::Tcp, tx, rx));
        let msg = "OPTIONS sip:a@example.com SIP/2.0\r\n\
                   Via: SIP/2.0/TCP 192.0.2.8:5060;branch=z9hG4bK-1\r\n\
                   From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\
                   Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
                   Content-Length: 0\r\n\r\n";
        let two = format!("{msg}{msg}");
        for chunk in two.as_bytes().chunks(7) {
            phone.write_all(chunk).await.expect("write");
            tokio::task::yield_now().await;
        }
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
                .await
                .expect("a message in time")
                .expect("engine channel open");
            assert!(matches!(got, EngineMsg::Inbound { peer, .. } if peer.addr == addr));
        }
    }
}

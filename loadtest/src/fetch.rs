//! Document fetches by protocol: HTTP/1.1 in clear ([`crate::http::Conn`], hand-rolled and
//! cheap), HTTPS with HTTP/1.1 or HTTP/2 (hyper over rustls), and HTTP/3 (h3 over quinn).
//! Every simulated phone's fetch goes through one [`Fetcher`], a keep-alive connection that
//! reconnects when the server closes it, so each protocol is measured the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::http::{Conn, FETCH_TIMEOUT, Response};

/// How phones fetch their documents (`--fetch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchProtocol {
    /// HTTP/1.1 without TLS.
    Http1,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

impl FetchProtocol {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "http1" | "http" => Self::Http1,
            "https" | "https1" => Self::Https,
            "h2" | "http2" => Self::H2,
            "h3" | "http3" => Self::H3,
            o => anyhow::bail!("--fetch {o:?}: http1, https, h2 or h3"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Https => "https",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }

    pub fn is_tls(self) -> bool {
        self != Self::Http1
    }
}

/// What TLS fetches need: the roots the server's certificate is checked against, and the
/// name it is checked for.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the PEM certificates in `ca` for `name`, offering `alpn`.
    pub fn new(ca: &Path, name: &str, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?
        {
            roots.add(c.map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| anyhow::anyhow!("--tls-name {name:?}: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }
}

impl TlsClient {
    /// The TLS handshake over `tcp`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(self.name.clone(), tcp)
            .await
    }
}

/// A keep-alive fetch connection of one protocol.
pub enum Fetcher {
    Http1(Conn),
    Tls(TlsFetcher),
    H3(H3Fetcher),
}

impl Fetcher {
    /// A fetcher for `protocol` to `addr` (UDP for HTTP/3), with `tls` for the encrypted
    /// ones.
    pub fn new(
        protocol: FetchProtocol,
        addr: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> anyhow::Result<Self> {
        let tls = || {
            tls.cloned()
                .ok_or_else(|| anyhow::anyhow!("--fetch {} needs --ca", protocol.name()))
        };
        Ok(match protocol {
            FetchProtocol::Http1 => Self::Http1(Conn::new(addr)),
            FetchProtocol::Https | FetchProtocol::H2 => Self::Tls(TlsFetcher {
                addr,
                tls: tls()?,
                h2: protocol == FetchProtocol::H2,
                sender: None,
            }),
            FetchProtocol::H3 => Self::H3(H3Fetcher::new(addr, tls()?)?),
        })
    }

    /// GETs `path`; one retry on a fresh connection if a kept-alive one turns out dead.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Response> {
        match self {
            Self::Http1(c) => c.get(path).await,
            Self::Tls(t) => retried(t, path).await,
            Self::H3(h) => retried(h, path).await,
        }
    }
}

/// A connection that can be dropped and made again.
trait Reconnecting {
    fn connected(&self) -> bool;
    fn reset(&mut self);
    async fn connect(&mut self) -> std::io::Result<()>;
    /// One GET on the connection.
    async fn get_once(&mut self, path: &str) -> std::io::Result<Response>;
}

async fn once(c: &mut impl Reconnecting, path: &str) -> std::io::Result<Response> {
    let attempt = async {
        if !c.connected() {
            c.connect().await?;
        }
        c.get_once(path).await
    };
    match tokio::time::timeout(FETCH_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn retried(c: &mut impl Reconnecting, path: &str) -> std::io::Result<Response> {
    let reused = c.connected();
    match once(c, path).await {
        Ok(r) => Ok(r),
        Err(_) if reused => {
            c.reset();
            let r = once(c, path).await;
            if r.is_err() {
                c.reset();
            }
            r
        }
        Err(e) => {
            c.reset();
            Err(e)
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The response of hyper or h3 as the engine sees it.
fn response(head: &http::response::Parts, body: Vec<u8>) -> Response {
    let retry_after = head
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let close = head
        .headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    Response {
        status: head.status.as_u16(),
        body,
        close,
        retry_after,
    }
}

fn request(authority: &str, path: &str, h2: bool) -> std::io::Result<http::Request<Empty<Bytes>>> {
    let mut b = http::Request::get(path).header(http::header::USER_AGENT, "uaprof-storm");
    if h2 {
        b = http::Request::get(format!("https://{authority}{path}"))
            .header(http::header::USER_AGENT, "uaprof-storm");
    } else {
        b = b.header(http::header::HOST, authority);
    }
    b.body(Empty::new()).map_err(io_err)
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// HTTPS: HTTP/1.1 or HTTP/2 over one TLS connection.
pub struct TlsFetcher {
    addr: SocketAddr,
    tls: TlsClient,
    h2: bool,
    sender: Option<Sender>,
}

impl Reconnecting for TlsFetcher {
    fn connected(&self) -> bool {
        self.sender.is_some()
    }

    fn reset(&mut self) {
        self.sender = None;
    }

    async fn connect(&mut self) -> std::io::Result<()> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = self.tls.connect(tcp).await?;
        let io = TokioIo::new(stream);
        self.sender = Some(if self.h2 {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(io_err)?;
            tokio::task::spawn_local(conn);
            Sender::H1(s)
        });
        Ok(())
    }

    async fn get_once(&mut self, path: &str) -> std::io::Result<Response> {
        let authority = self.addr.to_string();
        let resp = match self.sender.as_mut() {
            Some(Sender::H1(s)) => {
                s.ready().await.map_err(io_err)?;
                s.send_request(request(&authority, path, false)?).await
            }
            Some(Sender::H2(s)) => {
                s.ready().await.map_err(io_err)?;
                s.send_request(request(&authority, path, true)?).await
            }
            None => return Err(std::io::ErrorKind::NotConnected.into()),
        }
        .map_err(io_err)?;
        let (head, body) = resp.into_parts();
        let body = body.collect().await.map_err(io_err)?.to_bytes().to_vec();
        let r = response(&head, body);
        if r.close {
            self.sender = None;
        }
        Ok(r)
    }
}

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// HTTP/3: one QUIC connection from its own UDP socket.
pub struct H3Fetcher {
    addr: SocketAddr,
    tls: TlsClient,
    endpoint: quinn::Endpoint,
    sender: Option<H3Send>,
}

impl H3Fetcher {
    fn new(addr: SocketAddr, tls: TlsClient) -> anyhow::Result<Self> {
        let local: SocketAddr = (addr.ip(), 0).into();
        let endpoint = quinn::Endpoint::client(local)?;
        Ok(Self {
            addr,
            tls,
            endpoint,
            sender: None,
        })
    }
}

impl Reconnecting for H3Fetcher {
    fn connected(&self) -> bool {
        self.sender.is_some()
    }

    fn reset(&mut self) {
        self.sender = None;
    }

    async fn connect(&mut self) -> std::io::Result<()> {
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&self.tls.config))
                .map_err(io_err)?;
        let config = quinn::ClientConfig::new(Arc::new(crypto));
        let name = self.tls.name.to_str().into_owned();
        let conn = self
            .endpoint
            .connect_with(config, self.addr, &name)
            .map_err(io_err)?
            .await
            .map_err(io_err)?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .map_err(io_err)?;
        tokio::task::spawn_local(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    async fn get_once(&mut self, path: &str) -> std::io::Result<Response> {
        let Some(sender) = self.sender.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let authority = self.addr.to_string();
        let req = http::Request::get(format!("https://{authority}{path}"))
            .header(http::header::USER_AGENT, "uaprof-storm")
            .body(())
            .map_err(io_err)?;
        let mut stream = sender.send_request(req).await.map_err(io_err)?;
        stream.finish().await.map_err(io_err)?;
        let resp = stream.recv_response().await.map_err(io_err)?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(io_err)? {
            while chunk.has_remaining() {
                let c = chunk.chunk();
                body.extend_from_slice(c);
                let n = c.len();
                chunk.advance(n);
            }
        }
        let (head, ()) = resp.into_parts();
        Ok(response(&head, body))
    }
}

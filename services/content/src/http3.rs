//! Document fetches over HTTP/3 (RFC 9114): QUIC by quinn, HTTP/3 framing by h3, the same
//! routes and rules as [`crate::serve`] (the phones' face only; provisioning stays on TCP).
//!
//! The HTTPS listener advertises it with `Alt-Svc` ([`crate::HttpListener::with_http3`]).
//! A connection's verified client certificate authenticates its fetches as over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderValue};
use http::{Method, Response};
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fetch_auth::PeerCert;
use crate::service::ContentService;
use crate::telemetry as m;

/// A connection with no packets for this long is closed (phones fetch and go).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one connection may have open at once.
const MAX_STREAMS: u32 = 64;
/// H3_NO_ERROR (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;

/// A bound QUIC endpoint serving HTTP/3.
pub struct Http3Listener {
    endpoint: quinn::Endpoint,
}

impl Http3Listener {
    /// Binds UDP `addr` with `tls` (from [`crate::TlsConfig::quic_server_config`]).
    pub fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> Result<Self, String> {
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| format!("http3 TLS: {e}"))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(MAX_STREAMS.into())
            // The peer's control and QPACK streams, and nothing else, are unidirectional.
            .max_concurrent_uni_streams(8u32.into())
            .max_idle_timeout(Some(
                IDLE_TIMEOUT
                    .try_into()
                    .map_err(|e| format!("http3 idle timeout: {e}"))?,
            ));
        config.transport_config(Arc::new(transport));
        let endpoint =
            quinn::Endpoint::server(config, addr).map_err(|e| format!("bind http3 {addr}: {e}"))?;
        Ok(Self { endpoint })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Serves document fetches over HTTP/3 until `shutdown`, then sends GOAWAY and lets
/// requests in flight finish (within the HTTP listener's drain grace). At most
/// `content.max_connections` connections at once, counting apart from TCP's.
pub async fn serve_http3(
    listener: Http3Listener,
    service: Arc<ContentService>,
    shutdown: CancellationToken,
) {
    let endpoint = listener.endpoint;
    let slots = Arc::new(Semaphore::new(service.config().max_connections));
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(m::HTTP3_CONNECTIONS, "outcome" => "refused").increment(1);
            metrics::counter!(m::HTTP_CONNECTIONS_REFUSED).increment(1);
            incoming.refuse();
            continue;
        };
        let service = Arc::clone(&service);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let peer = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    metrics::counter!(m::HTTP3_CONNECTIONS, "outcome" => "failed").increment(1);
                    tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                    return;
                }
            };
            metrics::counter!(m::HTTP3_CONNECTIONS, "outcome" => "accepted").increment(1);
            metrics::gauge!(m::HTTP_CONNECTIONS_OPEN).increment(1.0);
            let cert = client_cert(&conn).map(Arc::new);
            connection(conn, service, cert, &shutdown).await;
            metrics::gauge!(m::HTTP_CONNECTIONS_OPEN).decrement(1.0);
        });
    }
    crate::http::drain_connections(&tracker, "HTTP/3").await;
    endpoint.close(H3_NO_ERROR.into(), b"shutdown");
    // Lets the closes reach the peers; bounded, as a peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// The leaf certificate a client presented (verified by the TLS layer).
fn client_cert(conn: &quinn::Connection) -> Option<PeerCert> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| PeerCert::from_der(c.as_ref()))
}

/// Serves one connection's requests, each on a task, until the client closes it or
/// shutdown sends GOAWAY; then lets the requests already accepted finish (within
/// [`crate::http::DRAIN_GRACE`]) before the connection goes (dropping it closes it).
async fn connection(
    conn: quinn::Connection,
    service: Arc<ContentService>,
    cert: Option<Arc<PeerCert>>,
    shutdown: &CancellationToken,
) {
    let peer = conn.remote_address();
    let mut h3 =
        match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
                return;
            }
        };
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => {
                // GOAWAY: requests already accepted are served, new ones go elsewhere.
                let _ = h3.shutdown(0).await;
                break;
            }
            a = h3.accept() => a,
        };
        let resolver = match accepted {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended with error");
                }
                break;
            }
        };
        let service = Arc::clone(&service);
        let cert = cert.clone();
        requests.spawn(async move {
            if let Err(e) = request(resolver, &service, cert.as_deref()).await {
                tracing::debug!(%peer, error = %e, "HTTP/3 request failed");
            }
        });
        while requests.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(crate::http::DRAIN_GRACE, async {
        while requests.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::debug!(%peer, "HTTP/3 requests still open after the drain grace period");
    }
    drop(h3);
}

/// Answers one request: the phones' routes, as over HTTP/1.1 and HTTP/2.
async fn request<C>(
    resolver: h3::server::RequestResolver<C, Bytes>,
    service: &ContentService,
    cert: Option<&PeerCert>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: h3::quic::Connection<Bytes>,
{
    // A client has as long to send its request head as over HTTP/1.1.
    let (req, mut stream) =
        tokio::time::timeout(crate::http::HEADER_READ_TIMEOUT, resolver.resolve_request())
            .await
            .map_err(|_| "request head timed out")??;
    // Documents are only read: a GET or HEAD is answered without waiting for the end of its
    // stream; any other request's body is drained and ignored, within a size and a time.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let drain = async {
            let mut drained = 0usize;
            while drained < service.config().max_document_bytes {
                match stream.recv_data().await? {
                    Some(chunk) => drained += chunk.remaining(),
                    None => break,
                }
            }
            Ok::<_, h3::error::StreamError>(())
        };
        tokio::time::timeout(crate::http::BODY_READ_TIMEOUT, drain)
            .await
            .map_err(|_| "request body timed out")??;
    }
    let response = crate::http::handle(service, cert, &req).await;
    let (mut parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // The length, for HEAD too (the representation's); never on a 304 or 204 (RFC 9110
    // §8.6).
    let bodiless_status = matches!(parts.status.as_u16(), 204 | 304);
    if !bodiless_status && let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    stream
        .send_response(Response::from_parts(parts, ()))
        .await?;
    if req.method() != Method::HEAD && !bytes.is_empty() {
        stream.send_data(bytes).await?;
    }
    stream.finish().await?;
    Ok(())
}

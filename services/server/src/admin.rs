//! Admin endpoints: `/live` (the process runs), `/ready` (it takes traffic; 503 while
//! starting or draining), `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Histogram buckets (seconds) for every latency histogram: 100 µs to 30 s, which spans a
/// loopback round trip and a Timer-F-sized stall.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .install_recorder()?)
}

#[derive(Clone)]
pub struct Admin {
    pub metrics: PrometheusHandle,
    pub ready: Arc<AtomicBool>,
}

/// Connections the admin listener serves at once: probes and a scraper or two need a handful,
/// and a flood must not turn into unbounded tasks and file descriptors.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// A client gets this long to send its request head (a slow-loris holds no slot longer).
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, admin: Admin, shutdown: CancellationToken) {
    serve_bounded(listener, admin, shutdown, MAX_ADMIN_CONNECTIONS).await;
}

async fn serve_bounded(
    listener: TcpListener,
    admin: Admin,
    shutdown: CancellationToken,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(_) => {
                    // Typically EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("admin_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match req.uri().path() {
        "/live" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/ready" if admin.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "ready\n".to_owned(), "text/plain")
        }
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".to_owned(),
            "text/plain",
        ),
        "/metrics" => (
            StatusCode::OK,
            admin.metrics.render(),
            "text/plain; version=0.0.4",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get_live(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_are_closed_and_the_slot_comes_back() {
        // Before the bound every accepted connection became a task, however many there were.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = Admin {
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            ready: Arc::new(AtomicBool::new(true)),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_bounded(listener, admin, shutdown.clone(), 2));
        assert!(get_live(addr).await.starts_with("HTTP/1.1 200"));
        // Two idle clients take both slots; a third is closed without an answer.
        let held: Vec<TcpStream> = vec![
            TcpStream::connect(addr).await.expect("connect"),
            TcpStream::connect(addr).await.expect("connect"),
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get_live(addr).await, "");
        drop(held);
        let mut answer = String::new();
        for _ in 0..50 {
            answer = get_live(addr).await;
            if !answer.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        shutdown.cancel();
    }
}

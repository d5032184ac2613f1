//! HTTP/1.1 front ends: document fetches for phones ([`serve`]) and, on a listener of its
//! own, the provisioning API ([`serve_provisioning`]).
//!
//! ```text
//! phones:        GET|HEAD /profiles/{kind}/{id}/{name}                  document bytes (ETag, 304)
//! provisioning:  PUT|DELETE /provision/v1/{kind}/{id}/documents/{name}  write one document
//!                GET|DELETE /provision/v1/{kind}/{id}                   list / remove a key
//!                PUT /provision/v1/device/{id}                          device attributes (JSON)
//! ```
//!
//! Provisioning requests are authenticated and authorised by [`Access`] (bearer tokens and
//! key patterns); every write and every refusal is audited: a log line on target
//! `uaprof::audit` and `content_provision_audit_total{provisioner, outcome}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uaprof_api::key::percent_decode;
use uaprof_api::{ProfileKey, Timing};

use crate::access::{Access, Intent, Refusal};
use crate::error::ContentError;
use crate::fetch_auth::{self, FetchAuth, PeerCert, Principal, Unauthenticated};
use crate::service::{ContentService, WriteReceipt, WriteStatus};
use crate::telemetry as m;

/// A client has this long to send its request headers; cuts off slow-loris connections
/// that would otherwise hold one of the bounded connection slots forever.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on receiving a request body: a 1 MiB document at a modest 64 KiB/s.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `serve` waits for open connections to finish after shutdown is signalled; well
/// inside the pod's termination grace period.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// A client has this long to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error (typically EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Largest JSON body the attribute route reads; the document is a few dozen bytes.
const MAX_JSON_BYTES: usize = 16 << 10;

type Body = Full<Bytes>;

/// What a listener serves.
enum Face {
    /// Document fetches.
    Phones,
    /// The provisioning API, behind its access policy.
    Provisioning(Arc<Access>),
}

/// A listening socket, with the TLS configuration when it serves HTTPS.
pub struct HttpListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    alt_svc: Option<HeaderValue>,
}

impl HttpListener {
    /// HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on `tcp`.
    pub fn tls(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            tls: Some(TlsAcceptor::from(config)),
            alt_svc: None,
        }
    }

    /// Advertises HTTP/3 on UDP `port` of the same host (RFC 7838 `Alt-Svc`, RFC 9114
    /// §3.1.1) on every response, for a day.
    pub fn with_http3(mut self, port: u16) -> Self {
        self.alt_svc = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok();
        self
    }
}

impl From<TcpListener> for HttpListener {
    /// Plain HTTP/1.1.
    fn from(tcp: TcpListener) -> Self {
        Self {
            tcp,
            tls: None,
            alt_svc: None,
        }
    }
}

/// Serves document fetches on `listener` until `shutdown` is cancelled, then stops
/// accepting and drains open connections (for at most [`DRAIN_GRACE`]).
///
/// At most `max_connections` connections are served at once; further ones are closed on
/// accept and counted (`content_http_connections_refused_total`).
pub async fn serve(
    listener: impl Into<HttpListener>,
    service: Arc<ContentService>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_face(listener.into(), service, Arc::new(Face::Phones), shutdown).await
}

/// Serves the provisioning API on `listener`, under `access`, like [`serve`].
pub async fn serve_provisioning(
    listener: impl Into<HttpListener>,
    service: Arc<ContentService>,
    access: Arc<Access>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let face = Arc::new(Face::Provisioning(access));
    serve_face(listener.into(), service, face, shutdown).await
}

async fn serve_face(
    listener: HttpListener,
    service: Arc<ContentService>,
    face: Arc<Face>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let HttpListener {
        tcp: listener,
        tls,
        alt_svc,
    } = listener;
    let slots = Arc::new(Semaphore::new(service.config().max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(m::HTTP_CONNECTIONS_REFUSED).increment(1);
            tracing::debug!(%peer, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let service = Arc::clone(&service);
        let face = Arc::clone(&face);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let alt_svc = alt_svc.clone();
        tracker.spawn(async move {
            let _slot = slot;
            metrics::gauge!(m::HTTP_CONNECTIONS_OPEN).increment(1.0);
            // `client_cert`: the connection's verified client certificate.
            let make_handler = move |client_cert: Option<Arc<PeerCert>>| {
                service_fn(move |req| {
                    let service = Arc::clone(&service);
                    let face = Arc::clone(&face);
                    let client_cert = client_cert.clone();
                    let alt_svc = alt_svc.clone();
                    async move {
                        let mut response = match &*face {
                            Face::Phones => handle(&service, client_cert.as_deref(), &req).await,
                            Face::Provisioning(access) => {
                                let hash = client_cert.as_ref().map(|c| c.sha256);
                                handle_provisioning(&service, access, hash, req).await
                            }
                        };
                        if let Some(v) = alt_svc {
                            response.headers_mut().insert(header::ALT_SVC, v);
                        }
                        Ok::<_, Infallible>(response)
                    }
                })
            };
            match tls {
                None => {
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), make_handler(None));
                    drive(conn, |c| c.graceful_shutdown(), &shutdown, peer).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        // Shutdown is no handshake failure: nothing is counted.
                        () = shutdown.cancelled() => Err(None),
                        r = handshake => match r {
                            Ok(Ok(s)) => Ok(s),
                            Ok(Err(e)) => Err(Some(format!("TLS handshake failed: {e}"))),
                            Err(_) => Err(Some("TLS handshake timed out".to_owned())),
                        },
                    };
                    match stream {
                        Ok(stream) => {
                            // HTTP/2 or HTTP/1.1, as the client's ALPN (or preface) says.
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            builder
                                .http1()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_READ_TIMEOUT);
                            builder.http2().timer(TokioTimer::new());
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::new(PeerCert::from_der(c.as_ref())));
                            let handler = make_handler(client_cert);
                            let conn = builder.serve_connection(TokioIo::new(stream), handler);
                            drive(conn, |c| c.graceful_shutdown(), &shutdown, peer).await;
                        }
                        Err(None) => {}
                        Err(Some(why)) => {
                            tracing::debug!(%peer, "{why}");
                            metrics::counter!(m::TLS_HANDSHAKE_FAILURES).increment(1);
                        }
                    }
                }
            }
            metrics::gauge!(m::HTTP_CONNECTIONS_OPEN).decrement(1.0);
        });
    }
    drain_connections(&tracker, "HTTP").await;
    Ok(())
}

/// Waits for `tracker`'s connections to finish, for at most [`DRAIN_GRACE`].
pub(crate) async fn drain_connections(tracker: &TaskTracker, what: &str) {
    tracker.close();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "{what} connections still open after the drain grace period"
        );
    }
}

/// Serves one connection until it ends; on shutdown, `graceful` lets its requests in flight
/// finish first. One loop for HTTP/1.1 and for HTTPS (HTTP/2 or 1.1): hyper's two
/// connection types share no trait, so the shutdown call comes in as a closure.
async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    shutdown: &CancellationToken,
    peer: std::net::SocketAddr,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Routes one phone-facing request (HTTP/1.1, HTTP/2 or HTTP/3: only its head is read) and
/// counts it.
pub(crate) async fn handle<B>(
    service: &ContentService,
    client_cert: Option<&PeerCert>,
    req: &Request<B>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, response) = match segments.as_slice() {
        ["profiles", "set", token, id, class, name] => (
            "folder",
            match Target::folder(token, id, class, name) {
                Some(t) => fetch(service, client_cert, req, t).await,
                None => error(StatusCode::NOT_FOUND, "no such document"),
            },
        ),
        ["profiles", kind, id, name] => (
            "document",
            match Target::document(kind, id, name, req.uri().query()) {
                Some(t) => fetch(service, client_cert, req, t).await,
                None => error(StatusCode::NOT_FOUND, "no such document"),
            },
        ),
        _ => ("unknown", error(StatusCode::NOT_FOUND, "no such resource")),
    };
    count_request(route, &response);
    response
}

fn count_request(route: &'static str, response: &Response<Body>) {
    metrics::counter!(
        m::HTTP_REQUESTS,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
}

/// What the audit log says of one provisioning request.
#[derive(Default)]
struct Audit {
    who: Option<String>,
    key: Option<String>,
    name: Option<String>,
    change_id: Option<String>,
    reason: Option<String>,
}

/// Authenticates, routes and authorises one provisioning request, counts it, and audits it
/// if it wrote or was refused.
async fn handle_provisioning(
    service: &ContentService,
    access: &Access,
    client_cert: Option<[u8; 32]>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let mut audit = Audit::default();
    let (route, response) = match access.authenticate(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        client_cert.as_ref(),
    ) {
        Err(refusal) => {
            // Read (and drop) what the client is still sending, within the document limit,
            // so that an HTTP/2 client gets the 401 rather than a reset stream.
            drain(req, service.config().max_document_bytes).await;
            ("provision_auth", refused(&refusal, &mut audit))
        }
        Ok(who) => {
            audit.who = Some(who.to_owned());
            let path = req.uri().path().to_owned();
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let mut guard = Guard {
                access,
                who,
                audit: &mut audit,
            };
            match segments.as_slice() {
                ["provision", "v1", kind, id, "documents", name] => (
                    "provision_document",
                    provision_document(service, &mut guard, req, kind, id, name).await,
                ),
                ["provision", "v1", kind, id] => (
                    "provision_key",
                    provision_key(service, &mut guard, req, kind, id).await,
                ),
                _ => ("unknown", error(StatusCode::NOT_FOUND, "no such resource")),
            }
        }
    };
    count_request(route, &response);
    record_audit(&method, &audit, &response);
    response
}

/// A 401 (with the RFC 6750 challenge) or 403 for `refusal`, noted in the audit.
fn refused(refusal: &Refusal, audit: &mut Audit) -> Response<Body> {
    let reason = refusal.reason();
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = error(status, &reason);
    if let Refusal::Unauthenticated(_) = refusal {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"uaprof-provisioning\""),
        );
    }
    audit.reason = Some(reason);
    resp
}

/// Writes (whatever their outcome) and refusals are audited; successful reads are not.
fn record_audit(method: &Method, audit: &Audit, response: &Response<Body>) {
    let status = response.status().as_u16();
    let outcome = match status {
        401 => "unauthenticated",
        403 => "forbidden",
        200..=299 if method == Method::GET => return,
        200..=299 => "written",
        _ if method == Method::GET => "read_failed",
        _ => "rejected",
    };
    let who = audit.who.as_deref().unwrap_or("-");
    // The label set stays bounded: provisioner names come from the configuration.
    let provisioner = if audit.who.is_some() {
        who.to_owned()
    } else {
        "unauthenticated".to_owned()
    };
    metrics::counter!(m::PROVISION_AUDIT, "provisioner" => provisioner, "outcome" => outcome)
        .increment(1);
    tracing::info!(
        target: "uaprof::audit",
        who,
        method = %method,
        key = audit.key.as_deref().unwrap_or("-"),
        name = audit.name.as_deref().unwrap_or("-"),
        status,
        outcome,
        change_id = audit.change_id.as_deref().unwrap_or("-"),
        reason = audit.reason.as_deref().unwrap_or("-"),
        "provisioning audit"
    );
}

/// The authenticated provisioner of one request, and the audit it fills in.
struct Guard<'a> {
    access: &'a Access,
    who: &'a str,
    audit: &'a mut Audit,
}

impl Guard<'_> {
    /// The key of the request if the provisioner may do `intent` to it; else the response.
    fn key(
        &mut self,
        kind: &str,
        id: &str,
        name: Option<&str>,
        intent: Intent,
    ) -> Result<ProfileKey, Box<Response<Body>>> {
        self.audit.name = name.map(str::to_owned);
        let key = key_from_path(kind, id).map_err(|e| Box::new(content_error(&e)))?;
        self.audit.key = Some(key.to_string());
        self.access
            .authorize(self.who, &key, intent)
            .map_err(|r| Box::new(refused(&r, self.audit)))?;
        Ok(key)
    }

    /// The response to a write, with its change id noted in the audit.
    fn written(
        &mut self,
        resp: Result<Response<Body>, ContentError>,
        id: Option<String>,
    ) -> Response<Body> {
        self.audit.change_id = id;
        match resp {
            Ok(r) => r,
            Err(e) => {
                self.audit.reason = Some(e.to_string());
                content_error(&e)
            }
        }
    }
}

/// Builds a key from URL path segments. The id segment is URL-decoded here, once
/// ([`ContentService::document_url`] URL-encodes the key's id); escapes that belong to the key
/// itself (an AoR's user part) are the key's, and normalisation reads them.
fn key_from_path(kind: &str, id: &str) -> Result<ProfileKey, ContentError> {
    let id = percent_decode(id)
        .ok_or_else(|| ContentError::BadKey(uaprof_api::KeyError::BadDomain(id.to_owned())))?;
    Ok(ProfileKey::from_parts(kind, &id)?)
}

/// What a fetch asks for.
struct Target<'a> {
    /// The key the URL names: what its signature and the client's authentication cover.
    key: ProfileKey,
    /// What the signature covers besides the key: the document's name, or the folder's.
    signed_name: String,
    /// The signature: a document URL's query, a folder URL's path token.
    token: Option<&'a str>,
    name: &'a str,
    /// A folder (`/profiles/set/...`): its class, if the phone named its model. The name
    /// is looked up in the device's documents, its default user's, then the class's.
    folder: Option<Option<ProfileKey>>,
}

impl<'a> Target<'a> {
    /// `/profiles/{kind}/{id}/{name}?{query}`.
    fn document(kind: &str, id: &str, name: &'a str, query: Option<&'a str>) -> Option<Self> {
        Some(Self {
            key: key_from_path(kind, id).ok()?,
            signed_name: name.to_owned(),
            token: query,
            name,
            folder: None,
        })
    }

    /// `/profiles/set/{token}/{device id}/{class or -}/{name}`.
    fn folder(token: &'a str, id: &str, class: &str, name: &'a str) -> Option<Self> {
        let key = key_from_path("device", id).ok()?;
        let class_key = match class {
            "-" => None,
            c => Some(key_from_path("class", c).ok()?),
        };
        // The segment as the tier wrote it, which the signature covers.
        let segment = class_key
            .as_ref()
            .map_or_else(|| "-".to_owned(), |c| crate::validate::url_encode(&c.id()));
        Some(Self {
            key,
            signed_name: crate::service::folder_name(&segment),
            token: Some(token).filter(|t| *t != "-"),
            name,
            folder: Some(class_key),
        })
    }
}

#[tracing::instrument(name = "content.fetch", skip_all, fields(key = %target.key, name = %target.name))]
async fn fetch<B>(
    service: &ContentService,
    client_cert: Option<&PeerCert>,
    req: &Request<B>,
    target: Target<'_>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let not_found = || error(StatusCode::NOT_FOUND, "no such document");
    let key = &target.key;
    // A signed URL is checked before anything is looked up: a guessed or expired one learns
    // nothing, not even whether the document exists.
    let signed_until = match service.signer() {
        None => None,
        Some(signer) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match signer.verify(key, &target.signed_name, target.token, now) {
                Ok(exp) => Some(exp.saturating_sub(now)),
                Err(refused) => {
                    metrics::counter!(m::FETCHES_FORBIDDEN, "reason" => format!("{refused:?}").to_lowercase())
                        .increment(1);
                    return error(StatusCode::FORBIDDEN, refused.reason());
                }
            }
        }
    };
    if let Some(auth) = service.fetch_auth()
        && let Err(refusal) = authorize_fetch(service, auth, client_cert, req, key).await
    {
        return refusal;
    }
    // Phones are paced by fetch credits; this ceiling holds even when they are not.
    let Some(_fetch) = service.admission().admit_fetch() else {
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "fetch rate limit reached; retry later",
        );
        let secs = 1 + rand::random::<u64>() % 3;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    };
    let mut lookup = vec![key.clone()];
    if let Some(class) = &target.folder {
        match service.default_user(key).await {
            Ok(user) => lookup.extend(user.map(ProfileKey::User)),
            Err(e) => return content_error(&e),
        }
        lookup.extend(class.clone());
    }
    let mut found = None;
    for owner in &lookup {
        match service.get_document(owner, target.name).await {
            Ok(Some(doc)) => {
                found = Some(doc);
                break;
            }
            Ok(None) => {}
            Err(e) => return content_error(&e),
        }
    }
    let Some(doc) = found else {
        return not_found();
    };
    let etag = format!("\"{}\"", doc.sha1_hex);
    let last_modified =
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(doc.updated_unix));
    // Phones must revalidate: the URL stays the same while the content changes. A signed URL
    // is private to its phone and no cache keeps it past its expiry.
    let cache_control = match signed_until {
        None => "no-cache".to_owned(),
        Some(left) => format!("private, no-cache, max-age={left}"),
    };
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::LAST_MODIFIED, last_modified);
    if if_none_match(req.headers(), &etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::default())
            .unwrap_or_else(|_| internal());
    }
    if req.method() == Method::GET {
        metrics::counter!(m::DOCUMENT_BYTES_SERVED).increment(doc.bytes.len() as u64);
    }
    // For HEAD hyper sends the headers (with this body's length) and drops the body.
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, doc.content_type)
        .body(Body::new(doc.bytes))
        .unwrap_or_else(|_| internal())
}

/// Checks a fetch's client authentication (`content.fetch_auth`): 401 with a Digest
/// challenge, or 403, when the client is not the device or user the document is for.
async fn authorize_fetch<B>(
    service: &ContentService,
    auth: &FetchAuth,
    client_cert: Option<&PeerCert>,
    req: &Request<B>,
    key: &ProfileKey,
) -> Result<(), Response<Body>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // A certificate that covers the request is enough; one that does not (a factory
    // certificate naming nobody, another device) leaves Digest to try.
    if let Some(p) = auth.certificate_principals(client_cert)
        && readable(service, &p, key).await?
    {
        metrics::counter!(m::FETCH_AUTH, "result" => "ok").increment(1);
        return Ok(());
    }
    let principals = match auth.digest_principals(req.method().as_str(), target, authorization, now)
    {
        Ok(p) => p,
        Err(Unauthenticated::Challenge(challenge, why)) => {
            metrics::counter!(m::FETCH_AUTH, "result" => why.label()).increment(1);
            let mut resp = error(StatusCode::UNAUTHORIZED, "authentication required");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return Err(resp);
        }
        Err(Unauthenticated::CertificateRequired) => {
            let result = if client_cert.is_some() {
                "forbidden"
            } else {
                "no_certificate"
            };
            metrics::counter!(m::FETCH_AUTH, "result" => result).increment(1);
            return Err(error(
                StatusCode::FORBIDDEN,
                "a client certificate naming this device or user is required",
            ));
        }
    };
    if !readable(service, &principals, key).await? {
        metrics::counter!(m::FETCH_AUTH, "result" => "forbidden").increment(1);
        return Err(error(
            StatusCode::FORBIDDEN,
            "this client may not read this device's or user's documents",
        ));
    }
    metrics::counter!(m::FETCH_AUTH, "result" => "ok").increment(1);
    Ok(())
}

/// Whether `principals` may read `key`'s documents. A user's documents are also its
/// default device's: the devices' users are looked up only for a user key.
async fn readable(
    service: &ContentService,
    principals: &[Principal],
    key: &ProfileKey,
) -> Result<bool, Response<Body>> {
    let mut users = Vec::new();
    if matches!(key, ProfileKey::User(_)) {
        for p in principals {
            if let Principal::Named(d @ ProfileKey::Device(_)) = p {
                let user = service
                    .default_user(d)
                    .await
                    .map_err(|e| content_error(&e))?;
                users.push((d.clone(), user));
            }
        }
    }
    let user_of = |d: &ProfileKey| {
        users
            .iter()
            .find(|(k, _)| k == d)
            .and_then(|(_, u)| u.clone())
    };
    Ok(fetch_auth::may_read(principals, key, user_of))
}

/// RFC 9110 §13.1.2: weak comparison, `*` matches any current representation.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[derive(Serialize)]
struct WriteBody {
    change_id: String,
    status: WriteStatus,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

fn write_body(service: &ContentService, r: WriteReceipt, with_url: bool) -> WriteBody {
    let url = match (&r.name, with_url) {
        (Some(name), true) => Some(service.document_url(&r.key, name)),
        _ => None,
    };
    WriteBody {
        change_id: r.change_id,
        status: r.status,
        key: r.key.to_string(),
        name: r.name,
        version: r.version,
        seq: r.seq,
        sha1: r.sha1_hex,
        size: r.size,
        content_id: r.content_id,
        url,
    }
}

/// 201 for a document that is new, 200 for other applied writes, 202 when the change log has
/// it but the tier has not applied it within `apply_timeout`.
fn write_status(r: &WriteReceipt) -> StatusCode {
    match r.status {
        WriteStatus::Accepted => StatusCode::ACCEPTED,
        _ if r.created && r.name.is_some() => StatusCode::CREATED,
        _ => StatusCode::OK,
    }
}

async fn provision_document(
    service: &ContentService,
    guard: &mut Guard<'_>,
    req: Request<Incoming>,
    kind: &str,
    id: &str,
    name: &str,
) -> Response<Body> {
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return method_not_allowed("PUT, DELETE");
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query = req.uri().query().map(str::to_owned);
    // The body is read before any refusal: an HTTP/2 client still sending it would see the
    // stream reset instead of the answer (curl reports a framing error, not the 403).
    let body = if method == Method::PUT {
        match read_body(req, service.config().max_document_bytes).await {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    } else {
        Bytes::new()
    };
    let key = match guard.key(kind, id, Some(name), Intent::Write) {
        Ok(k) => k,
        Err(resp) => return *resp,
    };
    let timing = match timing(query.as_deref()) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    if method == Method::DELETE {
        let r = service.delete_document(&key, name, timing).await;
        return written(service, guard, r, false);
    }
    let Some(content_type) = content_type else {
        return content_error(&ContentError::BadContentType(String::new()));
    };
    let r = service
        .put_document(&key, name, &content_type, body, timing)
        .await;
    written(service, guard, r, true)
}

/// The response to a write, its change id noted in the audit.
fn written(
    service: &ContentService,
    guard: &mut Guard<'_>,
    result: Result<WriteReceipt, ContentError>,
    with_url: bool,
) -> Response<Body> {
    let change_id = result.as_ref().ok().map(|r| r.change_id.clone());
    let resp = result.map(|r| json(write_status(&r), &write_body(service, r, with_url)));
    guard.written(resp, change_id)
}

/// The JSON body of `PUT /provision/v1/device/<id>`, which replaces the device's attributes
/// (an absent or `null` one is cleared, `{}` clears both):
/// `{"default_user": "sip:alice@example.com", "resync": {"contact": "sip:1001@10.0.0.7:5062",
/// "event": "check-sync", "username": "1001", "password": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAttributes {
    #[serde(default)]
    pub default_user: Option<String>,
    #[serde(default)]
    pub resync: Option<uaprof_api::ResyncTarget>,
}

/// Reads a device-attributes body. Only the JSON shape is checked here; the AoR is normalised
/// (and refused with 400) when the change is prepared, the same way for API and Kafka writes.
pub fn parse_device_attributes(body: &[u8]) -> Result<DeviceAttributes, serde_json::Error> {
    serde_json::from_slice(body)
}

async fn provision_key(
    service: &ContentService,
    guard: &mut Guard<'_>,
    req: Request<Incoming>,
    kind: &str,
    id: &str,
) -> Response<Body> {
    let allow = if kind == "device" {
        "GET, PUT, DELETE"
    } else {
        "GET, DELETE"
    };
    let method = req.method().clone();
    let allowed = method == Method::GET
        || method == Method::DELETE
        || (method == Method::PUT && kind == "device");
    if !allowed {
        return method_not_allowed(allow);
    }
    let intent = if method == Method::GET {
        Intent::Read
    } else {
        Intent::Write
    };
    let query = req.uri().query().map(str::to_owned);
    // Read before any refusal (see provision_document).
    let body = if method == Method::PUT {
        match read_body(req, MAX_JSON_BYTES).await {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    } else {
        Bytes::new()
    };
    let key = match guard.key(kind, id, None, intent) {
        Ok(k) => k,
        Err(resp) => return *resp,
    };
    if method == Method::GET {
        return match service.list_key(&key).await {
            Ok(Some(listing)) => json(StatusCode::OK, &listing),
            Ok(None) => error(StatusCode::NOT_FOUND, "nothing provisioned for this key"),
            Err(e) => content_error(&e),
        };
    }
    let timing = match timing(query.as_deref()) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    if method == Method::DELETE {
        let r = service.delete_key(&key, timing).await;
        return written(service, guard, r, false);
    }
    let attrs = match parse_device_attributes(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    let r = service
        .set_device_attributes(&key, attrs.default_user.as_deref(), attrs.resync, timing)
        .await;
    written(service, guard, r, false)
}

/// Reads and drops a request body of at most `max` bytes (bounded in time too).
async fn drain(req: Request<Incoming>, max: usize) {
    let limited = Limited::new(req.into_body(), max);
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await;
}

/// Reads a request body of at most `max` bytes: 413 when larger (checked against
/// Content-Length before reading anything), 408 when the client is too slow.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body exceeds the limit of {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), max);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body not received in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("could not read body: {e}"),
        )),
    }
}

/// Parses `effective-by=<seconds>` and `rollout-window=<seconds>` from the query; other
/// parameters are ignored.
fn timing(query: Option<&str>) -> Result<Timing, String> {
    let mut t = Timing::default();
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "effective-by" => &mut t.effective_by,
            "rollout-window" => &mut t.rollout_window,
            _ => continue,
        };
        *slot = Some(
            value
                .parse::<u32>()
                .map_err(|_| format!("{name} must be whole seconds, got {value:?}"))?,
        );
    }
    Ok(t)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::new(Bytes::from(body)))
            .unwrap_or_else(|_| internal()),
        Err(_) => internal(),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn content_error(e: &ContentError) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, &e.to_string());
    if e.is_retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Last resort when building a response fails (it cannot with the static headers used
/// here, but the builder's API is fallible).
fn internal() -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from_static(
        b"{\"error\":\"internal error\"}",
    )));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_parsing() {
        assert_eq!(timing(None), Ok(Timing::default()));
        let t = timing(Some("a=b&effective-by=30&rollout-window=600")).expect("valid");
        assert_eq!((t.effective_by, t.rollout_window), (Some(30), Some(600)));
        assert!(timing(Some("effective-by=-1")).is_err());
        assert!(timing(Some("rollout-window")).is_err());
    }

    #[test]
    fn etag_matching() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"ab\""),
        );
        assert!(if_none_match(&h, "\"ab\""));
        assert!(!if_none_match(&h, "\"cd\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"cd\""));
    }
}

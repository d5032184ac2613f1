//! The HTTP front ends over real sockets on 127.0.0.1:0: documents for phones on one
//! listener, the provisioning API (and its tokens) on another.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use content::{
    Access, ContentConfig, ContentService, JournalOptions, ProvisioningConfig, TokenConfig,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

struct Server {
    /// Phones: documents.
    addr: SocketAddr,
    /// The provisioning API.
    prov: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    prov_task: tokio::task::JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

async fn start(max_connections: usize) -> Server {
    start_with(max_connections, &ProvisioningConfig::default()).await
}

async fn start_with(max_connections: usize, provisioning: &ProvisioningConfig) -> Server {
    start_configured(max_connections, provisioning, |_| {}).await
}

async fn start_configured(
    max_connections: usize,
    provisioning: &ProvisioningConfig,
    adjust: impl FnOnce(&mut ContentConfig),
) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let prov_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let prov = prov_listener.local_addr().expect("addr");
    let mut config = ContentConfig {
        public_base_url: format!("http://{addr}"),
        max_document_bytes: 32,
        max_connections,
        ..ContentConfig::default()
    };
    adjust(&mut config);
    let opts = JournalOptions {
        fsync: false,
        ..JournalOptions::default()
    };
    let service = ContentService::open(dir.path(), config, opts).expect("open");
    let shutdown = CancellationToken::new();
    let access = std::sync::Arc::new(Access::new(provisioning).expect("access"));
    let prov_task = tokio::spawn(content::serve_provisioning(
        prov_listener,
        std::sync::Arc::clone(&service),
        access,
        shutdown.clone(),
    ));
    let task = tokio::spawn(content::serve(listener, service, shutdown.clone()));
    Server {
        addr,
        prov,
        shutdown,
        task,
        prov_task,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

impl Server {
    /// A request to the listener that serves `path`: the provisioning API's for
    /// `/provision/...`, the phones' for the rest.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let to = if path.starts_with("/provision/") {
            self.prov
        } else {
            self.addr
        };
        self.call_at(to, method, path, headers, body).await
    }

    async fn call_at(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{to}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let resp = self.client.request(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in [self.task, self.prov_task] {
            let result = tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops");
            assert!(result.expect("join").is_ok());
        }
    }
}

const DOC: &str = "/provision/v1/device/00DF1E004CD0/documents/settings.xml";
const FETCH: &str = "/profiles/device/mac%3A00df1e004cd0/settings.xml";

#[tokio::test]
async fn put_get_conditional_get_and_delete() {
    let s = start(64).await;
    let xml = [("content-type", "application/xml")];

    let r = s
        .call(
            Method::PUT,
            &format!("{DOC}?effective-by=30"),
            &xml,
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["key"], "device/mac:00df1e004cd0");
    assert_eq!(j["name"], "settings.xml");
    assert_eq!(j["version"], 1);
    assert_eq!(j["seq"], 1);
    assert_eq!(j["size"], 4);
    let sha1 = j["sha1"].as_str().expect("sha1").to_owned();
    assert_eq!(j["url"], format!("http://{}{FETCH}", s.addr));

    let r = s.call(Method::PUT, DOC, &xml, b"<b/>").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 2);
    let sha1_b = r.json()["sha1"].as_str().expect("sha1").to_owned();
    assert_ne!(sha1, sha1_b);

    let r = s.call(Method::GET, FETCH, &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"<b/>");
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/xml");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    let etag = r.headers[header::ETAG].to_str().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{sha1_b}\""));

    let r = s
        .call(Method::GET, FETCH, &[("if-none-match", &etag)], b"")
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = s
        .call(Method::GET, FETCH, &[("if-none-match", "\"other\"")], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let r = s.call(Method::HEAD, FETCH, &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.headers[header::CONTENT_LENGTH], "4");

    let r = s
        .call(Method::GET, "/provision/v1/device/00df1e004cd0", &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["version"], 2);
    assert_eq!(j["documents"][0]["name"], "settings.xml");
    assert_eq!(j["documents"][0]["sha1"], sha1_b);

    let r = s.call(Method::DELETE, DOC, &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 3);
    assert_eq!(
        s.call(Method::GET, FETCH, &[], b"").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.call(Method::DELETE, DOC, &[], b"").await.status,
        StatusCode::NOT_FOUND
    );
    let r = s
        .call(Method::GET, "/provision/v1/device/00df1e004cd0", &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let s = start(64).await;
    let xml = [("content-type", "application/xml")];

    let r = s
        .call(
            Method::PUT,
            "/provision/v1/printer/x/documents/a.xml",
            &xml,
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("msg")
            .contains("unknown key kind")
    );
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/device/nope/documents/a.xml",
            &xml,
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/device/00df1e004cd0/documents/.a",
            &xml,
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s.call(Method::PUT, DOC, &[], b"<a/>").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s.call(Method::PUT, DOC, &xml, &[b'x'; 33]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = s
        .call(
            Method::PUT,
            &format!("{DOC}?effective-by=soon"),
            &xml,
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/device/00df1e004cd0/documents/p.xml",
            &[("content-type", "application/session-policy+xml")],
            b"<p/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = s.call(Method::POST, DOC, &xml, b"<a/>").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "PUT, DELETE");
    let r = s.call(Method::PUT, FETCH, &xml, b"<a/>").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "GET, HEAD");
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/user/alice@example.com",
            &[],
            b"{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "GET, DELETE");

    let dev = "/provision/v1/device/00df1e004cd0";
    assert_eq!(
        s.call(Method::PUT, dev, &[], b"{nope").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.call(Method::PUT, dev, &[], br#"{"default_user": "nobody"}"#)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.call(Method::GET, "/elsewhere", &[], b"").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.call(Method::DELETE, dev, &[], b"").await.status,
        StatusCode::NOT_FOUND
    );

    // Nothing above was stored.
    assert_eq!(
        s.call(Method::GET, dev, &[], b"").await.status,
        StatusCode::NOT_FOUND
    );

    let r = s
        .call(
            Method::PUT,
            dev,
            &[],
            br#"{"default_user": "sip:Alice@Example.com"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["seq"], 1);
    let r = s.call(Method::GET, dev, &[], b"").await;
    assert_eq!(r.json()["default_user"], "Alice@example.com");
    assert_eq!(r.json()["resync"], serde_json::Value::Null);

    // A resync target: its password is never shown; a bad one is refused and changes nothing.
    let target = br#"{"default_user": "sip:Alice@Example.com", "resync": {"contact": "sip:1001@10.0.0.7:5062", "event": "check-sync", "username": "1001", "password": "s3cret"}}"#;
    assert_eq!(
        s.call(Method::PUT, dev, &[], target).await.status,
        StatusCode::OK
    );
    for bad in [
        &br#"{"resync": {"contact": "tel:+15551234"}}"#[..],
        br#"{"resync": {"contact": "sip:h", "username": "1001"}}"#,
        br#"{"resync": {"contact": "sip:h", "event": "check sync"}}"#,
        br#"{"resync": {"contact": "sip:h", "secret": "x"}}"#,
    ] {
        let r = s.call(Method::PUT, dev, &[], bad).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let r = s.call(Method::GET, dev, &[], b"").await;
    assert_eq!(r.json()["version"], 2, "the refused PUTs wrote nothing");
    let shown = r.json()["resync"].clone();
    assert_eq!(shown["contact"], "sip:1001@10.0.0.7:5062");
    assert_eq!(shown["event"], "check-sync");
    assert_eq!(shown["username"], "1001");
    assert_eq!(shown["password_set"], true);
    assert!(!String::from_utf8_lossy(&r.body).contains("s3cret"));
    // The PUT replaces every attribute: without them, both are cleared.
    assert_eq!(
        s.call(Method::PUT, dev, &[], b"{}").await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.call(Method::GET, dev, &[], b"").await.status,
        StatusCode::NOT_FOUND,
        "nothing is provisioned for the device any more"
    );
    assert_eq!(
        s.call(Method::PUT, dev, &[], target).await.status,
        StatusCode::OK
    );
    let r = s.call(Method::DELETE, dev, &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 5);
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let s = start(1).await;
    let _held = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "refused connection is closed without a response");
    drop(_held);
    s.stop().await;
}

#[tokio::test]
async fn the_phones_listener_serves_no_provisioning() {
    let s = start(64).await;
    let xml = [("content-type", "application/xml")];
    let r = s.call_at(s.addr, Method::PUT, DOC, &xml, b"<a/>").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let listing = "/provision/v1/device/00df1e004cd0";
    let r = s.call_at(s.addr, Method::GET, listing, &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.call(Method::GET, listing, &[], b"").await.status,
        StatusCode::NOT_FOUND,
        "nothing was stored"
    );
    // And the provisioning listener serves no documents.
    assert_eq!(
        s.call(Method::PUT, DOC, &xml, b"<a/>").await.status,
        StatusCode::CREATED
    );
    let r = s.call_at(s.prov, Method::GET, FETCH, &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.call(Method::GET, FETCH, &[], b"").await.status,
        StatusCode::OK
    );
    s.stop().await;
}

fn token(name: &str, secret: &str, allow: &[&str], read_only: bool) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        allow: allow.iter().map(|a| (*a).to_owned()).collect(),
        read_only,
        ..TokenConfig::default()
    }
}

#[tokio::test]
async fn provisioning_needs_a_token_and_stays_within_its_keys() {
    let s = start_with(
        64,
        &ProvisioningConfig {
            tokens: vec![
                token(
                    "oss-east",
                    "east-secret",
                    &["device/mac:00df1e*", "class/acme:*"],
                    false,
                ),
                token("noc", "noc-secret", &["*"], true),
            ],
            allow_open: false,
        },
    )
    .await;
    let xml = ("content-type", "application/xml");
    let east = ("authorization", "Bearer east-secret");
    let noc = ("authorization", "Bearer noc-secret");
    let listing = "/provision/v1/device/00df1e004cd0";

    let r = s.call(Method::PUT, DOC, &[xml], b"<a/>").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("challenge")
            .starts_with("Bearer")
    );
    assert!(
        r.json()["error"]
            .as_str()
            .expect("reason")
            .contains("bearer token")
    );
    let wrong = ("authorization", "Bearer east-secreT");
    let r = s.call(Method::PUT, DOC, &[xml, wrong], b"<a/>").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unknown token");
    // An unknown route says nothing more to a stranger.
    let r = s.call(Method::GET, "/provision/v2/nothing", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Another tenant's MAC range and another vendor's class: 403 with the reason.
    let other = "/provision/v1/device/00:11:22:33:44:55/documents/a.xml";
    let r = s.call(Method::PUT, other, &[xml, east], b"<a/>").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.json()["error"],
        "oss-east may not change device/mac:001122334455"
    );
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/class/zeta:Z1/documents/a.xml",
            &[xml, east],
            b"<a/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The read-only token reads everything and writes nothing.
    let r = s.call(Method::PUT, DOC, &[xml, noc], b"<a/>").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "noc may only read");
    assert_eq!(
        s.call(Method::GET, listing, &[noc], b"").await.status,
        StatusCode::NOT_FOUND,
        "nothing was stored"
    );

    // Within its rights, in any spelling of the MAC.
    let r = s.call(Method::PUT, DOC, &[xml, east], b"<a/>").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s
        .call(
            Method::PUT,
            "/provision/v1/device/00-DF-1E-00-4C-D0/documents/b.xml",
            &[xml, east],
            b"<b/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s.call(Method::GET, listing, &[noc], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["documents"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        s.call(Method::DELETE, listing, &[noc], b"").await.status,
        StatusCode::FORBIDDEN
    );
    // Phones need no token.
    assert_eq!(
        s.call(Method::GET, FETCH, &[], b"").await.status,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn signed_urls_are_served_until_they_expire_and_a_tampered_one_never() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("url-key");
    std::fs::write(&key, "a-secret-of-at-least-thirty-two-bytes\n").expect("write");
    let s = start_configured(64, &ProvisioningConfig::default(), |c| {
        c.url_signing_key_files = vec![key.clone()];
        c.url_lifetime = Duration::from_secs(2);
    })
    .await;
    let xml = [("content-type", "application/xml")];
    let r = s.call(Method::PUT, DOC, &xml, b"<a/>").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let url = r.json()["url"].as_str().expect("url").to_owned();
    let path = &url[url.find("/profiles/").expect("path")..];
    assert!(path.starts_with(&format!("{FETCH}?exp=")), "{path}");

    let r = s.call(Method::GET, path, &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"<a/>");
    let cc = r.headers[header::CACHE_CONTROL]
        .to_str()
        .expect("cc")
        .to_owned();
    assert!(cc.starts_with("private, no-cache, max-age="), "{cc}");
    let max_age: u64 = cc.rsplit('=').next().expect("age").parse().expect("secs");
    assert!(max_age <= 2, "{cc}");
    // Another spelling of the same device's path carries the same signature.
    let spelled = path.replace("mac%3A00df1e004cd0", "00-DF-1E-00-4C-D0");
    assert_eq!(
        s.call(Method::GET, &spelled, &[], b"").await.status,
        StatusCode::OK
    );

    let refused = |r: &Reply| {
        (
            r.status,
            r.json()["error"].as_str().unwrap_or("").to_owned(),
        )
    };
    let r = s.call(Method::GET, FETCH, &[], b"").await;
    assert_eq!(refused(&r).0, StatusCode::FORBIDDEN);
    assert!(
        refused(&r).1.contains("must be signed"),
        "{:?}",
        refused(&r)
    );
    let other = path.replace("settings.xml", "other.xml");
    assert_eq!(
        s.call(Method::GET, &other, &[], b"").await.status,
        StatusCode::FORBIDDEN
    );
    let exp: u64 = path
        .split("exp=")
        .nth(1)
        .and_then(|v| v.split('&').next())
        .and_then(|v| v.parse().ok())
        .expect("exp");
    let later = path.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    let r = s.call(Method::GET, &later, &[], b"").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        refused(&r).1.contains("does not match"),
        "{:?}",
        refused(&r)
    );

    // Past its expiry the genuine URL is refused too.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = s.call(Method::GET, path, &[], b"").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(refused(&r).1.contains("expired"), "{:?}", refused(&r));
    s.stop().await;
}

/// HTTPS with a certificate made for the test: curl (a client this project did not write)
/// fetches a document over HTTP/2 and over HTTP/1.1, by ALPN, and provisions over HTTPS.
#[tokio::test]
async fn https_serves_http2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write");
    let tls = content::TlsConfig {
        cert_file: cert_file.clone(),
        key_file,
        client_ca_file: None,
    }
    .server_config()
    .expect("tls config");

    let data = tempfile::tempdir().expect("tempdir");
    let phones = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let prov = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (addr, prov_addr) = (
        phones.local_addr().expect("addr"),
        prov.local_addr().expect("addr"),
    );
    let config = ContentConfig {
        public_base_url: format!("https://localhost:{}", addr.port()),
        ..ContentConfig::default()
    };
    let opts = JournalOptions {
        fsync: false,
        ..JournalOptions::default()
    };
    let service = ContentService::open(data.path(), config, opts).expect("open");
    let shutdown = CancellationToken::new();
    let access = std::sync::Arc::new(Access::new(&ProvisioningConfig::default()).expect("access"));
    let served = tokio::spawn(content::serve(
        content::HttpListener::tls(phones, std::sync::Arc::clone(&tls)),
        std::sync::Arc::clone(&service),
        shutdown.clone(),
    ));
    let provisioned = tokio::spawn(content::serve_provisioning(
        content::HttpListener::tls(prov, tls),
        service,
        access,
        shutdown.clone(),
    ));

    let curl = |args: Vec<String>| {
        let cert_file = cert_file.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert"])
                .arg(&cert_file)
                .args(&args)
                .output()
                .expect("run curl");
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let resolve = |port: u16| format!("localhost:{port}:127.0.0.1");
    let put = curl(vec![
        "--resolve".into(),
        resolve(prov_addr.port()),
        "-X".into(),
        "PUT".into(),
        "-H".into(),
        "Content-Type: application/xml".into(),
        "--data-binary".into(),
        "<tls/>".into(),
        "-w".into(),
        " %{http_code}".into(),
        format!("https://localhost:{}{DOC}", prov_addr.port()),
    ])
    .await
    .expect("join");
    assert!(put.ends_with(" 201"), "{put}");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let got = curl(vec![
            flag.into(),
            "--resolve".into(),
            resolve(addr.port()),
            "-w".into(),
            " %{http_version} %{http_code}".into(),
            format!("https://localhost:{}{FETCH}", addr.port()),
        ])
        .await
        .expect("join");
        assert_eq!(got, format!("<tls/> {version} 200"), "{flag}");
    }
    // A plain-HTTP client on the HTTPS port gets no document.
    let plain = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://127.0.0.1:{}{FETCH}", addr.port()))
            .output()
            .expect("run curl")
    })
    .await
    .expect("join");
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    shutdown.cancel();
    for task in [served, provisioned] {
        let r = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("stops");
        assert!(r.expect("join").is_ok());
    }
}

/// Mutual TLS on the provisioning listener: a client certificate issued by the configured CA
/// and named by a provisioner's `client_cert_sha256` is that provisioner, no token needed; a
/// certificate from another CA ends the handshake; without one, the token rules as before.
#[tokio::test]
async fn a_client_certificate_is_a_provisioner() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let ca = |cn: &str| {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        (cert, Issuer::new(params, key))
    };
    let (ca_cert, ca_issuer) = ca("uaprof test CA");
    let (_, rogue_issuer) = ca("someone else");
    let client = |issuer: &Issuer<'_, KeyPair>| {
        let params = CertificateParams::new(vec!["oss-robot".to_owned()]).expect("params");
        let key = KeyPair::generate().expect("key");
        (params.signed_by(&key, issuer).expect("signed"), key)
    };
    let (robot, robot_key) = client(&ca_issuer);
    let (rogue, rogue_key) = client(&rogue_issuer);
    let server_crt = write("server.crt", server.cert.pem());
    let server_key = write("server.key", server.signing_key.serialize_pem());
    let ca_file = write("ca.crt", ca_cert.pem());
    let robot_crt = write("robot.crt", robot.pem());
    let robot_key = write("robot.key", robot_key.serialize_pem());
    let rogue_crt = write("rogue.crt", rogue.pem());
    let rogue_key = write("rogue.key", rogue_key.serialize_pem());

    let tls = content::TlsConfig {
        cert_file: server_crt.clone(),
        key_file: server_key,
        client_ca_file: Some(ca_file),
    }
    .server_config()
    .expect("tls config");
    let access = ProvisioningConfig {
        tokens: vec![
            TokenConfig {
                name: "robot".into(),
                client_cert_sha256: hex::encode(Sha256::digest(robot.der())),
                allow: vec!["device/*".into()],
                ..TokenConfig::default()
            },
            token("oss", "oss-secret", &["*"], false),
        ],
        allow_open: false,
    };
    let data = tempfile::tempdir().expect("tempdir");
    let prov = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = prov.local_addr().expect("addr").port();
    let opts = JournalOptions {
        fsync: false,
        ..JournalOptions::default()
    };
    let service = ContentService::open(data.path(), ContentConfig::default(), opts).expect("open");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(content::serve_provisioning(
        content::HttpListener::tls(prov, tls),
        service,
        std::sync::Arc::new(Access::new(&access).expect("access")),
        shutdown.clone(),
    ));
    let put = |extra: Vec<String>| {
        let server_crt = server_crt.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert"])
                .arg(&server_crt)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args([
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/xml",
                    "--data-binary",
                    "<m/>",
                ])
                .args(["-o", "/dev/null", "-w", "%{http_code}"])
                .args(&extra)
                .arg(format!("https://localhost:{port}{DOC}"))
                .output()
                .expect("curl")
        })
    };
    let cert_args = |crt: &std::path::Path, key: &std::path::Path| {
        vec![
            "--cert".to_owned(),
            crt.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
        ]
    };
    let by_cert = put(cert_args(&robot_crt, &robot_key)).await.expect("join");
    assert_eq!(
        String::from_utf8_lossy(&by_cert.stdout),
        "201",
        "{by_cert:?}"
    );
    let none = put(Vec::new()).await.expect("join");
    assert_eq!(
        String::from_utf8_lossy(&none.stdout),
        "401",
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let with_token = put(vec!["-H".into(), "Authorization: Bearer oss-secret".into()])
        .await
        .expect("join");
    assert_eq!(String::from_utf8_lossy(&with_token.stdout), "200");
    let rogue = put(cert_args(&rogue_crt, &rogue_key)).await.expect("join");
    assert!(
        !rogue.status.success() || String::from_utf8_lossy(&rogue.stdout) == "000",
        "a certificate from another CA gets no answer: {rogue:?}"
    );
    shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops");
    assert!(r.expect("join").is_ok());
}

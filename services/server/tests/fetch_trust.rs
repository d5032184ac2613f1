//! Document fetches over HTTP/3 and with client authentication, end to end with clients
//! this project did not write: Python `aioquic` (HTTP/3) and curl (HTTPS, Digest).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, http};
use testkit::pki::{CertFiles, Pki};

/// A document PUT through the provisioning API; returns the URL the tier hands out for it.
fn provision(srv: &Server, kind: &str, id: &str, name: &str, body: &str) -> String {
    let path = format!("/provision/v1/{kind}/{id}/documents/{name}");
    let (st, resp) = http(
        srv.provision,
        "PUT",
        &path,
        &[("Content-Type", "application/xml")],
        body.as_bytes(),
    );
    assert!(
        st == 200 || st == 201,
        "{st} {}",
        String::from_utf8_lossy(&resp)
    );
    let v: serde_json::Value = serde_json::from_slice(&resp).expect("json");
    v["url"].as_str().expect("url").to_owned()
}

/// What the aioquic client printed: status, headers, body.
struct H3Response {
    status: u16,
    headers: serde_json::Value,
    body: String,
    length: u64,
}

/// GET `url` over HTTP/3 with aioquic, trusting `ca`, presenting `client`.
fn h3(url: &str, ca: &Path, client: Option<&CertFiles>) -> H3Response {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h3/h3get.py");
    let mut cmd = Command::new(testkit::kafka::python());
    cmd.arg(script).arg(url).arg("--ca").arg(ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd.output().expect("run h3get.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "h3get: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("h3get json");
    H3Response {
        status: u16::try_from(v["status"].as_u64().expect("status")).expect("status"),
        headers: v["headers"].clone(),
        body: v["body"].as_str().unwrap_or_default().to_owned(),
        length: v["length"].as_u64().unwrap_or_default(),
    }
}

/// curl over HTTPS to `localhost` (the certificate's name) at `port`: the status, then the
/// response headers and body as curl printed them.
fn curl(port: u16, ca: &Path, args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-i", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (resp, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap_or(0), resp.to_owned())
}

fn by_name(url: &str) -> String {
    url.replacen("127.0.0.1", "localhost", 1)
}

fn tls_toml(pki: &Pki, client_ca: bool) -> String {
    let mut t = format!(
        "http3_listen = \"127.0.0.1:0\"\n[http_tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.server.cert.to_str().expect("path"),
        pki.server.key.to_str().expect("path"),
    );
    if client_ca {
        t.push_str(&format!(
            "client_ca_file = {:?}\n",
            pki.ca.to_str().expect("path")
        ));
    }
    t
}

/// HTTP/3: the HTTPS listener advertises it (`Alt-Svc`), and aioquic fetches a signed URL
/// over it: the document with its entity tag and length, and 403 for a tampered or missing
/// signature, as over HTTP/1.1. (HEAD is not asked: aioquic 1.x takes the Content-Length of
/// a HEAD response, which RFC 9110 §9.3.2 allows, for a truncated body.)
#[test]
fn aioquic_fetches_a_signed_url_over_http3() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path(), "h3");
    let cfg = dir.path().join("uaprof.toml");
    let toml = format!(
        "{}{}",
        tls_toml(&pki, false),
        common::url_signing_toml(dir.path())
    );
    std::fs::write(&cfg, toml).expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let h3_port = srv.http3.expect("the ready line names http3").port();
    let doc = "<profile>over QUIC</profile>";
    let url = by_name(&provision(&srv, "device", "00df1e00a3a3", "p.xml", doc));
    assert!(url.contains("?exp=") && url.contains("&sig="), "{url}");

    let (st, head) = curl(srv.http.port(), &pki.ca, &["--http2"], &url);
    assert_eq!(st, 200, "{head}");
    let alt = format!("alt-svc: h3=\":{h3_port}\"; ma=86400");
    assert!(head.to_ascii_lowercase().contains(&alt), "{head}");

    let h3_url = url.replacen(
        &format!(":{}/", srv.http.port()),
        &format!(":{h3_port}/"),
        1,
    );
    let got = h3(&h3_url, &pki.ca, None);
    assert_eq!((got.status, got.body.as_str()), (200, doc));
    assert!(
        got.headers["etag"].as_str().is_some_and(|e| e.len() == 42),
        "{}",
        got.headers
    );
    assert_eq!(got.headers["content-type"], "application/xml");
    assert_eq!(got.headers["content-length"], doc.len().to_string());
    assert_eq!(got.length, doc.len() as u64);
    let tampered = h3_url.replacen("sig=", "sig=0", 1);
    assert_eq!(h3(&tampered, &pki.ca, None).status, 403);
    let bare = h3_url.split('?').next().expect("path").to_owned();
    assert_eq!(h3(&bare, &pki.ca, None).status, 403);
    assert!(srv.metric("content_http3_connections_total{outcome=\"accepted\"}") == 3.0);
}

/// `content.fetch_auth`: a device's certificate (its MAC as CN) reads its own documents, its
/// default user's and its class's, over HTTPS and HTTP/3; for another device's, as without a
/// certificate, the client is challenged for Digest (SHA-256), which curl answers; a wrong
/// password is refused again, and Digest credentials for another device get 403.
#[test]
fn fetches_need_the_devices_certificate_or_its_digest_credentials() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path(), "fleet");
    let phone = pki.issue("phone", "0004F2ABCDEF", &[]);
    let alice_cert = pki.issue("alice", "Alice", &["sip:alice@example.net".to_owned()]);
    let realm = "profiles.example.net";
    let creds = dir.path().join("fetch-credentials");
    std::fs::write(
        &creds,
        format!(
            "{}\n",
            uaprof_api::digest::credentials_line("0004f200000c", realm, "pw-of-c")
        ),
    )
    .expect("write");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[content.fetch_auth]\nclient_certificates = true\n\
             [content.fetch_auth.digest]\nrealm = \"{realm}\"\ncredentials_file = {:?}\n",
            tls_toml(&pki, true),
            creds.to_str().expect("path")
        ),
    )
    .expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let port = srv.http.port();
    let h3_port = srv.http3.expect("http3").port();
    let own = by_name(&provision(
        &srv,
        "device",
        "0004f2abcdef",
        "own.xml",
        "<own/>",
    ));
    let other = by_name(&provision(&srv, "device", "0004f200000c", "c.xml", "<c/>"));
    let class = by_name(&provision(
        &srv,
        "class",
        "acme:x1",
        "model.xml",
        "<model/>",
    ));
    let user = by_name(&provision(
        &srv,
        "user",
        "alice@example.net",
        "line.xml",
        "<line/>",
    ));
    let st = common::set_default_user(&srv, "0004f2abcdef", "sip:alice@example.net");
    assert!(st == 200 || st == 201, "{st}");

    let cert = |c: &CertFiles| {
        [
            "--cert".to_owned(),
            c.cert.display().to_string(),
            "--key".to_owned(),
            c.key.display().to_string(),
        ]
    };
    let phone_args = cert(&phone);
    let phone_args: Vec<&str> = phone_args.iter().map(String::as_str).collect();
    // A certificate that does not cover the request leaves Digest to try: a challenge.
    for (url, want) in [(&own, 200), (&user, 200), (&class, 200), (&other, 401)] {
        let (st, text) = curl(port, &pki.ca, &phone_args, url);
        assert_eq!(st, want, "{url}: {text}");
    }
    let alice_args = cert(&alice_cert);
    let alice_args: Vec<&str> = alice_args.iter().map(String::as_str).collect();
    assert_eq!(curl(port, &pki.ca, &alice_args, &user).0, 200);
    assert_eq!(curl(port, &pki.ca, &alice_args, &own).0, 401);

    // No certificate: a Digest challenge, answered by curl with the device's credentials.
    let (st, text) = curl(port, &pki.ca, &[], &other);
    assert_eq!(st, 401, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("www-authenticate: digest") && lower.contains("algorithm=sha-256"),
        "{text}"
    );
    let good = ["--digest", "-u", "0004f200000c:pw-of-c"];
    let (st, text) = curl(port, &pki.ca, &good, &other);
    assert_eq!(st, 200, "{text}");
    assert!(text.ends_with("<c/>"), "{text}");
    // Its credentials name device C: not device A's documents.
    assert_eq!(curl(port, &pki.ca, &good, &own).0, 403);
    let wrong = ["--digest", "-u", "0004f200000c:guess"];
    assert_eq!(curl(port, &pki.ca, &wrong, &other).0, 401);
    // The phone's certificate does not cover device C; C's credentials beside it do.
    let both: Vec<&str> = phone_args.iter().copied().chain(good).collect();
    assert_eq!(curl(port, &pki.ca, &both, &other).0, 200);

    // HTTP/3 carries the same certificate rules.
    let over_h3 = |url: &str| url.replacen(&format!(":{port}/"), &format!(":{h3_port}/"), 1);
    assert_eq!(h3(&over_h3(&own), &pki.ca, Some(&phone)).status, 200);
    assert_eq!(h3(&over_h3(&other), &pki.ca, Some(&phone)).status, 401);
    assert_eq!(h3(&over_h3(&own), &pki.ca, None).status, 401);
    // Passed: own, user, class (phone), user (Alice), other (Digest, alone and beside the
    // phone's certificate), own (HTTP/3).
    assert_eq!(srv.metric("content_fetch_auth_total{result=\"ok\"}"), 7.0);
    assert!(srv.metric("content_fetch_auth_total{result=\"bad_response\"}") >= 1.0);
}

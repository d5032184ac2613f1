//! The provisioning API of the real binary: its own listener, bearer tokens, and the audit
//! trail (log lines and the metric) of every write and refusal.

mod common;

use std::process::Command;

use common::{Server, http};
use sha2::{Digest, Sha256};

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn tokens_toml() -> String {
    format!(
        "[provisioning]\ntokens = [\n  {{ name = \"oss-east\", sha256 = \"{}\", allow = [\"device/mac:00df1e*\"] }},\n]\n",
        sha256_hex("east-secret")
    )
}

#[test]
fn an_open_api_beyond_loopback_is_refused_and_tokens_allow_it() {
    let bin = env!("CARGO_BIN_EXE_uaprof");
    let out = Command::new(bin)
        .args(["--check-config", "--provision", "0.0.0.0:8081"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provision_listen") && err.contains("tokens"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(&cfg, tokens_toml()).expect("write");
    let out = Command::new(bin)
        .args(["--check-config", "--provision", "0.0.0.0:8081", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The effective configuration shows the digest, and the token nowhere.
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&sha256_hex("east-secret")), "{printed}");
    assert!(!printed.contains("east-secret\""), "{printed}");

    std::fs::write(
        &cfg,
        "[provisioning]\ntokens = [{ name = \"x\", sha256 = \"plaintext\", allow = [\"*\"] }]\n",
    )
    .expect("write");
    let out = Command::new(bin)
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sha256"));
}

/// The audit counter for one provisioner and outcome, from the admin endpoint.
fn audited(srv: &Server, provisioner: &str, outcome: &str) -> f64 {
    let (_, body) = http(srv.admin, "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("content_provision_audit_total{"))
        .filter(|l| {
            l.contains(&format!("provisioner=\"{provisioner}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn writes_and_refusals_are_audited_and_only_the_token_holder_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(&cfg, tokens_toml()).expect("write");
    let (mut srv, log) = Server::start_logged(
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--log-format",
            "json",
        ],
        "info",
    );
    let doc = "/provision/v1/device/00df1e004cd0/documents/a.xml";
    let xml = ("Content-Type", "application/xml");
    let good = ("Authorization", "Bearer east-secret");

    assert_eq!(http(srv.provision, "PUT", doc, &[xml], b"<a/>").0, 401);
    let other = "/provision/v1/device/001122334455/documents/a.xml";
    assert_eq!(
        http(srv.provision, "PUT", other, &[xml, good], b"<a/>").0,
        403
    );
    // The phones' listener has no provisioning routes at all.
    assert_eq!(http(srv.http, "PUT", doc, &[xml, good], b"<a/>").0, 404);
    let (st, body) = http(srv.provision, "PUT", doc, &[xml, good], b"<a/>");
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let receipt: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let change_id = receipt["change_id"].as_str().expect("change id").to_owned();
    // A refused write of a bad document is audited too, with its reason.
    let bad = ("Content-Type", "not a type");
    assert_eq!(
        http(srv.provision, "PUT", doc, &[bad, good], b"<a/>").0,
        415
    );
    // A successful read is not.
    let listing = "/provision/v1/device/00df1e004cd0";
    assert_eq!(http(srv.provision, "GET", listing, &[good], b"").0, 200);

    assert_eq!(audited(&srv, "unauthenticated", "unauthenticated"), 1.0);
    assert_eq!(audited(&srv, "oss-east", "forbidden"), 1.0);
    assert_eq!(audited(&srv, "oss-east", "written"), 1.0);
    assert_eq!(audited(&srv, "oss-east", "rejected"), 1.0);
    assert!(srv.stop().success());

    let text = std::fs::read_to_string(&log).expect("log");
    let audit: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "uaprof::audit")
        .collect();
    assert_eq!(audit.len(), 4, "one line per write or refusal: {text}");
    let outcomes: Vec<&str> = audit
        .iter()
        .map(|v| v["fields"]["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        outcomes,
        ["unauthenticated", "forbidden", "written", "rejected"]
    );
    let forbidden = &audit[1]["fields"];
    assert_eq!(forbidden["who"], "oss-east");
    assert_eq!(forbidden["key"], "device/mac:001122334455");
    assert_eq!(forbidden["status"], 403);
    let written = &audit[2]["fields"];
    assert_eq!(written["change_id"], change_id.as_str());
    assert_eq!(written["name"], "a.xml");
    assert_eq!(written["method"], "PUT");
    assert!(audit[0]["timestamp"].is_string());
    assert!(!text.contains("east-secret"), "the token is never logged");
}

/// A phone of `uri_user` subscribed, its first NOTIFY answered.
fn subscribed(srv: &Server, uri_user: &str) -> common::Phone {
    let mut phone = common::Phone::new(srv.udp, uri_user);
    let (resp, early) = phone.subscribe(&common::Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    let first = early
        .into_iter()
        .next()
        .unwrap_or_else(|| phone.expect_notify(std::time::Duration::from_secs(10), 200));
    phone.send(&first.response(200, "OK"));
    phone
}

/// With `content.url_signing_key_files`, the URL a phone is notified of is signed until the
/// NOTIFY's `expiration`; the phone fetches it, and the bare path is refused.
#[test]
fn a_phone_is_notified_of_a_signed_url_it_can_fetch() {
    use common::put_doc;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(&cfg, common::url_signing_toml(dir.path())).expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let phone = subscribed(&srv, "MAC%3a00df1e0051a1");
    let t = std::time::Duration::from_secs(10);
    let doc = b"<signed/>";
    let st = put_doc(
        &srv,
        "device",
        "00df1e0051a1",
        "s.xml",
        "application/xml",
        doc,
    );
    assert_eq!(st, 201);
    let change = phone.expect_notify(t, 200);
    let ctype = change.header("Content-Type").expect("Content-Type");
    let path = common::profile_path(ctype);
    assert!(path.contains("?exp=") && path.contains("&sig="), "{ctype}");
    let (st, body) = http(srv.http, "GET", &path, &[], b"");
    assert_eq!((st, body.as_slice()), (200, doc.as_slice()));
    let bare = path.split('?').next().expect("path");
    assert_eq!(http(srv.http, "GET", bare, &[], b"").0, 403);
}

/// HTTPS on both content listeners (`[http_tls]`, `[provision_tls]`): the OSS provisions
/// with its token over TLS, the phone is notified of an https URL, and curl fetches it over
/// HTTP/2.
#[test]
fn both_listeners_serve_https_and_notified_urls_are_https() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, crt, key) = common::localhost_cert(dir.path());
    let tls = format!(
        "cert_file = {:?}\nkey_file = {:?}\n",
        crt.to_str().expect("path"),
        key.to_str().expect("path")
    );
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg,
        format!("{}[http_tls]\n{tls}[provision_tls]\n{tls}", tokens_toml()),
    )
    .expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&crt)
            .args(args)
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let phone = subscribed(&srv, "MAC%3a00df1e0051b2");
    let t = std::time::Duration::from_secs(10);

    let prov = srv.provision.port();
    let put = curl(&[
        "--resolve",
        &format!("localhost:{prov}:127.0.0.1"),
        "-X",
        "PUT",
        "-H",
        "Authorization: Bearer east-secret",
        "-H",
        "Content-Type: application/xml",
        "--data-binary",
        "<over-tls/>",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://localhost:{prov}/provision/v1/device/00df1e0051b2/documents/t.xml"),
    ]);
    assert_eq!(put, "201");
    let change = phone.expect_notify(t, 200);
    let ctype = change.header("Content-Type").expect("Content-Type");
    let url = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("URL="))
        .map(|u| u.trim_matches('"'))
        .expect("URL");
    let port = srv.http.port();
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/profiles/")),
        "{url}"
    );
    // The certificate names localhost: fetch the same URL by that name.
    let by_name = url.replacen("127.0.0.1", "localhost", 1);
    let got = curl(&[
        "--http2",
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "-w",
        " %{http_version}",
        &by_name,
    ]);
    assert_eq!(got, "<over-tls/> 2");
}

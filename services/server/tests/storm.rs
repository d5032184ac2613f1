//! The storm simulator (`loadtest`) against the real binary: a short power-up and a short
//! change storm, asserting correctness (every phone provisioned, every hash verified, no
//! failures), never speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Server;
use loadtest::{ChangeVia, Config, Scenario};

const PHONES: u64 = 300;

fn config(srv: &Server, scenario: Scenario) -> Config {
    let mut cfg = Config::new(scenario, PHONES, srv.udp, srv.http);
    cfg.provision = srv.provision;
    cfg.max_time = Duration::from_secs(20);
    cfg.source_ips = 8;
    cfg.ports_per_ip = 2;
    cfg.http_conns = 8;
    cfg.progress = false;
    // Any back-off or effective-by spread stays in milliseconds.
    cfg.time_scale = 0.01;
    cfg
}

fn assert_clean(r: &loadtest::RunResult) {
    let c = &r.counters;
    assert!(r.completed, "{}", loadtest::report::summary(r));
    assert_eq!(
        c.phones_provisioned,
        PHONES,
        "{}",
        loadtest::report::summary(r)
    );
    assert_eq!(c.phones_failed, 0);
    assert_eq!(c.hash_mismatches, 0);
    assert_eq!(c.size_mismatches, 0);
    assert_eq!(r.failures(), 0, "{}", loadtest::report::summary(r));
    assert!(
        c.hashes_verified >= PHONES,
        "every fetched document is verified"
    );
    assert_eq!(c.hashes_verified, c.fetches_ok);
}

/// Phones fetch over HTTPS (HTTP/1.1), HTTP/2 and HTTP/3 (`--fetch`), and subscribe over
/// SIP over TLS: every one is provisioned and every document verified, whichever protocols
/// carried them.
#[test]
fn phones_fetch_over_https_http2_and_http3_and_subscribe_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (_, crt, key) = common::localhost_cert(dir.path());
    let cfg_file = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "http3_listen = \"127.0.0.1:0\"\n[http_tls]\ncert_file = {c:?}\nkey_file = {k:?}\n\
             [notifier.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {c:?}\nkey_file = {k:?}\n",
            c = crt.to_str().unwrap(),
            k = key.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = Server::start(&["--config", cfg_file.to_str().unwrap()]);
    for (i, fetch) in ["https", "h2", "h3", "h3"].into_iter().enumerate() {
        let mut cfg = config(
            &srv,
            Scenario::PowerUp {
                over: Duration::from_millis(500),
            },
        );
        cfg.fetch = loadtest::fetch::FetchProtocol::parse(fetch).unwrap();
        cfg.ca_file = Some(crt.clone());
        cfg.http3 = srv.http3;
        if i == 3 {
            cfg.transport = loadtest::Transport::Tls;
            cfg.server = srv.tls.unwrap();
            cfg.tcp_conns = 16;
        }
        // A population of its own per protocol: each run boots phones never seen before.
        cfg.id_offset = PHONES * (1 + i as u64);
        let r = loadtest::run(cfg).unwrap();
        assert_eq!(r.fetch, fetch);
        assert_eq!(r.transport, if i == 3 { "tls" } else { "udp" });
        assert_clean(&r);
    }
    assert!(srv.metric("content_http3_connections_total{outcome=\"accepted\"}") >= 1.0);
}

#[test]
fn power_up_and_change_storm_provision_every_phone() {
    let srv = Server::start(&[]);

    let r = loadtest::run(config(
        &srv,
        Scenario::PowerUp {
            over: Duration::from_secs(1),
        },
    ))
    .unwrap();
    assert_clean(&r);
    assert_eq!(r.counters.phones_booted, PHONES);

    let r = loadtest::run(config(
        &srv,
        Scenario::ChangeStorm {
            boot_over: Duration::from_millis(500),
            effective_by: Some(2),
            via: ChangeVia::Http,
        },
    ))
    .unwrap();
    assert_clean(&r);
    assert_eq!(
        r.counters.phones_changed, PHONES,
        "every phone fetched the change"
    );
    assert!(r.change_to_last_fetch_s.is_some());
    let out = tempfile::tempdir().unwrap();
    loadtest::report::write_all(&r, out.path()).unwrap();
    for f in ["result.json", "report.html", "plot.png"] {
        assert!(out.path().join(f).metadata().unwrap().len() > 0, "{f}");
    }
}

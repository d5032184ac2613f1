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

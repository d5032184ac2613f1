//! `notifier.pnp_multicast`: a plug-and-play phone on another host of the LAN (a network
//! namespace joined to this one by a veth pair; loopback cannot carry the multicast) sends
//! its SUBSCRIBE to 224.0.1.75 and is answered, and notified, by unicast.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, put_doc};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with one end of a veth pair, the other end here; removed when dropped.
struct Lan {
    ns: String,
    host_if: String,
    host_ip: String,
    phone_ip: String,
}

impl Lan {
    fn new() -> Self {
        let id = std::process::id() % 10_000;
        let subnet = 100 + id % 150;
        let lan = Self {
            ns: format!("uaprof-pnp-{id}"),
            host_if: format!("uph{id}"),
            host_ip: format!("10.231.{subnet}.1"),
            phone_ip: format!("10.231.{subnet}.2"),
        };
        let phone_if = format!("upp{id}");
        ip(&["netns", "add", &lan.ns]);
        ip(&[
            "link",
            "add",
            &lan.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &phone_if,
        ]);
        ip(&["link", "set", &phone_if, "netns", &lan.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lan.host_ip),
            "dev",
            &lan.host_if,
        ]);
        ip(&["link", "set", &lan.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &lan.ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&[
            "addr",
            "add",
            &format!("{}/24", lan.phone_ip),
            "dev",
            &phone_if,
        ]);
        inside(&["link", "set", &phone_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "224.0.0.0/4", "dev", &phone_if]);
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port()
}

#[test]
fn a_multicast_pnp_subscribe_is_answered_and_notified_by_unicast() {
    let lan = Lan::new();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notifier.pnp_multicast]\ninterface = \"{}\"\n",
            lan.host_ip
        ),
    )
    .expect("write");
    let port = free_udp_port();
    let srv = Server::start_udp(
        &format!("0.0.0.0:{port}"),
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--advertise",
            &format!("{}:{port}", lan.host_ip),
        ],
    );
    let mac = "001565a0b0c1";
    assert_eq!(
        put_doc(
            &srv,
            "device",
            mac,
            "001565a0b0c1.cfg",
            "text/plain",
            b"#!version:1.0.0.1\n"
        ),
        201
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pnp/phone.py");
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.ns, "python3"])
        .arg(script)
        .args([
            "224.0.1.75",
            &port.to_string(),
            &lan.phone_ip,
            mac,
            "Yealink",
            "SIP-T46S",
        ])
        .output()
        .expect("run the phone");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(got["status"], 200, "{got}");
    // Answered and notified from the server's unicast address on the LAN.
    assert_eq!(got["response_from"], lan.host_ip.as_str(), "{got}");
    assert_eq!(got["notify_from"], lan.host_ip.as_str(), "{got}");
    let body = got["notify_body"].as_str().expect("body");
    assert!(
        body.contains("/profiles/set/") && body.ends_with('/'),
        "{got}"
    );
}

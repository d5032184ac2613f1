//! Interop with a SIP peer nobody here wrote: SIPp (Debian's `sip-tester`) runs the scenarios
//! in `loadtest/sipp/` against the real binary. `bash deploy/install-test-deps.sh` installs
//! SIPp; without it these tests fail (set UAPROF_SKIP_SIPP=1 to skip them knowingly).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Server, put_doc};

fn sipp() -> Option<PathBuf> {
    if std::env::var_os("UAPROF_SKIP_SIPP").is_some() {
        eprintln!("UAPROF_SKIP_SIPP set: skipping SIPp interop");
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("sipp"))
        .find(|p| p.is_file());
    assert!(
        found.is_some(),
        "sipp not found: run `bash deploy/install-test-deps.sh` (or set UAPROF_SKIP_SIPP=1)"
    );
    found
}

fn scenario(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../loadtest/sipp");
    root.join(name).to_string_lossy().into_owned()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run_sipp(bin: &PathBuf, srv: &Server, file: &str, extra: &[&str]) -> std::process::Child {
    let dir = tempfile::tempdir().expect("tmp").keep();
    Command::new(bin)
        .current_dir(&dir)
        .args(["-sf", &scenario(file), "-nostdin", "-trace_err"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args([
            "-recv_timeout",
            "25000",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .args(extra)
        .arg(srv.udp.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sipp")
}

fn check(out: Output, what: &str) {
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: sipp failed ({:?})\n{log}",
        out.status
    );
}

#[test]
fn sipp_lifecycle_subscribe_refresh_change_unsubscribe() {
    let Some(bin) = sipp() else { return };
    let srv = Server::start(&[]);
    let child = run_sipp(&bin, &srv, "lifecycle.xml", &["-m", "1"]);
    // Provision the phone once its refresh has been answered (two NOTIFYs delivered).
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.metric("notify_completed_total") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "SIPp never completed the first two NOTIFYs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = put_doc(
        &srv,
        "device",
        "urn:uuid:00000000-0000-0000-0000-000000000001",
        "phone.xml",
        "application/x-acme-profile+xml",
        b"<profile/>",
    );
    assert_eq!(st, 201);
    check(child.wait_with_output().expect("sipp"), "lifecycle");
}

#[test]
fn sipp_refresh_with_suppress_if_match_gets_204() {
    let Some(bin) = sipp() else { return };
    let srv = Server::start(&[]);
    let out = run_sipp(&bin, &srv, "refresh_suppressed.xml", &["-m", "1"])
        .wait_with_output()
        .expect("sipp");
    check(out, "refresh_suppressed");
}

#[test]
fn sipp_bad_event_gets_489() {
    let Some(bin) = sipp() else { return };
    let srv = Server::start(&[]);
    let out = run_sipp(&bin, &srv, "bad_event.xml", &["-m", "1"])
        .wait_with_output()
        .expect("sipp");
    check(out, "bad_event");
}

#[test]
fn sipp_many_phones_subscribe_and_get_notified() {
    let Some(bin) = sipp() else { return };
    let srv = Server::start(&[]);
    let out = run_sipp(
        &bin,
        &srv,
        "subscribe_notify.xml",
        &["-m", "200", "-r", "100", "-l", "50"],
    )
    .wait_with_output()
    .expect("sipp");
    check(out, "subscribe_notify x200");
    assert!(srv.metric("subscriptions_created_total") >= 200.0);
}

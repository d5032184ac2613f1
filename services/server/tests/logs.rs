//! Log output: JSON lines that a shipper can parse, and no colour codes when stderr is a
//! file (issue 13: log files used to be full of escape codes).

mod common;

use std::time::Duration;

use common::{Phone, Server, Sub};

/// Starts a server with its stderr in a file, makes it handle a SUBSCRIBE (spans and
/// events from the engine, the store and the NOTIFY path), stops it, and returns the log.
fn logged_session(format: &str) -> String {
    let (mut srv, path) = Server::start_logged(&["--log-format", format], "debug");
    let mut phone = Phone::new(srv.udp, "MAC%3a00df1e00aa01");
    let (resp, early) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    let first = early
        .into_iter()
        .next()
        .unwrap_or_else(|| phone.expect_notify(Duration::from_secs(10), 200));
    phone.send(&first.response(200, "OK"));
    assert!(srv.stop().success());
    std::fs::read_to_string(&path).expect("read stderr")
}

#[test]
fn json_format_writes_one_json_object_per_line_without_escape_codes() {
    let log = logged_session("json");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "too little logged: {log}");
    for line in &lines {
        assert!(!line.contains("\x1b["), "escape code in {line:?}");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"stopped\"")),
        "the shutdown line is missing: {log}"
    );
}

#[test]
fn text_format_has_no_escape_codes_when_stderr_is_not_a_terminal() {
    let log = logged_session("text");
    assert!(log.lines().count() >= 3, "too little logged: {log}");
    assert!(log.contains("stopped"), "{log}");
    for line in log.lines() {
        assert!(!line.contains("\x1b["), "escape code in {line:?}");
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "{line}"
        );
    }
}

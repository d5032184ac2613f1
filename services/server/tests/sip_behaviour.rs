//! End-to-end SIP behaviour of the real binary (RFC 6665, RFC 6080, RFC 4483, RFC 5839),
//! driven by a plain UDP/TCP client on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{Msg, Phone, Server, Sub, http, http_full, put_doc, sha1_hex};

const T: Duration = Duration::from_secs(10);

fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').find_map(|p| {
        let (n, v) = p.trim().split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

#[test]
fn subscribe_gets_200_then_notify_and_change_notify_points_at_the_document() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a00df1e004cd0");
    let (resp, early) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    assert_eq!(resp.header("Expires"), Some("3600"));
    assert!(
        resp.header("Contact").is_some(),
        "2xx to SUBSCRIBE needs a Contact"
    );
    assert!(phone.to_tag.is_some());

    // Unknown device: accepted, first NOTIFY active and empty.
    let first = early
        .into_iter()
        .next()
        .inspect(|m| phone.send(&m.response(200, "OK")))
        .unwrap_or_else(|| phone.expect_notify(T, 200));
    let state = first
        .header("Subscription-State")
        .expect("Subscription-State");
    assert!(state.starts_with("active"), "{state}");
    assert!(param(state, "expires").is_some_and(|e| e.parse::<u32>().unwrap() <= 3600));
    assert!(first.header("SIP-ETag").is_some());
    assert!(first.header("Event").unwrap().starts_with("ua-profile"));
    assert_eq!(first.header("Content-Length"), Some("0"));
    assert_eq!(first.tag("From"), phone.to_tag);

    // Provisioning the device triggers a URL-bearing NOTIFY.
    let doc = b"<config><sip-server>sbc.example.net</sip-server></config>";
    assert_eq!(
        put_doc(
            &srv,
            "device",
            "00:DF:1E:00:4C:D0",
            "settings.xml",
            "application/x-acme+xml",
            doc
        ),
        201
    );
    let change = phone.expect_notify(T, 200);
    assert!(change.cseq() > first.cseq(), "NOTIFY CSeq went backwards");
    assert_ne!(change.header("SIP-ETag"), first.header("SIP-ETag"));
    let ctype = change.header("Content-Type").expect("Content-Type");
    assert!(ctype.starts_with("message/external-body"), "{ctype}");
    assert_eq!(param(ctype, "access-type"), Some("URL"));
    assert_eq!(param(ctype, "size"), Some(doc.len().to_string().as_str()));
    assert_eq!(param(ctype, "hash"), Some(sha1_hex(doc).as_str()));
    let expiration = param(ctype, "expiration").expect("expiration");
    assert!(expiration.ends_with("GMT"), "{expiration}");
    let body = String::from_utf8_lossy(&change.body).to_string();
    assert!(body.contains("Content-ID:"), "{body}");
    assert!(body.contains("application/x-acme+xml"), "{body}");

    // The URL serves exactly those bytes, with ETag and 304 on revalidation.
    let path = &common::profile_path(ctype);
    let (st, hdrs, got) = http_full(srv.http, "GET", path, &[], b"");
    assert_eq!(st, 200);
    assert_eq!(got, doc);
    let etag = hdrs
        .iter()
        .find(|(n, _)| n == "etag")
        .map(|(_, v)| v.clone())
        .expect("ETag");
    let (st, _) = http(srv.http, "GET", path, &[("If-None-Match", &etag)], b"");
    assert_eq!(st, 304);
}

#[test]
fn protocol_rejections() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a001122334455");

    let (r, _) = phone.subscribe(&Sub {
        event: "presence",
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(489), "{}", r.raw);
    let allow = r.header("Allow-Events").expect("Allow-Events on 489");
    assert!(allow.contains("ua-profile") && allow.contains("sip-profile"));

    let (r, _) = phone.subscribe(&Sub {
        event: "ua-profile;profile-type=application",
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(404), "{}", r.raw);

    let (r, _) = phone.subscribe(&Sub {
        expires: Some(5),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(423), "{}", r.raw);
    assert_eq!(r.header("Min-Expires"), Some("60"));

    let (r, _) = phone.subscribe(&Sub {
        accept: Some("message/external-body;q=0"),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(406), "{}", r.raw);

    // Refresh of a dialog the server does not have.
    phone.to_tag = Some("00000000deadbeef".into());
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(481), "{}", r.raw);

    // Malformed but answerable (CSeq names another method): 400 with a reason phrase.
    let bad = format!(
        "SUBSCRIBE sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKbad1\r\n\
         From: <sip:x@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: bad1\r\n\
         CSeq: 1 NOTIFY\r\nEvent: ua-profile;profile-type=device\r\nContent-Length: 0\r\n\r\n",
        phone.local
    );
    phone.send(&bad);
    let r = phone.recv(T).expect("answer to malformed request");
    assert_eq!(r.status(), Some(400), "{}", r.raw);
    assert!(
        r.first.len() > "SIP/2.0 400 ".len(),
        "400 needs a reason phrase"
    );
    // Without a CSeq no response can be formed: dropped and counted.
    phone.send(&bad.replace("CSeq: 1 NOTIFY\r\n", ""));
    // Garbage is dropped and counted; the server still answers afterwards.
    phone.send("\u{1}\u{2}garbage that is not SIP\r\n\r\n");
    let mut fresh = Phone::new(srv.udp, "MAC%3a001122334456");
    let (r, _) = fresh.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    assert!(srv.metric("sip_malformed_total") >= 3.0);
}

#[test]
fn retransmitted_subscribe_is_answered_from_cache_and_handled_once() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000aa");
    let text = phone.subscribe_text(&Sub::default(), "z9hG4bKretrans1");
    phone.send(&text);
    let mut finals = Vec::new();
    let mut notifies = Vec::new();
    let mut sent_again = false;
    while let Some(m) = phone.recv(Duration::from_millis(1500)) {
        if m.is_request("NOTIFY") {
            phone.send(&m.response(200, "OK"));
            notifies.push(m);
        } else if m.status().is_some_and(|s| s >= 200) {
            finals.push(m);
        }
        if !sent_again && !finals.is_empty() {
            phone.send(&text);
            phone.send(&text);
            sent_again = true;
        }
    }
    assert_eq!(
        finals.len(),
        3,
        "each retransmission gets the cached final response"
    );
    assert!(
        finals.iter().all(|f| f.tag("To") == finals[0].tag("To")),
        "same dialog"
    );
    assert_eq!(notifies.len(), 1, "the work is done once");
}

#[test]
fn unsubscribe_fetch_and_conditional_refresh() {
    let srv = Server::start(&[]);
    assert_eq!(
        put_doc(
            &srv,
            "device",
            "0000000000bb",
            "a.xml",
            "application/xml",
            b"<a/>"
        ),
        201
    );

    // Expires: 0 on a new dialog is a fetch: 200, one NOTIFY terminated, nothing stored.
    let mut fetch = Phone::new(srv.udp, "MAC%3a0000000000bb");
    let (r, _) = fetch.subscribe(&Sub {
        expires: Some(0),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    let n = fetch.expect_notify(T, 200);
    assert!(
        n.header("Subscription-State")
            .unwrap()
            .starts_with("terminated")
    );
    assert!(
        n.header("Content-Type")
            .unwrap()
            .starts_with("message/external-body")
    );

    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000bb");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    let first = phone.expect_notify(T, 200);
    let etag = first.header("SIP-ETag").expect("SIP-ETag").to_owned();

    // Refresh with a matching Suppress-If-Match: 204 and no NOTIFY.
    let extra = format!("Suppress-If-Match: {etag}\r\n");
    let (r, _) = phone.subscribe(&Sub {
        extra: &extra,
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(204), "{}", r.raw);
    if let Some(m) = phone.expect_silence(Duration::from_millis(700)) {
        panic!("NOTIFY after 204 (first CSeq {}): {}", first.cseq(), m.raw);
    }

    // Refresh with a stale tag: 200 and a NOTIFY.
    let (r, _) = phone.subscribe(&Sub {
        extra: "Suppress-If-Match: stale\r\n",
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200));
    let again = phone.expect_notify(T, 200);
    assert!(again.cseq() > first.cseq());

    // Unsubscribe: 200, NOTIFY terminated, then the dialog is gone.
    let (r, _) = phone.subscribe(&Sub {
        expires: Some(0),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200));
    let last = phone.expect_notify(T, 200);
    assert!(
        last.header("Subscription-State")
            .unwrap()
            .starts_with("terminated")
    );
    assert!(last.cseq() > again.cseq());
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(481));
}

#[test]
fn failed_notify_removes_the_subscription_and_instance_replaces() {
    let srv = Server::start(&[]);
    // A NOTIFY answered 481 ends the subscription.
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000cc");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    phone.expect_notify(T, 481);
    std::thread::sleep(Duration::from_millis(300));
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(
        r.status(),
        Some(481),
        "subscription survived a 481 to its NOTIFY"
    );

    // A rebooted phone (same +sip.instance, new Call-ID) replaces its old subscription.
    let extra = "X-Test: reboot\r\n";
    let mut old = Phone::new(srv.udp, "MAC%3a0000000000dd");
    let sub = |p: &mut Phone| {
        let branch = format!("z9hG4bK{}", common::unique());
        let text = p
            .subscribe_text(&Sub { extra, ..Sub::default() }, &branch)
            .replace(
                &format!("Contact: <sip:phone@{}>", p.local),
                &format!(
                    "Contact: <sip:phone@{}>;+sip.instance=\"<urn:uuid:6f3c1d52-0000-4000-8000-000000000001>\"",
                    p.local
                ),
            );
        p.send(&text);
        loop {
            let m = p.recv(T).expect("response");
            if m.status().is_some_and(|s| s >= 200) {
                if p.to_tag.is_none() {
                    p.to_tag = m.tag("To");
                }
                return m;
            }
            if m.is_request("NOTIFY") {
                p.send(&m.response(200, "OK"));
            }
        }
    };
    assert_eq!(sub(&mut old).status(), Some(200));
    let mut new = Phone::new(srv.udp, "MAC%3a0000000000dd");
    assert_eq!(sub(&mut new).status(), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    let (r, _) = old.subscribe(&Sub::default());
    assert_eq!(
        r.status(),
        Some(481),
        "old subscription of the same instance survived"
    );
    let (r, _) = new.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
}

#[test]
fn expiry_sends_terminated_timeout() {
    let srv = Server::start(&["--expires-min", "1"]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000ee");
    let (r, _) = phone.subscribe(&Sub {
        expires: Some(2),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200));
    let first = phone.expect_notify(T, 200);
    let end = phone.expect_notify(T, 200);
    let state = end.header("Subscription-State").expect("state");
    assert!(state.starts_with("terminated"), "{state}");
    assert_eq!(param(state, "reason"), Some("timeout"));
    assert!(end.cseq() > first.cseq());
    // Exactly one timeout NOTIFY.
    assert!(phone.expect_silence(Duration::from_millis(1500)).is_none());
}

#[test]
fn subscriptions_and_cseq_survive_a_restart() {
    let mut srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000ff");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    let first = phone.expect_notify(T, 200);
    let data = srv.data.clone();
    let tmp = srv.take_tmp();
    assert!(srv.stop().success(), "graceful shutdown failed");

    let srv2 = Server::start_in(&data, &[]);
    phone.server = srv2.udp;
    assert_eq!(
        put_doc(
            &srv2,
            "device",
            "0000000000ff",
            "s.xml",
            "application/xml",
            b"<s/>"
        ),
        201
    );
    let change = phone.expect_notify(T, 200);
    assert!(
        change.cseq() > first.cseq(),
        "CSeq went backwards across a restart"
    );
    assert_eq!(change.header("Call-ID"), first.header("Call-ID"));
    // The refresh still finds the dialog.
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    drop(tmp);
}

#[test]
fn device_subscription_gets_device_class_and_default_user_documents() {
    let srv = Server::start(&[]);
    assert_eq!(
        put_doc(
            &srv,
            "device",
            "0000000000a1",
            "dev.xml",
            "application/xml",
            b"<d/>"
        ),
        201
    );
    assert_eq!(
        put_doc(
            &srv,
            "class",
            "acme:Z100",
            "fw.xml",
            "application/xml",
            b"<fw/>"
        ),
        201
    );
    assert_eq!(
        put_doc(
            &srv,
            "user",
            "alice@example.com",
            "u.xml",
            "application/xml",
            b"<u/>"
        ),
        201
    );
    let st = common::set_default_user(&srv, "0000000000a1", "sip:alice@example.com");
    assert!(st == 200 || st == 201, "attributes: {st}");
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000a1");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    let n = phone.expect_notify(T, 200);
    let ctype = n.header("Content-Type").expect("Content-Type");
    assert!(ctype.starts_with("multipart/mixed"), "{ctype}");
    let body = String::from_utf8_lossy(&n.body);
    for name in ["dev.xml", "fw.xml", "u.xml"] {
        assert!(body.contains(name), "{name} missing from {body}");
    }
    assert_eq!(body.matches("message/external-body").count(), 3);

    // A change to the default user's document reaches the device subscription.
    assert_eq!(
        put_doc(
            &srv,
            "user",
            "alice@example.com",
            "u.xml",
            "application/xml",
            b"<u2/>"
        ),
        200
    );
    // The change must arrive; a NOTIFY of the state before it may come first (the walk of
    // the default-user change above can reach the subscription before its first NOTIFY's
    // confirmation is recorded).
    let deadline = Instant::now() + T;
    let want = sha1_hex(b"<u2/>");
    loop {
        let n = phone.expect_notify(deadline.saturating_duration_since(Instant::now()), 200);
        if String::from_utf8_lossy(&n.body).contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no NOTIFY with the change: {}",
            n.raw
        );
    }
}

#[test]
fn notify_follows_record_route() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000a2");
    // The "proxy" is the phone's own socket: the NOTIFY must come to it with a Route header.
    let rr = format!("Record-Route: <sip:{};lr>\r\n", phone.local);
    let (r, early) = phone.subscribe(&Sub {
        extra: &rr,
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200));
    let n = early
        .into_iter()
        .next()
        .unwrap_or_else(|| phone.expect_notify(T, 200));
    let route = n.header("Route").expect("Route header from the route set");
    assert!(
        route.contains(&phone.local.to_string()) && route.contains("lr"),
        "{route}"
    );
    assert!(
        n.first.contains("sip:phone@"),
        "Request-URI is the remote target: {}",
        n.first
    );
}

#[test]
fn tcp_subscribe_and_oversize_refusal() {
    let srv = Server::start(&[]);
    let mut s = TcpStream::connect(srv.tcp).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    let local = s.local_addr().expect("addr");
    let msg = format!(
        "SUBSCRIBE sip:MAC%3a0000000000a3@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcp1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=t1\r\nTo: <sip:a@example.com>\r\nCall-ID: tcp1\r\n\
         CSeq: 1 SUBSCRIBE\r\nContact: <sip:phone@{local};transport=tcp>\r\n\
         Event: ua-profile;profile-type=device\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(msg.as_bytes()).expect("write");
    let msgs = common::read_stream_msgs(&mut s, 2);
    assert_eq!(msgs[0].status(), Some(200), "{}", msgs[0].raw);
    assert!(msgs[1].is_request("NOTIFY"), "{}", msgs[1].raw);
    assert!(msgs[1].header("Via").unwrap().contains("TCP"));
    s.write_all(msgs[1].response(200, "OK").as_bytes())
        .expect("answer");

    // An oversized message is refused: the stream is closed rather than buffered.
    let mut big = TcpStream::connect(srv.tcp).expect("connect");
    big.set_read_timeout(Some(T)).expect("timeout");
    let head = "SUBSCRIBE sip:x@example.com SIP/2.0\r\nContent-Length: 10000000\r\n\r\n";
    big.write_all(head.as_bytes()).expect("write");
    let _ = big.write_all(&vec![b'a'; 100_000]);
    // Closed shows as end of stream, or as a reset when our unread bytes were discarded; a
    // read timeout means the server kept buffering.
    let mut sink = Vec::new();
    match big.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "oversized stream should be closed, got {e}"
        ),
    }
}

#[test]
fn check_config_and_bad_config_exit_64() {
    let bin = env!("CARGO_BIN_EXE_uaprof");
    let ok = std::process::Command::new(bin)
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("expires_default = 86400"));
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[notifier]\nexpires_min = 100\nexpires_default = 50\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin)
        .args(["--check-config", "--config", bad.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    std::fs::write(&bad, "no_such_field = 1\n").expect("write");
    let out = std::process::Command::new(bin)
        .args(["--check-config", "--config", bad.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_field"));
    // Content settings are checked too, not only when the content tier starts.
    std::fs::write(&bad, "[content]\npublic_base_url = \"ftp://x\"\n").expect("write");
    let out = std::process::Command::new(bin)
        .args(["--check-config", "--config", bad.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_base_url"));
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("uaprof.toml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn unanswered_notify_is_retransmitted_then_times_out_and_removes_the_subscription() {
    // T1 = 50 ms makes Timer F 3.2 s (64 × T1) instead of 32 s.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "[notifier]\nt1 = \"50ms\"\nt2 = \"400ms\"\n");
    let srv = Server::start(&["--config", &cfg]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000a4");
    let (r, early) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    // Never answer: count the copies of the first NOTIFY (Timer E retransmissions).
    let mut copies = early.iter().filter(|m| m.is_request("NOTIFY")).count();
    let mut first = early.iter().find(|m| m.is_request("NOTIFY")).map(Msg::cseq);
    while let Some(m) = phone.recv(Duration::from_secs(5)) {
        if m.is_request("NOTIFY") {
            let cseq = *first.get_or_insert(m.cseq());
            assert_eq!(m.cseq(), cseq, "a retransmission keeps its CSeq");
            copies += 1;
        }
    }
    assert!(
        copies >= 4,
        "expected Timer E retransmissions, got {copies} copies"
    );
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(
        r.status(),
        Some(481),
        "subscription survived a NOTIFY timeout"
    );
    assert!(srv.metric("notify_retransmissions_total") >= 3.0);
}

#[test]
fn effective_by_inline_bodies_and_reject_policy() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000a5");
    let (r, _) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200));
    phone.expect_notify(T, 200);
    let path = "/provision/v1/device/0000000000a5/documents/p.xml?effective-by=120";
    let (st, _) = http(
        srv.provision,
        "PUT",
        path,
        &[("Content-Type", "application/xml")],
        b"<p/>",
    );
    assert_eq!(st, 201);
    let change = phone.expect_notify(T, 200);
    let event = change.header("Event").expect("Event");
    assert_eq!(param(event, "effective-by"), Some("120"), "{event}");

    // A subscriber that cannot take content indirection gets the document inline.
    let mut inline = Phone::new(srv.udp, "MAC%3a0000000000a5");
    let (r, _) = inline.subscribe(&Sub {
        accept: Some("application/xml"),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200));
    let n = inline.expect_notify(T, 200);
    assert_eq!(
        n.header("Content-Type")
            .map(|c| c.split(';').next().unwrap().trim()),
        Some("application/xml")
    );
    assert_eq!(n.body, b"<p/>");

    // Policy switch: unknown subscribers get 403.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "[notifier]\nunknown_subscriber = \"reject\"\n");
    let strict = Server::start(&["--config", &cfg]);
    let mut unknown = Phone::new(strict.udp, "MAC%3a0000000000a6");
    let (r, _) = unknown.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(403), "{}", r.raw);
}

#[test]
fn an_expires_beyond_32_bits_is_clamped_and_a_malformed_one_refused() {
    let srv = Server::start(&[]);
    let expires = |phone: &mut Phone, value: &str| {
        let extra = format!("Expires: {value}\r\n");
        let (resp, _) = phone.subscribe(&Sub {
            expires: None,
            extra: &extra,
            ..Sub::default()
        });
        (resp.status(), resp.header("Expires").map(str::to_owned))
    };
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000e5");
    let (status, at_limit) = expires(&mut phone, "4294967295");
    assert_eq!(status, Some(200));
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000e6");
    assert_eq!(
        expires(&mut phone, "99999999999999999999"),
        (Some(200), at_limit),
        "clamped to 2^32-1, then to the server's maximum"
    );
    for bad in ["-1", "12a", "1e3"] {
        let mut phone = Phone::new(srv.udp, "MAC%3a0000000000e7");
        assert_eq!(expires(&mut phone, bad).0, Some(400), "Expires: {bad}");
    }
}

#[test]
fn an_empty_accept_header_accepts_nothing_while_an_absent_one_means_the_default() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000e8");
    let (resp, _) = phone.subscribe(&Sub {
        accept: None,
        extra: "Accept: \r\n",
        ..Sub::default()
    });
    assert_eq!(resp.status(), Some(406), "{}", resp.raw);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000e9");
    let (resp, _) = phone.subscribe(&Sub {
        accept: None,
        ..Sub::default()
    });
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
}

#[test]
fn a_required_extension_is_refused_with_420_naming_it() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000ea");
    let (resp, _) = phone.subscribe(&Sub {
        extra: "Require: 100rel, foo\r\n",
        ..Sub::default()
    });
    assert_eq!(resp.status(), Some(420), "{}", resp.raw);
    assert_eq!(
        resp.header("Unsupported"),
        Some("100rel, foo"),
        "{}",
        resp.raw
    );
    // Nothing was created: the same phone subscribes normally afterwards.
    let (resp, _) = phone.subscribe(&Sub::default());
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
}

#[test]
fn the_200_to_subscribe_copies_record_route_in_order_and_notifies_follow_the_route() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000eb");
    // The "proxy" is the phone's own address, so the NOTIFY routed through it arrives here.
    let hop = format!("<sip:{};lr>", phone.local);
    let extra = format!(
        "Record-Route: {hop}, <sip:p2.invalid;lr;ftag=x>\r\nRecord-Route: <sip:p3.invalid;lr>\r\n"
    );
    let (resp, early) = phone.subscribe(&Sub {
        extra: &extra,
        ..Sub::default()
    });
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    let copied: Vec<&str> = resp.headers_named("Record-Route");
    assert_eq!(
        copied.join(", "),
        format!("{hop}, <sip:p2.invalid;lr;ftag=x>, <sip:p3.invalid;lr>"),
        "{}",
        resp.raw
    );
    let notify = early
        .into_iter()
        .next()
        .inspect(|m| phone.send(&m.response(200, "OK")))
        .unwrap_or_else(|| phone.expect_notify(T, 200));
    assert!(
        notify
            .header("Route")
            .is_some_and(|r| r.contains(&phone.local.to_string())),
        "the NOTIFY follows the route set: {}",
        notify.raw
    );
}

/// Sends `text` (a SUBSCRIBE from `phone`) and returns the final response.
fn final_response(phone: &Phone, text: &str) -> Msg {
    phone.send(text);
    loop {
        let m = phone.recv(T).expect("final response");
        if m.status().is_some_and(|s| s >= 200) {
            return m;
        }
    }
}

#[test]
fn notifies_go_to_the_subscribe_source_never_to_a_third_party() {
    let srv = Server::start(&[]);
    // A Contact naming another socket (the "victim"): with no route set over UDP the NOTIFY
    // goes to the SUBSCRIBE's source, and the victim receives nothing.
    let victim = UdpSocket::bind("127.0.0.1:0").expect("bind victim");
    victim
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let victim_addr = victim.local_addr().expect("addr");
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000f1");
    let text = phone
        .subscribe_text(&Sub::default(), "z9hG4bKsrc1")
        .replace(
            &format!("Contact: <sip:phone@{}>", phone.local),
            &format!("Contact: <sip:phone@{victim_addr}>"),
        );
    let resp = final_response(&phone, &text);
    assert_eq!(resp.status(), Some(200), "{}", resp.raw);
    let n = phone.expect_notify(T, 200);
    assert!(
        n.first.contains(&victim_addr.to_string()),
        "R-URI is the Contact: {}",
        n.first
    );
    let mut buf = [0u8; 4096];
    assert!(
        victim.recv_from(&mut buf).is_err(),
        "the Contact's socket got a NOTIFY"
    );

    // A Record-Route to a loopback host other than the source (127.0.0.2) is refused with 403;
    // a TLS Contact over UDP with 400. Neither creates a subscription.
    for (n, (extra, contact, status)) in [
        ("Record-Route: <sip:127.0.0.2:5999;lr>\r\n", None, 403),
        ("", Some("<sip:phone@127.0.0.1:5999;transport=tls>"), 400),
        ("", Some("<sips:phone@127.0.0.1:5999>"), 400),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = Phone::new(srv.udp, &format!("MAC%3a0000000000f{}", n + 2));
        let mut text = p.subscribe_text(
            &Sub {
                extra,
                ..Sub::default()
            },
            &format!("z9hG4bKsrc2{n}"),
        );
        if let Some(c) = contact {
            text = text.replace(&format!("<sip:phone@{}>", p.local), c);
        }
        let resp = final_response(&p, &text);
        assert_eq!(resp.status(), Some(status), "{}", resp.raw);
        assert!(
            p.recv(Duration::from_millis(300)).is_none(),
            "no NOTIFY after a refusal"
        );
    }
}

#[test]
fn a_notify_too_large_for_udp_goes_over_tcp_to_the_phone() {
    // A limit under any multipart NOTIFY's size, so the first one must leave UDP.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "[notifier]\nudp_max_notify_bytes = 300\n");
    let srv = Server::start(&["--config", &cfg]);
    let mut phone = Phone::new(srv.udp, "MAC%3a0000000000f9");
    // The harness phone takes TCP on the port of its UDP socket (the Contact's port).
    let (r, early) = phone.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    assert!(
        early.iter().all(|m| !m.is_request("NOTIFY")),
        "no NOTIFY over UDP"
    );
    let (n, from) = phone.recv_from(T).expect("a NOTIFY");
    assert!(n.is_request("NOTIFY"), "{}", n.raw);
    assert!(phone.came_over_tcp(from), "the NOTIFY came over UDP");
    let via = n.header("Via").expect("Via");
    assert!(via.starts_with("SIP/2.0/TCP "), "the Via says TCP: {via}");
    phone.reply(&n.response(200, "OK"), from);
    assert!(
        phone.recv(Duration::from_millis(300)).is_none(),
        "nothing over UDP"
    );
}

#[test]
fn a_source_over_its_subscription_cap_gets_403_until_one_ends() {
    // The phones of this test all send from 127.0.0.1, which is not exempt here.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "[notifier]\nmax_subscriptions_per_source = 2\nsource_exempt = []\n",
    );
    let srv = Server::start(&["--config", &cfg]);
    let mut phones: Vec<Phone> = (0..2)
        .map(|n| {
            let mut p = Phone::new(srv.udp, &format!("MAC%3a0000000c0a0{n}"));
            let (r, _) = p.subscribe(&Sub::default());
            assert_eq!(r.status(), Some(200), "{}", r.raw);
            p.expect_notify(T, 200);
            p
        })
        .collect();
    let mut third = Phone::new(srv.udp, "MAC%3a0000000c0a02");
    let (r, _) = third.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(403), "{}", r.raw);
    assert!(r.first.contains("Too many subscriptions"), "{}", r.first);
    assert!(
        third.expect_silence(Duration::from_millis(300)).is_none(),
        "a refused SUBSCRIBE got a NOTIFY"
    );
    assert_eq!(
        srv.metric("sip_shed_total{reason=\"source_subscriptions\"}"),
        1.0
    );
    // A fetch (Expires: 0) creates no subscription: the cap does not apply to it.
    let mut fetch = Phone::new(srv.udp, "MAC%3a0000000c0a03");
    let (r, _) = fetch.subscribe(&Sub {
        expires: Some(0),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    fetch.expect_notify(T, 200);
    // An unsubscribe makes room.
    let (r, _) = phones[0].subscribe(&Sub {
        expires: Some(0),
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    phones[0].expect_notify(T, 200);
    let mut fourth = Phone::new(srv.udp, "MAC%3a0000000c0a04");
    let (r, _) = fourth.subscribe(&Sub::default());
    assert_eq!(r.status(), Some(200), "{}", r.raw);
}

/// A TCP subscriber whose connection has closed is notified over a new connection to its
/// Contact's port (where it listens), not at the flow's ephemeral port, and keeps its
/// subscription.
#[test]
fn a_tcp_subscriber_is_notified_at_its_contact_after_its_connection_closed() {
    let srv = Server::start(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let contact = listener.local_addr().expect("addr");
    let read_msgs = common::read_stream_msgs;
    {
        let mut s = TcpStream::connect(srv.tcp).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        let local = s.local_addr().expect("addr");
        let msg = format!(
            "SUBSCRIBE sip:MAC%3a0000000000a7@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcpc1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=t7\r\nTo: <sip:a@example.com>\r\nCall-ID: tcp-contact-1\r\n\
             CSeq: 1 SUBSCRIBE\r\nContact: <sip:phone@{contact};transport=tcp>\r\n\
             Event: ua-profile;profile-type=device\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(msg.as_bytes()).expect("write");
        let msgs = read_msgs(&mut s, 2);
        assert_eq!(msgs[0].status(), Some(200), "{}", msgs[0].raw);
        assert!(msgs[1].is_request("NOTIFY"), "{}", msgs[1].raw);
        s.write_all(msgs[1].response(200, "OK").as_bytes())
            .expect("answer");
        // The phone goes away (a reboot of its TCP stack, a NAT binding lost, ...).
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = put_doc(
        &srv,
        "device",
        "0000000000a7",
        "c.xml",
        "application/xml",
        b"<c/>",
    );
    assert_eq!(st, 201);
    listener.set_nonblocking(false).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    let (mut conn, _) = rx
        .recv_timeout(T)
        .expect("the server dialled the Contact")
        .expect("accept");
    conn.set_read_timeout(Some(T)).expect("timeout");
    let msgs = read_msgs(&mut conn, 1);
    assert!(msgs[0].is_request("NOTIFY"), "{}", msgs[0].raw);
    assert!(
        msgs[0].raw.contains("c.xml"),
        "the change NOTIFY points at the document: {}",
        msgs[0].raw
    );
    conn.write_all(msgs[0].response(200, "OK").as_bytes())
        .expect("answer");
    assert_eq!(srv.metric("notify_flow_gone_total"), 1.0);
}

/// A plug-and-play phone's SUBSCRIBE, shaped as Snom documents it (quoted Event parameters,
/// `Accept: application/url`, the MAC as `MAC%3a<mac>`), gets NOTIFYs whose whole body is one
/// URL it can fetch.
#[test]
fn a_pnp_subscribe_accepting_application_url_gets_a_url_body() {
    let srv = Server::start(&[]);
    let mut phone = Phone::new(srv.udp, "MAC%3a000413aabb01");
    let sub = Sub {
        event: "ua-profile;profile-type=\"device\";vendor=\"snom\";model=\"snom720\";version=\"8.7.5.35\"",
        accept: Some("application/url"),
        ..Sub::default()
    };
    pnp_subscribe(&mut phone, &sub);
    let doc = b"<settings><phone-settings/></settings>";
    let st = put_doc(
        &srv,
        "device",
        "000413aabb01",
        "snom720.xml",
        "application/xml",
        doc,
    );
    assert_eq!(st, 201);
    let n = phone.expect_notify(T, 200);
    assert_eq!(
        n.header("Content-Type"),
        Some("application/url"),
        "{}",
        n.raw
    );
    let url = String::from_utf8(n.body.clone()).expect("utf-8");
    assert!(
        url.ends_with("/snom720.xml") && !url.contains(char::is_whitespace),
        "{url:?}"
    );
    let path = &url[url.find("/profiles/").expect("path")..];
    let (st, got) = http(srv.http, "GET", path, &[], b"");
    assert_eq!((st, got.as_slice()), (200, doc.as_slice()));
}

/// Subscribes `phone` with `sub`, answers the first NOTIFY, and returns it.
fn pnp_subscribe(phone: &mut Phone, sub: &Sub<'_>) -> common::Msg {
    let (r, early) = phone.subscribe(sub);
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    let first = early
        .into_iter()
        .next()
        .unwrap_or_else(|| phone.expect_notify(T, 200));
    phone.send(&first.response(200, "OK"));
    first
}

/// Yealink and Grandstream phones treat the notified URL as a folder and append their own
/// file names (`<mac>.cfg`, `y000000000000.boot`, `cfg<mac>.xml`): they are notified of the
/// device's provisioning folder, under which the device's, its default user's and its
/// class's documents are served by name, with the folder's signature in its path.
#[test]
fn folder_vendors_are_notified_of_a_provisioning_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(&cfg, common::url_signing_toml(dir.path())).expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let boot = b"#!version:1.0.0.1\nconfig_files = \"001565aabb02.cfg\"\n";
    let own = b"#!version:1.0.0.1\naccount.1.enable = 1\n";
    let line = b"#!version:1.0.0.1\naccount.1.user_name = 2001\n";
    // Class keys are the Event's vendor and model as the phone spells them.
    let class = "Yealink:SIP-T46S";
    assert_eq!(
        put_doc(
            &srv,
            "class",
            class,
            "y000000000000.boot",
            "text/plain",
            boot
        ),
        201
    );
    assert_eq!(
        put_doc(
            &srv,
            "device",
            "001565aabb02",
            "001565aabb02.cfg",
            "text/plain",
            own
        ),
        201
    );
    assert_eq!(
        put_doc(
            &srv,
            "user",
            "2001@example.com",
            "line.cfg",
            "text/plain",
            line
        ),
        201
    );
    let st = common::set_default_user(&srv, "001565aabb02", "sip:2001@example.com");
    assert_eq!(st, 200);

    let mut phone = Phone::new(srv.udp, "MAC%3A001565AABB02");
    let first = pnp_subscribe(
        &mut phone,
        &Sub {
            event: "ua-profile;profile-type=\"device\";vendor=\"Yealink\";model=\"SIP-T46S\";version=\"66.86.0.15\"",
            accept: Some("application/url"),
            expires: Some(0),
            ..Sub::default()
        },
    );
    assert_eq!(
        first.header("Content-Type"),
        Some("application/url"),
        "{}",
        first.raw
    );
    let folder = String::from_utf8(first.body.clone()).expect("utf-8");
    assert!(
        folder.ends_with('/') && folder.contains("/profiles/set/exp="),
        "{folder}"
    );
    let base = &folder[folder.find("/profiles/").expect("path")..];
    for (name, want) in [
        ("y000000000000.boot", &boot[..]),
        ("001565aabb02.cfg", &own[..]),
        ("line.cfg", &line[..]),
    ] {
        let (st, got) = http(srv.http, "GET", &format!("{base}{name}"), &[], b"");
        assert_eq!((st, got.as_slice()), (200, want), "{name} in {folder}");
    }
    let (st, _) = http(srv.http, "GET", &format!("{base}nothing.cfg"), &[], b"");
    assert_eq!(st, 404);
    // The folder's signature covers the device and the class: another device's folder, or
    // a forged token, is refused before anything is looked up.
    let other = base.replacen("001565aabb02", "001565aabb03", 1);
    assert_eq!(
        http(
            srv.http,
            "GET",
            &format!("{other}001565aabb02.cfg"),
            &[],
            b""
        )
        .0,
        403
    );
    let forged = base.replacen("sig=", "sig=0", 1);
    assert_eq!(
        http(
            srv.http,
            "GET",
            &format!("{forged}y000000000000.boot"),
            &[],
            b""
        )
        .0,
        403
    );

    // Grandstream appends names too; Snom (the file form) is covered above.
    let mut gs = Phone::new(srv.udp, "MAC%3a000b82aabb04");
    assert_eq!(
        put_doc(
            &srv,
            "device",
            "000b82aabb04",
            "cfg000b82aabb04.xml",
            "application/xml",
            b"<gs/>"
        ),
        201
    );
    let first = pnp_subscribe(
        &mut gs,
        &Sub {
            event: "ua-profile;profile-type=\"device\";vendor=\"Grandstream\";model=\"GXP2170\";version=\"1.0.11.3\"",
            accept: Some("application/url"),
            expires: Some(0),
            ..Sub::default()
        },
    );
    let folder = String::from_utf8(first.body.clone()).expect("utf-8");
    let base = &folder[folder.find("/profiles/").expect("path")..];
    let (st, got) = http(
        srv.http,
        "GET",
        &format!("{base}cfg000b82aabb04.xml"),
        &[],
        b"",
    );
    assert_eq!((st, got.as_slice()), (200, &b"<gs/>"[..]), "{folder}");
}

/// A plug-and-play SUBSCRIBE that names no device (AudioCodes: `sip:224.0.1.75`, the model
/// only) is not refused: it subscribes to its model's defaults, and without a model to its
/// network's.
#[test]
fn a_device_without_identity_gets_its_models_or_its_networks_defaults() {
    let srv = Server::start(&[]);
    assert_eq!(
        put_doc(
            &srv,
            "class",
            "AudioCodes:405HD",
            "405HD.cfg",
            "text/plain",
            b"model"
        ),
        201
    );
    assert_eq!(
        put_doc(
            &srv,
            "local-network",
            "example.com",
            "net.cfg",
            "text/plain",
            b"network"
        ),
        201
    );
    for (event, want) in [
        (
            "ua-profile;profile-type=\"device\";vendor=\"AudioCodes\";model=\"405HD\";version=\"3.4.4\"",
            "/405HD.cfg",
        ),
        ("ua-profile;profile-type=device", "/net.cfg"),
    ] {
        let mut phone = Phone::new(srv.udp, "unused");
        phone.uri = if want == "/net.cfg" {
            "sip:example.com".into()
        } else {
            "sip:224.0.1.75".into()
        };
        let first = pnp_subscribe(
            &mut phone,
            &Sub {
                event,
                accept: Some("application/url"),
                expires: Some(0),
                ..Sub::default()
            },
        );
        let url = String::from_utf8(first.body.clone()).expect("utf-8");
        assert!(url.ends_with(want), "{event}: {url:?}\n{}", first.raw);
        let path = &url[url.find("/profiles/").expect("path")..];
        assert_eq!(http(srv.http, "GET", path, &[], b"").0, 200);
    }
    // A user part that is no device id is a mistake, not a device without identity.
    let mut typo = Phone::new(srv.udp, "00df1e00zz01");
    let (r, _) = typo.subscribe(&Sub {
        event: "ua-profile;profile-type=device;vendor=\"AudioCodes\";model=\"405HD\"",
        ..Sub::default()
    });
    assert_eq!(r.status(), Some(400), "{}", r.raw);
}

/// A phone that fetched its profile with a plug-and-play SUBSCRIBE (`Expires: 0`) is
/// remembered: a change to its documents sends it one out-of-dialog NOTIFY with its vendor's
/// resync Event (`check-sync` for Snom, `resync` for Cisco), `reboot=false`, on a Call-ID
/// of its own and without a To tag; a write that leaves its documents as they were sends
/// nothing, and a NOTIFY the phone refuses does not make the server forget it.
#[test]
fn a_plug_and_play_phone_is_sent_check_sync_when_its_documents_change() {
    let srv = Server::start(&[]);
    let mut phones = Vec::new();
    for (mac, vendor, model, event) in [
        ("000413aabb05", "snom", "D785", "check-sync;reboot=false"),
        ("0008feaabb06", "Cisco", "SPA504G", "resync;reboot=false"),
    ] {
        assert_eq!(
            put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v1"),
            201
        );
        let mut phone = Phone::new(srv.udp, &format!("MAC%3a{mac}"));
        let ev = format!(
            "ua-profile;profile-type=\"device\";vendor=\"{vendor}\";model=\"{model}\";version=\"1\""
        );
        let first = pnp_subscribe(
            &mut phone,
            &Sub {
                event: &ev,
                accept: Some("application/url"),
                expires: Some(0),
                ..Sub::default()
            },
        );
        assert!(!first.body.is_empty(), "{}", first.raw);
        phones.push((mac, phone, event, first));
    }
    for (mac, phone, event, first) in &phones {
        assert_eq!(
            put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v2"),
            200
        );
        let n = phone.expect_notify(T, 200);
        assert_eq!(n.header("Event"), Some(*event), "{}", n.raw);
        assert_eq!(n.tag("To"), None, "{}", n.raw);
        assert_ne!(n.header("Call-ID"), first.header("Call-ID"), "{}", n.raw);
        assert!(
            n.header("Subscription-State")
                .is_some_and(|s| s.starts_with("terminated")),
            "{}",
            n.raw
        );
        assert!(n.body.is_empty(), "{}", n.raw);
    }
    // The same bytes again: a new version, the same documents; the phones have them.
    let (mac, phone, event, _) = &phones[0];
    assert_eq!(
        put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v2"),
        200
    );
    if let Some(m) = phone.expect_silence(Duration::from_secs(2)) {
        assert!(!m.is_request("NOTIFY"), "unchanged documents: {}", m.raw);
    }
    // Refused (481: no such dialog, as a phone may well answer): still remembered.
    assert_eq!(
        put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v3"),
        200
    );
    let n = phone.expect_notify(T, 481);
    assert_eq!(n.header("Event"), Some(*event));
    assert_eq!(
        put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v4"),
        200
    );
    let n = phone.expect_notify(T, 200);
    assert_eq!(n.header("Event"), Some(*event));
    assert!(srv.metric_reaching("check_sync_notifies_total", 4.0, T) >= 4.0);
}

/// A check-sync device's answer: `response` with `extra` header lines before Content-Length.
fn answer_with(m: &Msg, status: u16, reason: &str, extra: &str) -> String {
    m.response(status, reason).replace(
        "Content-Length: 0\r\n",
        &format!("{extra}Content-Length: 0\r\n"),
    )
}

/// Whether `authorization` is the right MD5 `qop=auth` answer for `password` to a NOTIFY of
/// `uri` (RFC 2617 §3.2.2, computed here from the header's own nonce, nc and cnonce).
fn digest_ok(authorization: &str, uri: &str, password: &str) -> bool {
    let field = |name: &str| {
        authorization.split(',').find_map(|p| {
            let (n, v) = p.trim().split_once('=')?;
            let n = n.trim().trim_start_matches("Digest ").trim();
            (n == name).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let md5 = |s: String| hex::encode(<md5::Md5 as md5::Digest>::digest(s.as_bytes()));
    let (Some(user), Some(realm), Some(nonce), Some(nc), Some(cnonce), Some(resp)) = (
        field("username"),
        field("realm"),
        field("nonce"),
        field("nc"),
        field("cnonce"),
        field("response"),
    ) else {
        return false;
    };
    let ha1 = md5(format!("{user}:{realm}:{password}"));
    let ha2 = md5(format!("NOTIFY:{uri}"));
    field("uri").as_deref() == Some(uri)
        && field("qop").as_deref() == Some("auth")
        && resp == md5(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// A phone the operator gave a resync target (`resync` in the device's attributes; it never
/// subscribes) gets a check-sync NOTIFY at that contact when its documents change. It
/// challenges the NOTIFY with digest (as Polycom phones do) and the server answers once with
/// the credentials the operator set; with a wrong password the second 401 is the end of it,
/// counted, never retried. The password is never shown, a bad target is refused and changes
/// nothing, and a cleared target sends nothing more.
#[test]
fn an_operator_set_resync_target_gets_check_sync_and_its_digest_challenge_answered() {
    let srv = Server::start(&[]);
    let phone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    phone.set_read_timeout(Some(T)).expect("timeout");
    let port = phone.local_addr().expect("addr").port();
    let contact = format!("sip:1001@127.0.0.1:{port}");
    let mac = "0004f2aabb07";
    let device = format!("/provision/v1/device/{mac}");
    let json = [("Content-Type", "application/json")];
    assert_eq!(
        put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v1"),
        201
    );
    let target = |password: &str| {
        format!(
            "{{\"resync\": {{\"contact\": \"{contact}\", \"username\": \"1001\", \
             \"password\": \"{password}\"}}}}"
        )
    };
    let (status, _) = http(
        srv.provision,
        "PUT",
        &device,
        &json,
        target("s3cret").as_bytes(),
    );
    assert_eq!(status, 200);
    let bad = br#"{"resync": {"contact": "http://10.0.0.7/"}}"#;
    let (status, body) = http(srv.provision, "PUT", &device, &json, bad);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (_, listing) = http(srv.provision, "GET", &device, &[], b"");
    let listing = String::from_utf8_lossy(&listing).into_owned();
    assert!(listing.contains(&contact), "{listing}");
    assert!(listing.contains("\"password_set\":true"), "{listing}");
    assert!(!listing.contains("s3cret"), "{listing}");
    assert_eq!(
        srv.metric_reaching("check_sync_targets_total{op=\"set\"}", 1.0, T),
        1.0
    );

    let mut buf = vec![0u8; 65_536];
    let mut recv = || {
        let (n, from) = phone.recv_from(&mut buf).expect("a NOTIFY at the contact");
        (Msg::parse(&buf[..n]), from)
    };
    let challenge = "WWW-Authenticate: Digest realm=\"polycom\", nonce=\"0a1b2c3d\", \
                     qop=\"auth\", algorithm=MD5\r\n";
    let mut change = |v: &[u8], password: &str| -> bool {
        assert_eq!(
            put_doc(&srv, "device", mac, "phone.cfg", "text/plain", v),
            200
        );
        let (n, from) = recv();
        assert!(n.is_request("NOTIFY"), "{}", n.raw);
        assert_eq!(
            n.header("Event"),
            Some("check-sync;reboot=false"),
            "{}",
            n.raw
        );
        assert!(
            n.first.starts_with(&format!("NOTIFY {contact} ")),
            "{}",
            n.first
        );
        assert_eq!(n.header("Authorization"), None);
        phone
            .send_to(
                answer_with(&n, 401, "Unauthorized", challenge).as_bytes(),
                from,
            )
            .expect("send");
        let (again, from) = recv();
        assert_eq!(
            again.header("Call-ID"),
            n.header("Call-ID"),
            "{}",
            again.raw
        );
        assert_eq!(again.cseq(), n.cseq() + 1, "{}", again.raw);
        let auth = again.header("Authorization").expect("answered").to_owned();
        let ok = digest_ok(&auth, &contact, password);
        let reply = if ok {
            again.response(200, "OK")
        } else {
            answer_with(&again, 401, "Unauthorized", challenge)
        };
        phone.send_to(reply.as_bytes(), from).expect("send");
        ok
    };
    assert!(
        change(b"v2", "s3cret"),
        "the answer is the phone's password's"
    );
    assert_eq!(
        srv.metric_reaching("check_sync_notifies_total{outcome=\"2xx\"}", 1.0, T),
        1.0
    );

    // The operator's password is wrong now: one answer, then the failure is reported.
    let (status, _) = http(
        srv.provision,
        "PUT",
        &device,
        &json,
        target("wrong").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(!change(b"v3", "s3cret"));
    assert_eq!(
        srv.metric_reaching("check_sync_notifies_total{outcome=\"auth_failed\"}", 1.0, T),
        1.0
    );
    phone
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut quiet = vec![0u8; 65_536];
    assert!(
        phone.recv_from(&mut quiet).is_err(),
        "a refused answer is not tried again"
    );

    // Cleared: the record goes, and a change sends nothing.
    let (status, _) = http(srv.provision, "PUT", &device, &json, b"{}");
    assert_eq!(status, 200);
    assert_eq!(
        srv.metric_reaching("check_sync_targets_total{op=\"cleared\"}", 1.0, T),
        1.0
    );
    assert_eq!(
        put_doc(&srv, "device", mac, "phone.cfg", "text/plain", b"v4"),
        200
    );
    assert!(
        phone.recv_from(&mut quiet).is_err(),
        "a cleared target is sent nothing"
    );
}

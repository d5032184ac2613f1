//! SIP over TLS (`[notifier.tls]`): a phone subscribes over a TLS connection (rustls as the
//! client, a certificate made for the test) and gets its NOTIFYs back over that connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Msg, Server, put_doc};

const T: Duration = Duration::from_secs(10);

/// Reads `want` whole messages from `s`.
fn read_msgs(s: &mut impl Read, want: usize) -> Vec<Msg> {
    let (mut got, mut msgs, mut buf) = (Vec::new(), Vec::new(), [0u8; 8192]);
    while msgs.len() < want {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let m = Msg::parse(&got[..end + 4]);
            let len: usize = m
                .header("Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if got.len() < end + 4 + len {
                break;
            }
            msgs.push(Msg::parse(&got[..end + 4 + len]));
            got.drain(..end + 4 + len);
        }
    }
    msgs
}

#[test]
fn a_phone_subscribes_over_tls_and_is_notified_over_its_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (crt, key) = (dir.path().join("sip.crt"), dir.path().join("sip.key"));
    std::fs::write(&crt, cert.cert.pem()).expect("write");
    std::fs::write(&key, cert.signing_key.serialize_pem()).expect("write");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notifier.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n",
            crt.to_str().expect("path"),
            key.to_str().expect("path")
        ),
    )
    .expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);
    let tls_addr = srv.tls.expect("the ready line names sip-tls");

    // Plain text on the TLS port is no handshake: the server drops the connection.
    let mut plain = TcpStream::connect(tls_addr).expect("connect");
    plain.set_read_timeout(Some(T)).expect("timeout");
    plain
        .write_all(b"SUBSCRIBE sip:x@example.com SIP/2.0\r\n\r\n")
        .expect("write");
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);
    assert!(
        !String::from_utf8_lossy(&sink).contains("SIP/2.0 "),
        "no SIP answer in clear"
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let tcp = TcpStream::connect(tls_addr).expect("connect");
    tcp.set_read_timeout(Some(T)).expect("timeout");
    let local = tcp.local_addr().expect("addr");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let msg = format!(
        "SUBSCRIBE sips:MAC%3a00df1e00715a@example.com SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sips:phone@example.com>;tag=tl1\r\nTo: <sips:phone@example.com>\r\n\
         Call-ID: tls-1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sips:phone@{local}>\r\n\
         Event: ua-profile;profile-type=device\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(msg.as_bytes()).expect("write");
    let msgs = read_msgs(&mut s, 2);
    assert_eq!(msgs[0].status(), Some(200), "{}", msgs[0].raw);
    let first = &msgs[1];
    assert!(first.is_request("NOTIFY"), "{}", first.raw);
    assert!(
        first.header("Via").expect("Via").starts_with("SIP/2.0/TLS"),
        "{}",
        first.raw
    );
    assert!(
        first
            .header("Contact")
            .expect("Contact")
            .starts_with("<sips:"),
        "{}",
        first.raw
    );
    s.write_all(first.response(200, "OK").as_bytes())
        .expect("answer");

    let st = put_doc(
        &srv,
        "device",
        "00df1e00715a",
        "tls.xml",
        "application/xml",
        b"<tls/>",
    );
    assert_eq!(st, 201);
    let change = read_msgs(&mut s, 1).remove(0);
    assert!(change.is_request("NOTIFY"), "{}", change.raw);
    assert!(change.raw.contains("tls.xml"), "{}", change.raw);
    assert!(change.cseq() > first.cseq());
    s.write_all(change.response(200, "OK").as_bytes())
        .expect("answer");
    assert!(srv.metric("sip_tls_handshake_failures_total") >= 1.0);
}

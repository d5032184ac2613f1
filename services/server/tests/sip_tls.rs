//! SIP over TLS (`[notifier.tls]`): a phone subscribes over a TLS connection (rustls as the
//! client, a certificate made for the test) and gets its NOTIFYs back over that connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Server, put_doc, read_stream_msgs as read_msgs};

const T: Duration = Duration::from_secs(10);

/// A rustls client that trusts `cert` (made for "localhost") and nothing else.
fn tls_client(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    rustls::ClientConnection::new(Arc::new(client), name).expect("client")
}

#[test]
fn a_phone_subscribes_over_tls_and_is_notified_over_its_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, crt, key) = common::localhost_cert(dir.path());
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

    let conn = tls_client(&cert);
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

/// `[notifier.digest]`: a SUBSCRIBE over TLS is challenged with 401 (RFC 8760 SHA-256), the
/// right answer is accepted, a refresh reuses the nonce without a new challenge, a wrong
/// password is challenged again, and a SUBSCRIBE over UDP is refused.
#[test]
fn digest_authentication_of_subscribe_over_tls() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, crt, key) = common::localhost_cert(dir.path());
    let h = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!("line-42:{}\n", h("line-42:voice.example:pa55word")),
    )
    .expect("write");
    let cfg = dir.path().join("uaprof.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notifier.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n\
             [notifier.digest]\nrealm = \"voice.example\"\ncredentials_file = {:?}\n",
            crt.to_str().expect("path"),
            key.to_str().expect("path"),
            creds.to_str().expect("path")
        ),
    )
    .expect("write");
    let srv = Server::start(&["--config", cfg.to_str().expect("path")]);

    // Over UDP: refused, not challenged (the exchange would go in clear).
    let mut phone = common::Phone::new(srv.udp, "MAC%3a00df1e0071aa");
    let (r, _) = phone.subscribe(&common::Sub::default());
    assert_eq!(r.status(), Some(403), "{}", r.raw);

    let conn = tls_client(&cert);
    let tcp = TcpStream::connect(srv.tls.expect("sip-tls")).expect("connect");
    tcp.set_read_timeout(Some(T)).expect("timeout");
    let local = tcp.local_addr().expect("addr");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let uri = "sips:MAC%3a00df1e0071aa@voice.example";
    let subscribe = |cseq: u32, to_tag: Option<&str>, auth: Option<String>| {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "SUBSCRIBE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKdg{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sips:line-42@voice.example>;tag=dg1\r\n\
             To: <sips:line-42@voice.example>{to_tag}\r\nCall-ID: digest-1\r\nCSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sips:phone@{local}>\r\nEvent: ua-profile;profile-type=device\r\n{auth}\
             Expires: 600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let answer = |challenge: &str, password: &str, nc: u32| {
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .expect("nonce");
        let ha1 = h(&format!("line-42:voice.example:{password}"));
        let ha2 = h(&format!("SUBSCRIBE:{uri}"));
        let nc = format!("{nc:08x}");
        let resp = h(&format!("{ha1}:{nonce}:{nc}:abcdef:auth:{ha2}"));
        format!(
            "Digest username=\"line-42\", realm=\"voice.example\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{resp}\", algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"abcdef\""
        )
    };

    s.write_all(subscribe(1, None, None).as_bytes())
        .expect("write");
    let r = read_msgs(&mut s, 1).remove(0);
    assert_eq!(r.status(), Some(401), "{}", r.raw);
    let challenge = r.header("WWW-Authenticate").expect("challenge").to_owned();
    assert!(challenge.contains("algorithm=SHA-256"), "{challenge}");

    s.write_all(subscribe(2, None, Some(answer(&challenge, "wrong", 1))).as_bytes())
        .expect("write");
    let r = read_msgs(&mut s, 1).remove(0);
    assert_eq!(
        r.status(),
        Some(401),
        "a wrong password is challenged again: {}",
        r.raw
    );

    s.write_all(subscribe(3, None, Some(answer(&challenge, "pa55word", 2))).as_bytes())
        .expect("write");
    let msgs = read_msgs(&mut s, 2);
    assert_eq!(msgs[0].status(), Some(200), "{}", msgs[0].raw);
    let to_tag = msgs[0]
        .header("To")
        .and_then(|t| t.split("tag=").nth(1))
        .expect("to tag")
        .to_owned();
    assert!(msgs[1].is_request("NOTIFY"));
    s.write_all(msgs[1].response(200, "OK").as_bytes())
        .expect("answer");

    // The refresh reuses the nonce: answered at once, no new challenge.
    s.write_all(subscribe(4, Some(&to_tag), Some(answer(&challenge, "pa55word", 3))).as_bytes())
        .expect("write");
    let r = read_msgs(&mut s, 1).remove(0);
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    assert_eq!(srv.metric("sip_auth_total{result=\"ok\"}"), 2.0);
}

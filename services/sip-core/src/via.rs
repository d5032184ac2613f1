//! The top Via: stamping `received`/`rport` on the way in and choosing where responses go
//! (RFC 3261 §18.2.1, §18.2.2; RFC 3581 symmetric response routing).

use std::net::{IpAddr, SocketAddr};

use rsip::Header;
use rsip::headers::UntypedHeader;

use crate::message::{Params, header};
use crate::transport::Peer;

/// Borrowed view of one Via value: `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaRef<'a> {
    pub transport: &'a str,
    /// Without IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Everything after the first `;` (may be empty).
    pub params: &'a str,
}

impl<'a> ViaRef<'a> {
    pub(crate) fn param(&self, name: &str) -> Option<Option<&'a str>> {
        Params::new(self.params)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Parses one Via value (one list element). `None` for anything not `SIP/2.0/<t> sent-by`.
pub(crate) fn parse_via(value: &str) -> Option<ViaRef<'_>> {
    let (main, params) = match value.find(';') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    // sent-protocol allows blanks around the slashes (RFC 3261 §25.1 SLASH = SWS "/" SWS).
    let slash = main.rfind('/')?;
    let protocol = &main[..slash];
    let mut proto_parts = protocol.split('/').map(str::trim);
    let (name, version) = (proto_parts.next()?, proto_parts.next()?);
    if proto_parts.next().is_some() || !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
        return None;
    }
    let after = main[slash + 1..].trim_start();
    let split = after.find([' ', '\t'])?;
    let transport = &after[..split];
    let sent_by = after[split..].trim();
    if transport.is_empty() || sent_by.is_empty() {
        return None;
    }
    let (host, port) = split_host_port(sent_by)?;
    Some(ViaRef {
        transport,
        host,
        port,
        params,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → (host without brackets, port).
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &rest[..close];
        match &rest[close + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

fn top_via(req: &rsip::Request) -> Option<ViaRef<'_>> {
    parse_via(header(&req.headers, "Via")?)
}

/// The `branch` parameter of the top Via.
pub fn top_via_branch(req: &rsip::Request) -> Option<&str> {
    top_via(req)?.param("branch").flatten()
}

/// Host (without IPv6 brackets) and port of the top Via's sent-by.
pub fn sent_by(req: &rsip::Request) -> Option<(String, Option<u16>)> {
    top_via(req).map(|v| (v.host.to_owned(), v.port))
}

fn same_ip(host: &str, ip: IpAddr) -> bool {
    host.parse::<IpAddr>()
        .is_ok_and(|h| h.to_canonical() == ip.to_canonical())
}

/// Stamps the top Via as a server receiving `req` from `source` must: `received=<ip>` when
/// the sent-by host is not that IP, and `rport=<port>` when the Via asked for it with an
/// empty `rport` (in which case RFC 3581 §4 wants `received` even if the IP matches).
/// A Via that cannot be parsed is left untouched; responses then go to the source address.
pub fn stamp_received(req: &mut rsip::Request, source: SocketAddr) {
    let Some(Header::Via(via)) = req.headers.iter_mut().find(|h| matches!(h, Header::Via(_)))
    else {
        return;
    };
    let value = via.value();
    let (first, tail) = match crate::message::split_outside(value, b',') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    let first_trimmed = first.trim();
    let Some(parsed) = parse_via(first_trimmed) else {
        return;
    };
    let wants_rport = matches!(parsed.param("rport"), Some(None));
    let needs_received = wants_rport || !same_ip(parsed.host, source.ip());
    if !wants_rport && !needs_received {
        return;
    }
    let ip = source.ip().to_canonical();
    let main_len = first_trimmed.len() - parsed.params.len();
    let main = first_trimmed[..main_len].trim_end_matches(';').trim_end();
    let mut out = String::with_capacity(value.len() + 40);
    out.push_str(main);
    for (name, v) in Params::new(parsed.params) {
        if name.eq_ignore_ascii_case("received") {
            continue; // ours replaces whatever the client claimed
        }
        out.push(';');
        out.push_str(name);
        if name.eq_ignore_ascii_case("rport") && v.is_none() {
            out.push('=');
            out.push_str(&source.port().to_string());
        } else if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    if needs_received {
        out.push_str(";received=");
        out.push_str(&ip.to_string());
    }
    out.push_str(tail);
    via.replace(out);
}

/// Where the response to `req` goes (RFC 3261 §18.2.2, RFC 3581 §4). Over TCP/TLS: back on
/// the connection it came from. Over UDP: to the source IP and port when the Via carries
/// `rport`, else to the source IP and the sent-by port (default 5060).
///
/// The `received` and `maddr` parameters are deliberately not followed: the source IP is
/// what `received` would say after [`stamp_received`], and trusting client-written values
/// would let anyone aim our responses at a third party.
pub fn response_destination(req: &rsip::Request, source: Peer) -> SocketAddr {
    if source.transport.is_reliable() {
        return source.addr;
    }
    match top_via(req) {
        Some(v) if v.param("rport").is_none() => {
            SocketAddr::new(source.addr.ip(), v.port.unwrap_or(5060))
        }
        _ => source.addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;
    use crate::transport::Transport;

    fn req(via: &str) -> rsip::Request {
        let raw = format!(
            "OPTIONS sip:x@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:x@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(rsip::SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn src(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn parses_via_variants() {
        let v = parse_via("SIP / 2.0 / UDP 10.0.0.1:5070;branch=z9hG4bK1;rport").expect("via");
        assert_eq!(
            (v.transport, v.host, v.port),
            ("UDP", "10.0.0.1", Some(5070))
        );
        assert_eq!(v.param("branch"), Some(Some("z9hG4bK1")));
        assert_eq!(v.param("rport"), Some(None));
        let v = parse_via("SIP/2.0/TLS [2001:db8::1]:5061").expect("v6");
        assert_eq!((v.host, v.port), ("2001:db8::1", Some(5061)));
        let v = parse_via("SIP/2.0/TCP phone.example.com").expect("name");
        assert_eq!((v.host, v.port), ("phone.example.com", None));
        assert!(parse_via("SIP/2.0/UDP").is_none());
        assert!(parse_via("SIP/3.0/UDP h").is_none());
        assert!(parse_via("SIP/2.0/UDP h:99999").is_none());
        assert!(parse_via("SIP/2.0/UDP h:").is_none());
        assert!(parse_via("garbage").is_none());
    }

    #[test]
    fn received_added_when_host_differs() {
        let mut r = req("SIP/2.0/UDP phone.local:5062;branch=z9hG4bKa");
        stamp_received(&mut r, src("192.0.2.7:40000"));
        assert_eq!(
            header(&r.headers, "Via"),
            Some("SIP/2.0/UDP phone.local:5062;branch=z9hG4bKa;received=192.0.2.7")
        );
        let peer = Peer::new(Transport::Udp, src("192.0.2.7:40000"));
        assert_eq!(response_destination(&r, peer), src("192.0.2.7:5062"));
    }

    #[test]
    fn nothing_added_when_host_matches() {
        let mut r = req("SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKa");
        let before = r.clone();
        stamp_received(&mut r, src("192.0.2.7:5062"));
        assert_eq!(r, before);
    }

    #[test]
    fn rport_filled_and_used() {
        let mut r = req("SIP/2.0/UDP 192.0.2.7:5062;rport;branch=z9hG4bKa, SIP/2.0/UDP p:5060");
        stamp_received(&mut r, src("198.51.100.1:31000"));
        let vias: Vec<_> = crate::message::headers_all(&r.headers, "v").collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP 192.0.2.7:5062;rport=31000;branch=z9hG4bKa;received=198.51.100.1",
                "SIP/2.0/UDP p:5060"
            ]
        );
        let peer = Peer::new(Transport::Udp, src("198.51.100.1:31000"));
        assert_eq!(response_destination(&r, peer), src("198.51.100.1:31000"));
        assert_eq!(top_via_branch(&r), Some("z9hG4bKa"));
        assert_eq!(sent_by(&r), Some(("192.0.2.7".to_owned(), Some(5062))));
    }

    #[test]
    fn rport_forces_received_even_for_same_ip_and_replaces_forged_received() {
        let mut r = req("SIP/2.0/UDP 192.0.2.7;received=203.0.113.9;rport");
        stamp_received(&mut r, src("192.0.2.7:5060"));
        assert_eq!(
            header(&r.headers, "Via"),
            Some("SIP/2.0/UDP 192.0.2.7;rport=5060;received=192.0.2.7")
        );
    }

    #[test]
    fn destination_defaults() {
        let r = req("SIP/2.0/UDP host.example;branch=z9hG4bKx");
        let udp = Peer::new(Transport::Udp, src("192.0.2.1:1234"));
        assert_eq!(response_destination(&r, udp), src("192.0.2.1:5060"));
        let tcp = Peer::new(Transport::Tcp, src("192.0.2.1:1234"));
        assert_eq!(response_destination(&r, tcp), src("192.0.2.1:1234"));
    }

    #[test]
    fn ipv6_received_has_no_brackets() {
        let mut r = req("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx");
        stamp_received(&mut r, src("[2001:db8::2]:5060"));
        assert_eq!(
            header(&r.headers, "Via"),
            Some("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx;received=2001:db8::2")
        );
    }
}

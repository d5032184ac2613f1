//! The notifier's side of a SUBSCRIBE dialog (RFC 3261 §12; RFC 6665 §4.2): created from the
//! SUBSCRIBE as UAS, then used to build NOTIFYs with the right Request-URI and Route set.
//!
//! The dialog is plain data (serde) so it can be stored with the subscription and rebuilt on
//! another node; URIs are kept as strings exactly as received.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::{header, headers_all, method_str, name_addr_uri, parse_cseq, tag_of};
use crate::transport::Transport;
use crate::via::{parse_via, split_host_port};

/// Why a dialog could not be created, or a URI not routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error("From header has no tag")]
    MissingFromTag,
    #[error("request has no Contact")]
    MissingContact,
    #[error("unusable Contact {0:?}")]
    BadContact(String),
    #[error("missing or unreadable {0} header")]
    BadHeader(&'static str),
    #[error("unusable URI {0:?}")]
    BadUri(String),
}

/// Identifies a dialog from the notifier's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};local-tag={};remote-tag={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// Where the notifier sends in-dialog requests from and with which branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaSpec {
    pub transport: Transport,
    /// `host:port` this server is reachable at for responses.
    pub sent_by: String,
    pub branch: String,
}

/// Dialog state (RFC 3261 §12.1.1, UAS side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// To URI of the SUBSCRIBE, without tag.
    pub local_uri: String,
    /// From URI of the SUBSCRIBE.
    pub remote_uri: String,
    /// Contact URI of the SUBSCRIBE.
    pub remote_target: String,
    /// Record-Route entries in the order received, each as `<uri;params>`.
    pub route_set: Vec<String>,
    pub secure: bool,
    pub remote_cseq: u32,
}

impl Dialog {
    /// Creates the dialog a SUBSCRIBE establishes, with `local_tag` as our To tag.
    ///
    /// `secure` is set when the Request-URI is `sips:` and the top Via says TLS
    /// (§12.1.1 wants "arrived over TLS"; the caller may also clear it if its own
    /// listener was not TLS).
    pub fn from_request(req: &rsip::Request, local_tag: String) -> Result<Dialog, DialogError> {
        let h = &req.headers;
        let call_id = header(h, "Call-ID").ok_or(DialogError::BadHeader("Call-ID"))?;
        let from = header(h, "From").ok_or(DialogError::BadHeader("From"))?;
        let remote_tag = tag_of(from).ok_or(DialogError::MissingFromTag)?;
        let remote_uri = name_addr_uri(from).ok_or(DialogError::BadHeader("From"))?;
        let to = header(h, "To").ok_or(DialogError::BadHeader("To"))?;
        let local_uri = name_addr_uri(to).ok_or(DialogError::BadHeader("To"))?;
        let (remote_cseq, _) = header(h, "CSeq")
            .and_then(parse_cseq)
            .ok_or(DialogError::BadHeader("CSeq"))?;

        let contact = header(h, "Contact").ok_or(DialogError::MissingContact)?;
        let remote_target = name_addr_uri(contact)
            .filter(|u| is_routable_sip_uri(u))
            .ok_or_else(|| DialogError::BadContact(contact.to_owned()))?;

        let route_set = headers_all(h, "Record-Route")
            .map(|rr| match name_addr_uri(rr) {
                // Loose routers only ever appear in Route headers, as text; a strict router
                // becomes a Request-URI and so must survive rsip.
                Some(uri)
                    if next_hop(uri, Transport::Udp).is_ok()
                        && (uri_param(uri, "lr").is_some() || request_uri_ok(uri)) =>
                {
                    Ok(format!("<{uri}>"))
                }
                _ => Err(DialogError::BadUri(rr.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let sips = matches!(req.uri.scheme, Some(rsip::Scheme::Sips));
        let tls = header(h, "Via")
            .and_then(parse_via)
            .is_some_and(|v| v.transport.eq_ignore_ascii_case("TLS"));

        Ok(Dialog {
            call_id: call_id.to_owned(),
            local_tag,
            remote_tag: remote_tag.to_owned(),
            local_uri: local_uri.to_owned(),
            remote_uri: remote_uri.to_owned(),
            remote_target: remote_target.to_owned(),
            route_set,
            secure: sips && tls,
            remote_cseq,
        })
    }

    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
        }
    }

    /// True for a request inside this dialog (§12.2.2): same Call-ID, our tag in To, the
    /// peer's tag in From. Compared without allocating.
    pub fn matches(&self, req: &rsip::Request) -> bool {
        let h = &req.headers;
        header(h, "Call-ID") == Some(self.call_id.as_str())
            && header(h, "To").and_then(tag_of) == Some(self.local_tag.as_str())
            && header(h, "From").and_then(tag_of) == Some(self.remote_tag.as_str())
    }

    /// Builds an in-dialog request (§12.2.1.1) and returns it with the URI of the next hop
    /// to resolve ([`next_hop`]).
    ///
    /// With no route set, or a first route carrying `;lr`, the Request-URI is the remote
    /// target and the route set becomes Route headers. Otherwise the first route is a strict
    /// router: it becomes the Request-URI and the remote target goes last in Route.
    ///
    /// The caller adds Contact, Event, Subscription-State and the body. A remote target
    /// `rsip` cannot parse (only possible for a dialog deserialised from corrupt storage,
    /// since [`Dialog::from_request`] checks it) yields an empty Request-URI; the returned
    /// next hop then fails [`next_hop`] and nothing is sent.
    pub fn build_request(
        &self,
        method: rsip::Method,
        cseq: u32,
        via: &ViaSpec,
        max_forwards: u8,
    ) -> (rsip::Request, String) {
        use rsip::Header;
        use rsip::headers::{self as h, UntypedHeader};

        let RequestTarget {
            request_uri,
            routes,
            next_hop,
        } = self.target();

        let mut headers: Vec<Header> = Vec::with_capacity(8 + routes.len());
        headers.push(Header::Via(h::Via::new(format!(
            "SIP/2.0/{} {};branch={};rport",
            via.transport.via_token(),
            via.sent_by,
            via.branch
        ))));
        headers.push(Header::MaxForwards(h::MaxForwards::new(
            max_forwards.to_string(),
        )));
        headers.extend(routes.into_iter().map(|r| Header::Route(h::Route::new(r))));
        headers.push(Header::From(h::From::new(format!(
            "<{}>;tag={}",
            self.local_uri, self.local_tag
        ))));
        headers.push(Header::To(h::To::new(format!(
            "<{}>;tag={}",
            self.remote_uri, self.remote_tag
        ))));
        headers.push(Header::CallId(h::CallId::new(self.call_id.as_str())));
        headers.push(Header::CSeq(h::CSeq::new(format!(
            "{cseq} {}",
            method_str(method)
        ))));

        let req = rsip::Request {
            method,
            uri: self::request_uri(&request_uri).unwrap_or_default(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        };
        (req, next_hop)
    }

    /// Where a request in this dialog goes (RFC 3261 §12.2.1.1): with no route set, or a
    /// loose-routing first route, the Request-URI is the remote target and the Route set is
    /// sent as is; with a strict router first, that router becomes the Request-URI and the
    /// remote target joins the end of the Route set. `next_hop` is the URI whose host and
    /// port the request is sent to (see [`next_hop`]).
    pub fn target(&self) -> RequestTarget {
        let first = self.route_set.first().and_then(|r| name_addr_uri(r));
        match first {
            None => RequestTarget {
                request_uri: self.remote_target.clone(),
                routes: Vec::new(),
                next_hop: self.remote_target.clone(),
            },
            Some(first) if uri_param(first, "lr").is_some() => RequestTarget {
                request_uri: self.remote_target.clone(),
                routes: self.route_set.clone(),
                next_hop: first.to_owned(),
            },
            Some(first) => {
                let mut routes: Vec<String> = self.route_set[1..].to_vec();
                routes.push(format!("<{}>", self.remote_target));
                RequestTarget {
                    request_uri: strip_for_request_uri(first).to_owned(),
                    routes,
                    next_hop: first.to_owned(),
                }
            }
        }
    }
}

/// The Request-URI, Route headers and next hop of a request in a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub request_uri: String,
    /// Route header values, in order.
    pub routes: Vec<String>,
    pub next_hop: String,
}

/// The id under which an incoming in-dialog request's dialog is stored: (Call-ID, To tag as
/// local, From tag as remote). `None` when either tag is missing (not an in-dialog request).
pub fn dialog_id_of(req: &rsip::Request) -> Option<DialogId> {
    let h = &req.headers;
    Some(DialogId {
        call_id: header(h, "Call-ID")?.to_owned(),
        local_tag: header(h, "To").and_then(tag_of)?.to_owned(),
        remote_tag: header(h, "From").and_then(tag_of)?.to_owned(),
    })
}

/// Resolves a SIP(S) URI (bare or in `<>`) to the transport, host and port to contact
/// (RFC 3263 without DNS): `transport=` wins for `sip:`, `sips:` is always TLS, default
/// ports are 5060 and 5061 for TLS. User part, parameters and headers are dropped; IPv6
/// hosts come back without brackets. Host names still need resolving by the caller.
pub fn next_hop(
    uri: &str,
    default_transport: Transport,
) -> Result<(Transport, String, u16), DialogError> {
    let bad = || DialogError::BadUri(uri.to_owned());
    let u = uri.trim();
    let u = u
        .strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(u);
    let (scheme, rest) = u.split_once(':').ok_or_else(bad)?;
    let sips = if scheme.eq_ignore_ascii_case("sips") {
        true
    } else if scheme.eq_ignore_ascii_case("sip") {
        false
    } else {
        return Err(bad());
    };
    let rest = rest.split('?').next().unwrap_or("");
    let host_part = rest.split_once('@').map_or(rest, |(_, h)| h);
    let (hostport, params) = match host_part.find(';') {
        Some(i) => (&host_part[..i], &host_part[i + 1..]),
        None => (host_part, ""),
    };
    let (host, port) = split_host_port(hostport).ok_or_else(bad)?;
    let param_transport = crate::message::Params::new(params)
        .find(|(n, _)| n.eq_ignore_ascii_case("transport"))
        .and_then(|(_, v)| v);
    let transport = if sips {
        Transport::Tls
    } else {
        match param_transport {
            Some(t) => Transport::from_token(t).ok_or_else(bad)?,
            None => default_transport,
        }
    };
    let port = port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    if port == 0 {
        return Err(bad());
    }
    Ok((transport, host.to_owned(), port))
}

/// A Contact must be a SIP(S) URI we can both route to and print in a request line.
fn is_routable_sip_uri(uri: &str) -> bool {
    next_hop(uri, Transport::Udp).is_ok() && request_uri_ok(uri)
}

/// rsip's URI type is lossy (it drops the host of `sip:+1;phone-context=x@host`), and a
/// Request-URI can only be set through it. A URI that does not survive the round trip is
/// refused rather than sent somewhere else.
fn request_uri_ok(uri: &str) -> bool {
    request_uri(uri).is_some()
}

/// `uri` as rsip's URI type, or `None` when rsip would print something else.
///
/// rsip 0.4 cannot read a bracketed IPv6 host at all (its host/port split stops at the first
/// colon, so `[2001:db8::1]:5062` is host `[2001` and port `db8::1]:5062`), and it prints an
/// IP host without brackets. The IPv6 reference is therefore swapped for a placeholder name
/// while rsip parses the rest, and put back as a host *name* spelled with its brackets, which
/// rsip prints verbatim.
fn request_uri(uri: &str) -> Option<rsip::Uri> {
    const PLACEHOLDER: &str = "ipv6-reference.invalid";
    let (parseable, v6) = match (uri.find('['), uri.find(']')) {
        (Some(open), Some(close)) if open < close => {
            let literal = &uri[open + 1..close];
            literal.parse::<std::net::Ipv6Addr>().ok()?;
            let mut s = String::with_capacity(uri.len());
            s.push_str(&uri[..open]);
            s.push_str(PLACEHOLDER);
            s.push_str(&uri[close + 1..]);
            (std::borrow::Cow::Owned(s), Some(&uri[open..=close]))
        }
        (None, None) => (std::borrow::Cow::Borrowed(uri), None),
        _ => return None,
    };
    let mut parsed = rsip::Uri::try_from(parseable.as_ref()).ok()?;
    if let Some(v6) = v6 {
        if parsed.host_with_port.host.to_string() != PLACEHOLDER {
            return None;
        }
        parsed.host_with_port.host = rsip::Host::Domain(v6.into());
    }
    parsed
        .to_string()
        .eq_ignore_ascii_case(uri)
        .then_some(parsed)
}

/// The value of URI parameter `name` (`Some(None)` for a flag such as `lr`). URI
/// parameters follow the host, so a `;` inside the user part is skipped.
fn uri_param<'a>(uri: &'a str, name: &str) -> Option<Option<&'a str>> {
    let no_headers = uri.split('?').next().unwrap_or(uri);
    let host_part = no_headers.split_once('@').map_or(no_headers, |(_, h)| h);
    let params = &host_part[host_part.find(';')? + 1..];
    crate::message::Params::new(params)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A route URI used as Request-URI loses what a Request-URI may not carry (§19.1.1: the
/// `method` parameter and URI headers).
fn strip_for_request_uri(uri: &str) -> &str {
    let uri = uri.split('?').next().unwrap_or(uri);
    if uri_param(uri, "method").is_none() {
        return uri;
    }
    // Rare (a strict router with a method parameter): cut at that parameter.
    match uri.to_ascii_lowercase().find(";method") {
        Some(i) => &uri[..i],
        None => uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{headers_all, parse, request_to_bytes};
    use rsip::headers::UntypedHeader;

    fn subscribe(extra: &str) -> rsip::Request {
        let raw = format!(
            "SUBSCRIBE sip:00112233aabb@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKs;rport\r\n\
             From: \"Phone\" <sip:00112233aabb@example.com>;tag=ft1\r\n\
             To: <sip:00112233aabb@example.com>\r\n\
             Call-ID: call-1@192.0.2.10\r\nCSeq: 41 SUBSCRIBE\r\n\
             Event: ua-profile;profile-type=device\r\n{extra}\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(rsip::SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn via() -> ViaSpec {
        ViaSpec {
            transport: Transport::Udp,
            sent_by: "198.51.100.1:5060".into(),
            branch: "z9hG4bKnotify1".into(),
        }
    }

    #[test]
    fn creates_dialog_with_record_route_order() {
        let req = subscribe(
            "Contact: <sip:phone@192.0.2.10:5062;transport=udp>;expires=60\r\n\
             Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
             Record-Route: <sip:p0.example.com;lr;ftag=x>\r\n",
        );
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        assert_eq!(d.call_id, "call-1@192.0.2.10");
        assert_eq!(d.remote_tag, "ft1");
        assert_eq!(d.local_uri, "sip:00112233aabb@example.com");
        assert_eq!(d.remote_uri, "sip:00112233aabb@example.com");
        assert_eq!(d.remote_target, "sip:phone@192.0.2.10:5062;transport=udp");
        assert_eq!(
            d.route_set,
            [
                "<sip:p2.example.com;lr>",
                "<sip:p1.example.com;lr>",
                "<sip:p0.example.com;lr;ftag=x>"
            ]
        );
        assert_eq!(d.remote_cseq, 41);
        assert!(!d.secure);
        assert_eq!(
            d.id().to_string(),
            "call-1@192.0.2.10;local-tag=lt1;remote-tag=ft1"
        );
    }

    #[test]
    fn loose_routing_keeps_target_as_request_uri() {
        let req = subscribe(
            "Contact: <sip:phone@192.0.2.10:5062>\r\n\
             Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n",
        );
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        let (n, next) = d.build_request(rsip::Method::Notify, 1, &via(), 70);
        assert_eq!(next, "sip:p2.example.com;lr");
        assert_eq!(n.uri.to_string(), "sip:phone@192.0.2.10:5062");
        let routes: Vec<_> = headers_all(&n.headers, "Route").collect();
        assert_eq!(
            routes,
            ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        assert_eq!(
            header(&n.headers, "From"),
            Some("<sip:00112233aabb@example.com>;tag=lt1")
        );
        assert_eq!(
            header(&n.headers, "To"),
            Some("<sip:00112233aabb@example.com>;tag=ft1")
        );
        assert_eq!(header(&n.headers, "CSeq"), Some("1 NOTIFY"));
        assert_eq!(header(&n.headers, "Max-Forwards"), Some("70"));
        assert_eq!(
            header(&n.headers, "Via"),
            Some("SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKnotify1;rport")
        );
        // What we build, we can parse back.
        let bytes = request_to_bytes(&n);
        let back = parse(&bytes).expect("round trip");
        assert!(back.is_request());
        assert_eq!(
            next_hop(&next, Transport::Udp),
            Ok((Transport::Udp, "p2.example.com".into(), 5060))
        );
    }

    #[test]
    fn strict_routing_moves_target_into_route() {
        let req = subscribe(
            "Contact: <sip:phone@192.0.2.10:5062>\r\n\
             Record-Route: <sip:strict.example.com>, <sip:p1.example.com;lr>\r\n",
        );
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        let (n, next) = d.build_request(rsip::Method::Notify, 2, &via(), 70);
        assert_eq!(n.uri.to_string(), "sip:strict.example.com");
        assert_eq!(next, "sip:strict.example.com");
        let routes: Vec<_> = headers_all(&n.headers, "Route").collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.com;lr>", "<sip:phone@192.0.2.10:5062>"]
        );
    }

    #[test]
    fn no_route_set_goes_to_target() {
        let req = subscribe("m: sips:phone@192.0.2.10\r\n");
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        let (n, next) = d.build_request(rsip::Method::Notify, 3, &via(), 70);
        assert_eq!(next, "sips:phone@192.0.2.10");
        assert_eq!(headers_all(&n.headers, "Route").count(), 0);
        assert_eq!(
            next_hop(&next, Transport::Udp),
            Ok((Transport::Tls, "192.0.2.10".into(), 5061))
        );
    }

    #[test]
    fn missing_or_bad_contact_and_tag() {
        let req = subscribe("");
        assert_eq!(
            Dialog::from_request(&req, "x".into()),
            Err(DialogError::MissingContact)
        );
        let req = subscribe("Contact: *\r\n");
        assert!(matches!(
            Dialog::from_request(&req, "x".into()),
            Err(DialogError::BadContact(_))
        ));
        let req = subscribe("Contact: <sip:+1555;phone-context=example.com@gw.example.com>\r\n");
        assert!(
            matches!(
                Dialog::from_request(&req, "x".into()),
                Err(DialogError::BadContact(_))
            ),
            "rsip would lose the host of this URI"
        );
        let req = subscribe("Contact: <tel:+15551234>\r\n");
        assert!(matches!(
            Dialog::from_request(&req, "x".into()),
            Err(DialogError::BadContact(_))
        ));
        let mut req = subscribe("Contact: <sip:a@192.0.2.1>\r\n");
        for h in req.headers.iter_mut() {
            if let rsip::Header::From(f) = h {
                *f = rsip::headers::From::new("<sip:a@b>");
            }
        }
        assert_eq!(
            Dialog::from_request(&req, "x".into()),
            Err(DialogError::MissingFromTag)
        );
    }

    #[test]
    fn an_ipv6_contact_with_a_port_is_the_notify_request_uri_and_next_hop() {
        // rsip alone reads `[2001:db8::10]:5062` as host `[2001` and refused the Contact.
        for (contact, port) in [
            ("sip:phone@[2001:db8::10]:5062", 5062),
            ("sip:phone@[2001:db8::10]:5062;transport=tcp;ob", 5062),
            ("sip:[2001:db8::10]", 5060),
        ] {
            let req = subscribe(&format!("Contact: <{contact}>\r\n"));
            let d = Dialog::from_request(&req, "lt1".into())
                .unwrap_or_else(|e| panic!("{contact}: {e:?}"));
            let (n, next) = d.build_request(rsip::Method::Notify, 1, &via(), 70);
            let bytes = request_to_bytes(&n);
            let text = std::str::from_utf8(&bytes).expect("utf-8");
            // rsip prints `transport=TCP` in capitals; URI parameters compare without case.
            let line = text.lines().next().unwrap_or_default();
            assert!(
                line.eq_ignore_ascii_case(&format!("NOTIFY {contact} SIP/2.0")),
                "{text}"
            );
            let (_, host, p) = next_hop(&next, Transport::Udp).expect("next hop");
            assert_eq!((host.as_str(), p), ("2001:db8::10", port), "{contact}");
        }
        for bad in [
            "sip:phone@[2001:db8::zz]:5062",
            "sip:phone@[2001:db8::1:5062",
        ] {
            let req = subscribe(&format!("Contact: <{bad}>\r\n"));
            assert!(
                matches!(
                    Dialog::from_request(&req, "x".into()),
                    Err(DialogError::BadContact(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn matching_in_dialog_requests() {
        let req = subscribe("Contact: <sip:phone@192.0.2.10:5062>\r\n");
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        assert!(!d.matches(&req), "initial SUBSCRIBE has no To tag");
        assert_eq!(dialog_id_of(&req), None);
        let mut refresh = req.clone();
        for h in refresh.headers.iter_mut() {
            if let rsip::Header::To(t) = h {
                *t = rsip::headers::To::new("<sip:00112233aabb@example.com>;tag=lt1");
            }
        }
        assert!(d.matches(&refresh));
        assert_eq!(dialog_id_of(&refresh), Some(d.id()));
    }

    #[test]
    fn next_hop_variants() {
        use Transport::*;
        let ok = |u: &str, t| next_hop(u, t).expect(u);
        assert_eq!(ok("sip:a@h.example", Udp), (Udp, "h.example".into(), 5060));
        assert_eq!(
            ok("<sip:h.example:5070;transport=TCP>", Udp),
            (Tcp, "h.example".into(), 5070)
        );
        assert_eq!(ok("sip:h;transport=tls", Udp), (Tls, "h".into(), 5061));
        assert_eq!(
            ok("sip:[2001:db8::5]:5090;lr", Tcp),
            (Tcp, "2001:db8::5".into(), 5090)
        );
        assert_eq!(
            ok("SIPS:user;x=y@h.example?subject=x", Udp),
            (Tls, "h.example".into(), 5061)
        );
        assert_eq!(ok("sip:h.example", Tls), (Tls, "h.example".into(), 5061));
        for bad in [
            "tel:+1555",
            "sip:",
            "sip:h:port",
            "sip:h;transport=sctp",
            "sip:h:0",
            "http://x",
            "",
        ] {
            assert!(next_hop(bad, Udp).is_err(), "{bad}");
        }
    }

    #[test]
    fn dialog_serde_round_trip_shape() {
        let req = subscribe("Contact: <sip:phone@192.0.2.10>\r\n");
        let d = Dialog::from_request(&req, "lt1".into()).expect("dialog");
        let json = serde_json::to_string(&d).expect("serialise");
        let back: Dialog = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, d);
    }
}

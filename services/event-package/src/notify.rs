//! The NOTIFY request as wire bytes.
//!
//! Written straight into one pre-sized buffer: at fan-out time this runs once per
//! subscription, millions of times per change storm. Header values that came from the
//! subscriber have CR/LF neutralised so they cannot inject headers.
//!
//! Header order: request line, Via, Max-Forwards, Route…, From, To, Call-ID, CSeq, Contact,
//! Event, Subscription-State (mandatory, RFC 6665 §8.2.3), SIP-ETag (RFC 5839, omitted only
//! when the tag is empty), Allow-Events, User-Agent, Content-Type and Content-Disposition
//! (with a body), Content-Length (always, exact).

use crate::body::NotifyBody;
use crate::event::ALLOW_EVENTS;
use crate::state::SubState;
use crate::wire::{push_header, push_u64, push_value};

/// Everything a NOTIFY needs; all strings are header values as they go on the wire.
#[derive(Debug, Clone, Copy)]
pub struct NotifyParams<'a> {
    /// The subscriber's Contact (the dialog's remote target).
    pub request_uri: &'a str,
    /// The dialog's route set, in order; each becomes one Route header (a bare URI is
    /// wrapped in angle brackets).
    pub routes: &'a [String],
    /// `UDP`, `TCP`, `TLS`.
    pub via_transport: &'a str,
    /// Our `host:port` for the Via.
    pub via_sent_by: &'a str,
    /// The transaction's branch, magic cookie included (`z9hG4bK...`).
    pub branch: &'a str,
    /// Full From value (us, with our dialog tag).
    pub from: &'a str,
    /// Full To value (the subscriber, with its tag).
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    /// Our Contact URI (angle brackets added if missing).
    pub contact: &'a str,
    /// The Event header value, see [`crate::event::notify_event_header`].
    pub event: &'a str,
    pub state: &'a SubState,
    /// The SIP-ETag of the state this NOTIFY carries.
    pub etag: &'a str,
    pub body: Option<&'a NotifyBody>,
    pub max_forwards: u8,
    pub user_agent: Option<&'a str>,
    /// An `Authorization` or `Proxy-Authorization` header (name, value): the answer to the
    /// challenge of an earlier attempt.
    pub authorization: Option<(&'a str, &'a str)>,
}

/// Builds the whole NOTIFY request.
pub fn build_notify(p: &NotifyParams) -> Vec<u8> {
    let body_len = p.body.map_or(0, |b| b.bytes.len());
    let body_headers = p.body.map_or(0, |b| {
        b.content_type.len() + b.content_disposition.as_ref().map_or(0, String::len) + 48
    });
    // Header names, separators and numbers fit in 320 bytes; the rest is the values.
    let estimate = 320
        + 2 * p.request_uri.len()
        + p.routes.iter().map(|r| r.len() + 11).sum::<usize>()
        + p.via_transport.len()
        + p.via_sent_by.len()
        + p.branch.len()
        + p.from.len()
        + p.to.len()
        + p.call_id.len()
        + p.contact.len()
        + p.event.len()
        + p.etag.len()
        + ALLOW_EVENTS.len()
        + p.user_agent.map_or(0, |u| u.len() + 14)
        + p.authorization.map_or(0, |(n, v)| n.len() + v.len() + 4)
        + body_headers
        + body_len;
    let mut out = Vec::with_capacity(estimate);

    out.extend_from_slice(b"NOTIFY ");
    push_value(&mut out, p.request_uri);
    out.extend_from_slice(b" SIP/2.0\r\n");

    out.extend_from_slice(b"Via: SIP/2.0/");
    push_value(&mut out, p.via_transport);
    out.push(b' ');
    push_value(&mut out, p.via_sent_by);
    out.extend_from_slice(b";branch=");
    push_value(&mut out, p.branch);
    // rport (RFC 3581): the subscriber answers to where the NOTIFY came from, which is what
    // gets the 200 back through NATs in front of phones.
    out.extend_from_slice(b";rport\r\n");

    out.extend_from_slice(b"Max-Forwards: ");
    push_u64(&mut out, p.max_forwards.into());
    out.extend_from_slice(b"\r\n");

    for route in p.routes {
        out.extend_from_slice(b"Route: ");
        push_addr(&mut out, route);
        out.extend_from_slice(b"\r\n");
    }

    push_header(&mut out, "From", p.from);
    push_header(&mut out, "To", p.to);
    push_header(&mut out, "Call-ID", p.call_id);

    out.extend_from_slice(b"CSeq: ");
    push_u64(&mut out, p.cseq.into());
    out.extend_from_slice(b" NOTIFY\r\n");

    out.extend_from_slice(b"Contact: ");
    push_addr(&mut out, p.contact);
    out.extend_from_slice(b"\r\n");

    push_header(&mut out, "Event", p.event);

    out.extend_from_slice(b"Subscription-State: ");
    p.state.write_value(&mut out);
    out.extend_from_slice(b"\r\n");

    if !p.etag.is_empty() {
        push_header(&mut out, "SIP-ETag", p.etag);
    }
    push_header(&mut out, "Allow-Events", ALLOW_EVENTS);
    if let Some(ua) = p.user_agent {
        push_header(&mut out, "User-Agent", ua);
    }
    if let Some((name, value)) = p.authorization {
        push_header(&mut out, name, value);
    }

    if let Some(body) = p.body {
        push_header(&mut out, "Content-Type", &body.content_type);
        if let Some(disposition) = &body.content_disposition {
            push_header(&mut out, "Content-Disposition", disposition);
        }
    }
    out.extend_from_slice(b"Content-Length: ");
    push_u64(&mut out, body_len as u64);
    out.extend_from_slice(b"\r\n\r\n");

    if let Some(body) = p.body {
        out.extend_from_slice(&body.bytes);
    }
    out
}

/// A name-addr: as given when it already has angle brackets, else `<uri>`.
fn push_addr(out: &mut Vec<u8>, value: &str) {
    let value = value.trim();
    if value.contains('<') {
        push_value(out, value);
    } else {
        out.push(b'<');
        push_value(out, value);
        out.push(b'>');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TerminationReason;
    use rsip::Header;

    fn params<'a>(
        routes: &'a [String],
        state: &'a SubState,
        body: Option<&'a NotifyBody>,
    ) -> NotifyParams<'a> {
        NotifyParams {
            request_uri: "sip:00df1e004cd0@10.1.1.44:5060",
            routes,
            via_transport: "UDP",
            via_sent_by: "192.0.2.10:5060",
            branch: "z9hG4bK776asdhds",
            from: "<sip:00df1e004cd0@example.com>;tag=abcd",
            to: "<sip:00df1e004cd0@example.com>;tag=1234",
            call_id: "3573853342923422@10.1.1.44",
            cseq: 7,
            contact: "sip:pds@192.0.2.10:5060",
            event: "ua-profile;profile-type=device;effective-by=3600",
            state,
            etag: "5e1a2b3c4d5e6f708192",
            body,
            max_forwards: 70,
            user_agent: Some("uaprof/0.1"),
            authorization: None,
        }
    }

    /// Splits wire bytes into (header lines, body) and checks Content-Length against the body.
    fn split(wire: &[u8]) -> (Vec<String>, Vec<u8>) {
        let at = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8(wire[..at].to_vec()).expect("ascii head");
        let body = wire[at + 4..].to_vec();
        let lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
        let cl: usize = lines
            .iter()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .expect("number");
        assert_eq!(cl, body.len());
        (lines, body)
    }

    fn other_header(req: &rsip::Request, name: &str) -> Option<String> {
        req.headers.iter().find_map(|h| match h {
            Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.clone()),
            _ => None,
        })
    }

    #[test]
    fn bodiless_notify_parses_and_has_every_mandatory_header() {
        let routes = vec![
            "<sip:edge1.example.com;lr>".to_owned(),
            "sip:edge2.example.com;lr".to_owned(),
        ];
        let state = SubState::Active { expires: 3600 };
        let wire = build_notify(&params(&routes, &state, None));
        let (lines, body) = split(&wire);
        assert!(body.is_empty());
        assert_eq!(
            lines,
            [
                "NOTIFY sip:00df1e004cd0@10.1.1.44:5060 SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
                "Max-Forwards: 70",
                "Route: <sip:edge1.example.com;lr>",
                "Route: <sip:edge2.example.com;lr>",
                "From: <sip:00df1e004cd0@example.com>;tag=abcd",
                "To: <sip:00df1e004cd0@example.com>;tag=1234",
                "Call-ID: 3573853342923422@10.1.1.44",
                "CSeq: 7 NOTIFY",
                "Contact: <sip:pds@192.0.2.10:5060>",
                "Event: ua-profile;profile-type=device;effective-by=3600",
                "Subscription-State: active;expires=3600",
                "SIP-ETag: 5e1a2b3c4d5e6f708192",
                "Allow-Events: ua-profile, sip-profile",
                "User-Agent: uaprof/0.1",
                "Content-Length: 0",
            ]
        );

        let msg = rsip::SipMessage::try_from(wire.as_slice()).expect("valid SIP");
        let rsip::SipMessage::Request(req) = msg else {
            panic!("expected a request");
        };
        assert_eq!(req.method, rsip::Method::Notify);
        assert!(req.body.is_empty());
        assert_eq!(
            other_header(&req, "SIP-ETag").as_deref(),
            Some("5e1a2b3c4d5e6f708192")
        );
        // rsip 0.4 keeps Subscription-State untyped.
        assert_eq!(
            other_header(&req, "Subscription-State").as_deref(),
            Some("active;expires=3600")
        );
        assert!(req.headers.iter().any(|h| matches!(
            h,
            Header::Event(e) if e.to_string().ends_with("ua-profile;profile-type=device;effective-by=3600")
        )));
        let routes = req
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Route(_)))
            .count();
        assert_eq!(routes, 2);
    }

    #[test]
    fn notify_with_body_has_exact_length_and_body_headers() {
        let body = NotifyBody {
            content_type: "message/external-body;access-type=\"URL\";\
                expiration=\"Tue, 14 Nov 2023 22:13:20 GMT\";URL=\"https://h/a.xml\";size=3"
                .into(),
            content_disposition: Some("render".into()),
            bytes: b"Content-Type: application/xml\r\nContent-ID: <a@h>\r\n\r\n".to_vec(),
        };
        let state = SubState::Terminated {
            reason: TerminationReason::Timeout,
            retry_after: None,
        };
        let wire = build_notify(&params(&[], &state, Some(&body)));
        let (lines, got_body) = split(&wire);
        assert_eq!(got_body, body.bytes);
        assert!(lines.contains(&format!("Content-Type: {}", body.content_type)));
        assert!(lines.contains(&"Content-Disposition: render".to_owned()));
        assert!(lines.contains(&"Subscription-State: terminated;reason=timeout".to_owned()));
        assert!(!lines.iter().any(|l| l.starts_with("Route:")));

        let msg = rsip::SipMessage::try_from(wire.clone()).expect("valid SIP");
        assert_eq!(msg.body(), &body.bytes);
        let rsip::SipMessage::Request(req) = msg else {
            panic!("expected a request");
        };
        let cl = req.headers.iter().find_map(|h| match h {
            Header::ContentLength(cl) => Some(cl.to_string()),
            _ => None,
        });
        assert_eq!(
            cl.as_deref(),
            Some(format!("Content-Length: {}", body.bytes.len()).as_str())
        );
    }

    #[test]
    fn multipart_body_round_trips_through_rsip() {
        use crate::accept::BodyMode;
        use crate::body::build_body;
        use uaprof_api::{DocumentRef, ProfileKey};
        let doc = |name: &str| DocumentRef {
            owner: ProfileKey::device("00df1e004cd0").expect("mac"),
            name: name.into(),
            url: format!("http://cfg.example.com/{name}"),
            content_type: "application/xml".into(),
            size: 10,
            sha1_hex: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
            version: 1,
            content_id: format!("{name}@cfg.example.com"),
            expires_unix: 1_700_000_000,
        };
        let body = build_body(
            &[doc("a.xml"), doc("b.xml")],
            &BodyMode::ExternalBody { multipart: true },
            &|_| None,
            0,
        )
        .expect("body");
        let state = SubState::Active { expires: 60 };
        let wire = build_notify(&params(&[], &state, Some(&body)));
        let (_, got_body) = split(&wire);
        assert_eq!(got_body, body.bytes);
        let msg = rsip::SipMessage::try_from(wire).expect("valid SIP");
        assert_eq!(msg.body(), &body.bytes);
    }

    #[test]
    fn injected_line_breaks_are_neutralised() {
        let state = SubState::Pending { expires: 10 };
        let mut p = params(&[], &state, None);
        p.to = "<sip:a@b>;tag=1\r\nX-Evil: yes";
        p.etag = "";
        p.user_agent = None;
        let wire = build_notify(&p);
        let (lines, _) = split(&wire);
        assert!(lines.contains(&"To: <sip:a@b>;tag=1  X-Evil: yes".to_owned()));
        assert!(!lines.iter().any(|l| l.starts_with("X-Evil")));
        assert!(!lines.iter().any(|l| l.starts_with("SIP-ETag")));
        assert!(!lines.iter().any(|l| l.starts_with("User-Agent")));
        rsip::SipMessage::try_from(wire).expect("valid SIP");
    }

    #[test]
    fn estimate_is_enough() {
        let routes = vec!["<sip:edge.example.com;lr>".to_owned(); 3];
        let state = SubState::Active { expires: 3600 };
        let p = params(&routes, &state, None);
        let wire = build_notify(&p);
        assert!(wire.capacity() >= wire.len());
        // No reallocation: the first allocation was big enough.
        assert!(wire.capacity() < wire.len() + 512);
    }
}

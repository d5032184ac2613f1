//! Property tests of the message parser and printer (stable; the cargo-fuzz targets in
//! `fuzz/` explore the same properties with coverage guidance, on nightly).

use proptest::collection::vec;
use proptest::prelude::*;
use rsip::SipMessage;
use sip_core::message::{
    self, header, headers_all, parse, response_for, stream_frame_len, to_bytes,
};

/// Header values that need no escaping: visible ASCII with inner SP/HTAB, no commas (so a
/// list header stays one element) and nothing that starts a quoted string or a bracket.
fn value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~@:/=?-]{1,12}([ \t][A-Za-z0-9.!%*_+`'~@:/=?-]{1,12}){0,3}"
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,16}"
}

#[derive(Debug, Clone)]
struct Generated {
    call_id: String,
    cseq: u32,
    from_tag: String,
    extra: Vec<(String, String)>,
    compact: bool,
    body: Vec<u8>,
    lws: String,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        token(),
        0u32..(1 << 31),
        token(),
        vec(("X-[A-Za-z]{1,8}", value()), 0..6),
        any::<bool>(),
        vec(any::<u8>(), 0..64),
        "[ \t]{0,3}",
    )
        .prop_map(
            |(call_id, cseq, from_tag, extra, compact, body, lws)| Generated {
                call_id,
                cseq,
                from_tag,
                extra,
                compact,
                body,
                lws,
            },
        )
}

fn render(g: &Generated) -> Vec<u8> {
    let name = |long: &'static str, short: &'static str| if g.compact { short } else { long };
    let w = &g.lws;
    let mut s = String::from("SUBSCRIBE sip:00df1e004cd0@example.com SIP/2.0\r\n");
    s += &format!(
        "{}:{w}SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{};rport{w}\r\n",
        name("Via", "v"),
        g.cseq
    );
    s += &format!(
        "{}:{w}<sip:a@example.com>;tag={}\r\n",
        name("From", "f"),
        g.from_tag
    );
    s += &format!("{}: <sip:a@example.com>\r\n", name("To", "t"));
    s += &format!("{}:{w}{}{w}\r\n", name("Call-ID", "i"), g.call_id);
    s += &format!("CSeq: {} SUBSCRIBE\r\n", g.cseq);
    s += &format!("{}: ua-profile;profile-type=device\r\n", name("Event", "o"));
    for (n, v) in &g.extra {
        s += &format!("{n}:{w}{v}{w}\r\n");
    }
    s += &format!("{}: {}\r\n\r\n", name("Content-Length", "l"), g.body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(&g.body);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1024)) {
        let _ = message::parse_lenient_for_error(&bytes);
        let _ = stream_frame_len(&bytes);
        if let Err(e) = parse(&bytes)
            && let Some(resp) = e.error_response()
        {
            let printed = message::response_to_bytes(&resp);
            prop_assert!(parse(&printed).is_ok(), "{:?}", printed);
        }
    }

    #[test]
    fn generated_requests_parse_with_their_values(g in generated()) {
        let raw = render(&g);
        let msg = parse(&raw).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let SipMessage::Request(req) = &msg else {
            return Err(TestCaseError::fail("not a request"));
        };
        prop_assert_eq!(header(&req.headers, "Call-ID"), Some(g.call_id.as_str()));
        prop_assert_eq!(message::tag_of(header(&req.headers, "From").unwrap_or("")), Some(g.from_tag.as_str()));
        prop_assert_eq!(message::parse_cseq(header(&req.headers, "CSeq").unwrap_or("")), Some((g.cseq, "SUBSCRIBE")));
        for (n, v) in &g.extra {
            prop_assert!(headers_all(&req.headers, n).any(|got| got == v), "{} lost {:?}", n, v);
        }
        prop_assert_eq!(&req.body, &g.body);
        // The answer to it is a message we accept too.
        let resp = message::response_to_bytes(&response_for(req, 200, None, None));
        prop_assert!(parse(&resp).is_ok(), "{:?}", resp);
    }

    #[test]
    fn printed_messages_round_trip(g in generated()) {
        let msg = parse(&render(&g)).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let printed = to_bytes(&msg);
        let again = parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(to_bytes(&again), printed);
        prop_assert_eq!(again.body(), msg.body());
    }

    #[test]
    fn mutated_requests_never_panic_and_round_trip(
        g in generated(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut raw = render(&g);
        for (at, byte, how) in edits {
            if raw.is_empty() {
                break;
            }
            let i = at.index(raw.len());
            match how {
                0 => raw[i] = byte,
                1 => raw.insert(i, byte),
                _ => {
                    raw.remove(i);
                }
            }
        }
        match parse(&raw) {
            Ok(msg) => {
                let printed = to_bytes(&msg);
                let again = parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}: {printed:?}")))?;
                prop_assert_eq!(to_bytes(&again), printed);
                if let SipMessage::Request(req) = &msg {
                    let resp = message::response_to_bytes(&response_for(req, 200, None, None));
                    prop_assert!(parse(&resp).is_ok(), "{:?}", resp);
                }
            }
            Err(e) => {
                if let Some(resp) = e.error_response() {
                    let printed = message::response_to_bytes(&resp);
                    prop_assert!(parse(&printed).is_ok(), "{:?}", printed);
                }
            }
        }
    }

    #[test]
    fn stream_frames_are_whole_messages(g in generated(), cut in any::<prop::sample::Index>(), trailing in vec(any::<u8>(), 0..64)) {
        let frame = render(&g);
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(&frame);
        let total = buf.len();
        // Any prefix needs more data; the whole frame (and more after it) is one frame.
        let prefix = &buf[..cut.index(total)];
        prop_assert_eq!(stream_frame_len(prefix), Ok(None));
        buf.extend_from_slice(&trailing);
        prop_assert_eq!(stream_frame_len(&buf), Ok(Some(total)));
        prop_assert!(parse(&buf[..total]).is_ok());
    }
}

//! The SIP message parser on arbitrary bytes (one UDP datagram or one stream frame).
//!
//! Properties: nothing panics; a parsed message prints to bytes that parse again and print
//! the same (print → parse → print is a fixed point); the header helpers the engine calls on
//! every request never panic; every response the server would send (the 200 to a parsed
//! request, the 4xx/5xx to an answerable broken one) is itself a message the parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::message::{
    self, MAX_MESSAGE_SIZE, header, header_params, headers_all, name_addr_uri, parse, tag_of,
};
use sip_core::via;
use sip_core::{Peer, Transport};

fuzz_target!(|data: &[u8]| {
    let _ = message::parse_lenient_for_error(data);
    match parse(data) {
        Ok(msg) => {
            let printed = message::to_bytes(&msg);
            // Expanding compact names may grow a message past the limit; that is no defect.
            if printed.len() <= MAX_MESSAGE_SIZE {
                let again = parse(&printed).unwrap_or_else(|e| {
                    panic!(
                        "printed message does not parse: {e}\n{}",
                        String::from_utf8_lossy(&printed)
                    )
                });
                assert_eq!(
                    message::to_bytes(&again),
                    printed,
                    "print → parse → print is not stable"
                );
            }
            let headers = match &msg {
                rsip::SipMessage::Request(r) => &r.headers,
                rsip::SipMessage::Response(r) => &r.headers,
            };
            for name in [
                "Via",
                "From",
                "To",
                "Contact",
                "Route",
                "Record-Route",
                "Event",
            ] {
                for v in headers_all(headers, name) {
                    let _ = header_params(v);
                    let _ = name_addr_uri(v);
                    let _ = tag_of(v);
                }
            }
            let _ = header(headers, "Call-ID");
            if let rsip::SipMessage::Request(req) = &msg {
                // What the engine does with every request before answering it.
                let _ = via::top_via_branch(req);
                let _ = via::sent_by(req);
                let mut stamped = req.clone();
                let source = std::net::SocketAddr::from(([192, 0, 2, 1], 5060));
                via::stamp_received(&mut stamped, source);
                let _ = via::response_destination(&stamped, Peer::new(Transport::Udp, source));
                let resp = message::response_for(req, 200, None, None);
                answer_parses(&resp);
            }
        }
        Err(e) => {
            if let Some(resp) = e.error_response() {
                answer_parses(&resp);
            }
        }
    }
});

fn answer_parses(resp: &rsip::Response) {
    let bytes = message::response_to_bytes(resp);
    if bytes.len() <= MAX_MESSAGE_SIZE
        && let Err(e) = parse(&bytes)
    {
        panic!(
            "our response does not parse: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

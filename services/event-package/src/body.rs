//! NOTIFY bodies.
//!
//! **Content indirection** (RFC 4483, the default): each document becomes a
//! `message/external-body` entity (RFC 2046 §5.2.3, access-type `URL` from RFC 2017):
//!
//! ```text
//! Content-Type: message/external-body;access-type="URL";
//!     expiration="<RFC 1123 date>";URL="<url>";size=<n>;hash=<sha1 hex>
//! Content-Disposition: render
//!
//! Content-Type: <the document's type>
//! Content-ID: <content-id>
//! ```
//!
//! The headers after the blank line are the *phantom* headers of the external content.
//! `Content-ID` goes there, not on the outer entity: RFC 2046 §5.2.3 requires it in the
//! encapsulated headers of every external-body, and RFC 4483's examples put it there. The
//! disposition belongs to the entity we send, so it sits on the outer headers (as in RFC
//! 4483's examples). Thus every document carries Content-Type, Content-ID and
//! Content-Disposition. One document is sent as the whole SIP body (the outer headers become
//! the SIP Content-Type / Content-Disposition); several are parts of `multipart/mixed`.
//!
//! **Disposition**: `render`, RFC 3261 §20.11's default for bodies that are not `session`;
//! neither RFC 6080 nor RFC 4483 defines another for profile documents. A `multipart/mixed`
//! body gets no SIP-level disposition: each part carries its own.
//!
//! **Inline** ([`BodyMode::Inline`]): documents whose type the Accept list allows, as their
//! own bytes; several as `multipart/mixed` parts with Content-Type, Content-ID and
//! Content-Disposition. A single inline document is the whole SIP body; SIP has no place for
//! its Content-ID then.
//!
//! **Several documents without `multipart/mixed`** ([`BodyMode::allows_multipart`] false):
//! only the first usable document is sent (documents come in the resolver's stable order),
//! because the subscriber's Accept excludes every body that could carry more.
//!
//! **Documents skipped**: a document whose content type, Content-ID or (inline) bytes would
//! make a malformed or injectable message is left out; validating them is the content tier's
//! job, this is the last line of defence. URLs are not skipped: characters that may not
//! appear in a quoted MIME parameter or a URL (controls, space, `"`, `\`, non-ASCII) are
//! percent-encoded, which leaves a valid URL meaning the same resource.
//!
//! Output is deterministic: equal input gives identical bytes (the multipart boundary is a
//! digest of the parts).

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use uaprof_api::DocumentRef;

use crate::accept::{BodyMode, EXTERNAL_BODY, MULTIPART_MIXED, split_type};
use crate::wire::contains;

/// The disposition of every document we send.
pub const DISPOSITION: &str = "render";

/// `expiration` used when a document carries none (`expires_unix == 0`): RFC 4483 makes the
/// parameter mandatory, and a day matches the default subscription duration, after which the
/// phone re-subscribes and learns a fresh one.
pub const DEFAULT_EXPIRATION_SECS: u64 = 86_400;

/// 9999-12-31T23:59:59Z: the last instant an RFC 1123 date (and `httpdate`) can express.
const MAX_HTTP_DATE_UNIX: u64 = 253_402_300_799;

/// Longest Content-ID accepted; real ones are a digest plus a domain.
const MAX_CONTENT_ID: usize = 256;

/// A NOTIFY body and the SIP headers that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyBody {
    /// The full `Content-Type` header value, parameters included.
    pub content_type: String,
    /// The SIP `Content-Disposition` value, if the body as a whole has one.
    pub content_disposition: Option<String>,
    pub bytes: Vec<u8>,
}

/// An `application/url` body: `url` as the whole body, or `None` for an empty URL or one
/// with whitespace or a control character, which would break the body's one line.
pub fn url_body(url: &str) -> Option<NotifyBody> {
    if url.is_empty() || url.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some(NotifyBody {
        content_type: crate::accept::URL_BODY.to_owned(),
        content_disposition: None,
        bytes: url.as_bytes().to_vec(),
    })
}

/// Builds the NOTIFY body for `docs` (see the module docs for the rules). `inline` supplies
/// a document's bytes in [`BodyMode::Inline`] (`None` skips the document); `now_unix` only
/// fills a missing `expiration`.
/// (For [`BodyMode::Url`] towards a phone that takes the URL as its folder, see
/// [`url_body`].) `None` when nothing is left to send: the NOTIFY goes out
/// without a body, which RFC 6080 requires phones to accept.
pub fn build_body(
    docs: &[DocumentRef],
    mode: &BodyMode,
    inline: &dyn Fn(&DocumentRef) -> Option<Vec<u8>>,
    now_unix: u64,
) -> Option<NotifyBody> {
    let multipart = mode.allows_multipart();
    match mode {
        BodyMode::ExternalBody { .. } => {
            let mut usable = docs.iter().filter(|d| headers_safe(d));
            if !multipart {
                return usable.next().map(|d| single_external(d, now_unix));
            }
            let chosen: Vec<&DocumentRef> = usable.collect();
            match chosen.as_slice() {
                [] => None,
                [d] => Some(single_external(d, now_unix)),
                many => {
                    let parts = many.iter().map(|d| external_part(d, now_unix)).collect();
                    Some(multipart_body(parts))
                }
            }
        }
        BodyMode::Url => docs.iter().find_map(|d| url_body(&d.url)),
        BodyMode::Inline(list) => {
            let mut usable = docs
                .iter()
                .filter(|d| headers_safe(d) && list.allows(&d.content_type))
                .filter_map(|d| inline(d).map(|bytes| (d, bytes)));
            if !multipart {
                return usable.next().map(|(d, bytes)| single_inline(d, bytes));
            }
            let mut chosen: Vec<(&DocumentRef, Vec<u8>)> = usable.collect();
            if chosen.len() <= 1 {
                return chosen.pop().map(|(d, bytes)| single_inline(d, bytes));
            }
            let parts = chosen
                .into_iter()
                .map(|(d, bytes)| inline_part(d, &bytes))
                .collect();
            Some(multipart_body(parts))
        }
    }
}

/// The `message/external-body` Content-Type value for one document.
fn external_content_type(doc: &DocumentRef, now_unix: u64) -> String {
    let expires = if doc.expires_unix == 0 {
        now_unix.saturating_add(DEFAULT_EXPIRATION_SECS)
    } else {
        doc.expires_unix
    };
    // httpdate panics past year 9999; a promise that long is as good as forever anyway.
    let when = UNIX_EPOCH + Duration::from_secs(expires.min(MAX_HTTP_DATE_UNIX));
    let url = quotable_url(&doc.url);
    let mut out = String::with_capacity(120 + url.len());
    out.push_str(EXTERNAL_BODY);
    out.push_str(";access-type=\"URL\";expiration=\"");
    out.push_str(&httpdate::fmt_http_date(when));
    out.push_str("\";URL=\"");
    out.push_str(&url);
    out.push_str("\";size=");
    out.push_str(&doc.size.to_string());
    // RFC 4483's hash is the hex SHA-1 of the content; anything else would only make phones
    // reject a good download, so a malformed one is left out.
    if doc.sha1_hex.len() == 40 && doc.sha1_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        out.push_str(";hash=");
        out.push_str(&doc.sha1_hex);
    }
    out
}

/// Headers of the external content: its real type and identity.
fn phantom_headers(doc: &DocumentRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + doc.content_type.len() + doc.content_id.len());
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(doc.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-ID: <");
    out.extend_from_slice(doc.content_id.as_bytes());
    out.extend_from_slice(b">\r\n\r\n");
    out
}

fn single_external(doc: &DocumentRef, now_unix: u64) -> NotifyBody {
    NotifyBody {
        content_type: external_content_type(doc, now_unix),
        content_disposition: Some(DISPOSITION.to_owned()),
        bytes: phantom_headers(doc),
    }
}

/// One multipart part (headers, blank line, body) for an external document.
fn external_part(doc: &DocumentRef, now_unix: u64) -> Vec<u8> {
    let mut part = Vec::with_capacity(256);
    part.extend_from_slice(b"Content-Type: ");
    part.extend_from_slice(external_content_type(doc, now_unix).as_bytes());
    part.extend_from_slice(b"\r\nContent-Disposition: ");
    part.extend_from_slice(DISPOSITION.as_bytes());
    part.extend_from_slice(b"\r\n\r\n");
    part.extend_from_slice(&phantom_headers(doc));
    part
}

fn single_inline(doc: &DocumentRef, bytes: Vec<u8>) -> NotifyBody {
    NotifyBody {
        content_type: doc.content_type.clone(),
        content_disposition: Some(DISPOSITION.to_owned()),
        bytes,
    }
}

fn inline_part(doc: &DocumentRef, bytes: &[u8]) -> Vec<u8> {
    let mut part = Vec::with_capacity(128 + bytes.len());
    part.extend_from_slice(b"Content-Type: ");
    part.extend_from_slice(doc.content_type.as_bytes());
    part.extend_from_slice(b"\r\nContent-ID: <");
    part.extend_from_slice(doc.content_id.as_bytes());
    part.extend_from_slice(b">\r\nContent-Disposition: ");
    part.extend_from_slice(DISPOSITION.as_bytes());
    // MIME's default transfer encoding is 7bit; SIP is 8-bit clean (RFC 5621 §3), so say so
    // rather than encode when the document is not plain ASCII text.
    if bytes.iter().any(|&b| b == 0 || b >= 0x80) {
        part.extend_from_slice(b"\r\nContent-Transfer-Encoding: binary");
    }
    part.extend_from_slice(b"\r\n\r\n");
    part.extend_from_slice(bytes);
    part
}

/// Joins parts into `multipart/mixed` (RFC 2046 §5.1.1).
fn multipart_body(parts: Vec<Vec<u8>>) -> NotifyBody {
    let boundary = boundary_for(&parts);
    let b = boundary.as_bytes();
    let len: usize = parts.iter().map(|p| p.len() + b.len() + 6).sum::<usize>() + b.len() + 8;
    let mut bytes = Vec::with_capacity(len);
    for part in &parts {
        bytes.extend_from_slice(b"--");
        bytes.extend_from_slice(b);
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(part);
        // This CRLF belongs to the next delimiter, not to the part.
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"--");
    bytes.extend_from_slice(b);
    bytes.extend_from_slice(b"--\r\n");
    NotifyBody {
        content_type: format!("{MULTIPART_MIXED};boundary={boundary}"),
        content_disposition: None,
        bytes,
    }
}

/// A boundary that occurs in no part (RFC 2046 §5.1.1), derived from the parts so equal
/// input gives equal bytes. A collision (possible only with inline bytes built to contain
/// our candidates) moves to the next candidate; each costs the document's length in bytes
/// of search, so a hostile document cannot make this worse than quadratic in its own size.
fn boundary_for(parts: &[Vec<u8>]) -> String {
    let mut attempt: u64 = 0;
    loop {
        let mut h = Sha1::new();
        h.update(attempt.to_be_bytes());
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        // 31 characters, all bchars, well under RFC 2046's 70.
        let boundary = format!("uaprof-{}", hex::encode(&h.finalize()[..12]));
        if !parts.iter().any(|p| contains(p, boundary.as_bytes())) {
            return boundary;
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// Whether the document's content type and Content-ID can be printed as header values.
fn headers_safe(doc: &DocumentRef) -> bool {
    let ct_ok = split_type(&doc.content_type).is_some()
        && !doc.content_type.chars().any(|c| c.is_control());
    let cid = &doc.content_id;
    let cid_ok = !cid.is_empty()
        && cid.len() <= MAX_CONTENT_ID
        && cid
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    ct_ok && cid_ok
}

/// The URL with every byte that is unsafe inside a quoted parameter (or not allowed in a
/// URL at all) percent-encoded. RFC 2017 also says whitespace in the URL parameter is to be
/// ignored, so a literal space would silently change the URL.
fn quotable_url(url: &str) -> Cow<'_, str> {
    let unsafe_byte = |b: u8| !b.is_ascii_graphic() || b == b'"' || b == b'\\';
    if !url.bytes().any(unsafe_byte) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 16);
    for b in url.bytes() {
        if unsafe_byte(b) {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accept::{AcceptList, body_mode};
    use uaprof_api::ProfileKey;

    const EXPIRES: u64 = 1_700_000_000;
    const EXPIRES_TEXT: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    fn doc(name: &str, ct: &str) -> DocumentRef {
        DocumentRef {
            owner: ProfileKey::device("00df1e004cd0").expect("valid mac"),
            name: name.into(),
            url: format!("https://cfg.example.com/device/mac:00df1e004cd0/{name}"),
            content_type: ct.into(),
            size: 1234,
            sha1_hex: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
            version: 3,
            content_id: format!("{name}.v3@cfg.example.com"),
            expires_unix: EXPIRES,
        }
    }

    fn no_inline(_: &DocumentRef) -> Option<Vec<u8>> {
        None
    }

    fn bytes_of(d: &DocumentRef) -> Option<Vec<u8>> {
        Some(format!("<doc name=\"{}\"/>", d.name).into_bytes())
    }

    fn ext(multipart: bool) -> BodyMode {
        BodyMode::ExternalBody { multipart }
    }

    fn inline_mode(accept: &str) -> BodyMode {
        BodyMode::Inline(AcceptList::parse(&[accept]))
    }

    fn text(b: &NotifyBody) -> String {
        String::from_utf8(b.bytes.clone()).expect("utf-8 body")
    }

    fn boundary(b: &NotifyBody) -> String {
        b.content_type
            .strip_prefix("multipart/mixed;boundary=")
            .expect("multipart content type")
            .to_owned()
    }

    #[test]
    fn a_url_body_is_the_first_document_url() {
        let docs = [doc("a.cfg", "text/plain"), doc("b.xml", "application/xml")];
        let body = build_body(&docs, &BodyMode::Url, &no_inline, 0).expect("body");
        assert_eq!(body.content_type, "application/url");
        assert_eq!(body.content_disposition, None);
        assert_eq!(text(&body), docs[0].url);
        let mut broken = doc("c.cfg", "text/plain");
        broken.url = "https://h/a\r\nX: y".into();
        let body = build_body(&[broken, docs[1].clone()], &BodyMode::Url, &no_inline, 0);
        assert_eq!(body.map(|b| text(&b)), Some(docs[1].url.clone()));
        assert_eq!(build_body(&[], &BodyMode::Url, &no_inline, 0), None);
    }

    #[test]
    fn no_documents_no_body() {
        assert_eq!(build_body(&[], &ext(true), &no_inline, 0), None);
        assert_eq!(build_body(&[], &inline_mode("*/*"), &bytes_of, 0), None);
    }

    #[test]
    fn single_external_body_exact() {
        let d = doc("settings.xml", "application/xml");
        let body = build_body(std::slice::from_ref(&d), &ext(true), &no_inline, 5).expect("body");
        assert_eq!(
            body.content_type,
            format!(
                "message/external-body;access-type=\"URL\";expiration=\"{EXPIRES_TEXT}\";\
                 URL=\"https://cfg.example.com/device/mac:00df1e004cd0/settings.xml\";\
                 size=1234;hash=a9993e364706816aba3e25717850c26c9cd0d89d"
            )
        );
        assert_eq!(body.content_disposition.as_deref(), Some("render"));
        assert_eq!(
            text(&body),
            "Content-Type: application/xml\r\nContent-ID: <settings.xml.v3@cfg.example.com>\r\n\r\n"
        );
        // Deterministic.
        assert_eq!(build_body(&[d], &ext(true), &no_inline, 5), Some(body));
    }

    #[test]
    fn missing_expiration_and_bad_hash() {
        let mut d = doc("a.xml", "application/xml");
        d.expires_unix = 0;
        d.sha1_hex = "not-a-hash".into();
        let body = build_body(
            &[d],
            &ext(false),
            &no_inline,
            EXPIRES - DEFAULT_EXPIRATION_SECS,
        )
        .expect("body");
        assert!(
            body.content_type
                .contains(&format!("expiration=\"{EXPIRES_TEXT}\""))
        );
        assert!(body.content_type.ends_with(";size=1234"));

        let mut far = doc("a.xml", "application/xml");
        far.expires_unix = u64::MAX;
        let body = build_body(&[far], &ext(false), &no_inline, 0).expect("body");
        assert!(
            body.content_type
                .contains("expiration=\"Fri, 31 Dec 9999 23:59:59 GMT\"")
        );
    }

    #[test]
    fn several_external_bodies_are_multipart() {
        let docs = [
            doc("device.xml", "application/x-z100-device-profile"),
            doc("user.xml", "application/x-z100-user-profile"),
        ];
        let body = build_body(&docs, &ext(true), &no_inline, 0).expect("body");
        let b = boundary(&body);
        assert_eq!(body.content_disposition, None);
        assert!(b.len() <= 70);
        let expected = format!(
            "--{b}\r\n\
             Content-Type: {ct0}\r\n\
             Content-Disposition: render\r\n\
             \r\n\
             Content-Type: application/x-z100-device-profile\r\n\
             Content-ID: <device.xml.v3@cfg.example.com>\r\n\
             \r\n\
             \r\n\
             --{b}\r\n\
             Content-Type: {ct1}\r\n\
             Content-Disposition: render\r\n\
             \r\n\
             Content-Type: application/x-z100-user-profile\r\n\
             Content-ID: <user.xml.v3@cfg.example.com>\r\n\
             \r\n\
             \r\n\
             --{b}--\r\n",
            ct0 = external_content_type(&docs[0], 0),
            ct1 = external_content_type(&docs[1], 0),
        );
        assert_eq!(text(&body), expected);
        // The boundary occurs only as delimiters.
        assert_eq!(text(&body).matches(b.as_str()).count(), 3);
        // Deterministic, and different content gives a different boundary.
        assert_eq!(
            build_body(&docs, &ext(true), &no_inline, 0),
            Some(body.clone())
        );
        let other = [docs[0].clone()];
        let mut other = other.to_vec();
        other.push(doc("user2.xml", "application/xml"));
        let body2 = build_body(&other, &ext(true), &no_inline, 0).expect("body");
        assert_ne!(boundary(&body2), b);
    }

    #[test]
    fn without_multipart_only_the_first_document_goes() {
        let docs = [
            doc("a.xml", "application/xml"),
            doc("b.xml", "application/xml"),
        ];
        let body = build_body(&docs, &ext(false), &no_inline, 0).expect("body");
        assert!(body.content_type.starts_with("message/external-body;"));
        assert!(text(&body).contains("<a.xml.v3@cfg.example.com>"));
        assert!(!text(&body).contains("b.xml"));
    }

    #[test]
    fn inline_single_and_filtering() {
        let docs = [
            doc("a.bin", "application/octet-stream"),
            doc("b.xml", "application/xml"),
            doc("c.xml", "application/xml"),
        ];
        // Only XML accepted, multipart not: the first acceptable document.
        let body = build_body(&docs, &inline_mode("application/xml"), &bytes_of, 0).expect("body");
        assert_eq!(body.content_type, "application/xml");
        assert_eq!(body.content_disposition.as_deref(), Some("render"));
        assert_eq!(text(&body), "<doc name=\"b.xml\"/>");

        // The callback may decline a document.
        let only_c = |d: &DocumentRef| (d.name == "c.xml").then(|| b"C".to_vec());
        let body = build_body(
            &docs,
            &inline_mode("application/*, multipart/mixed"),
            &only_c,
            0,
        )
        .expect("body");
        assert_eq!(body.content_type, "application/xml");
        assert_eq!(body.bytes, b"C");

        // Nothing acceptable or nothing supplied: no body.
        assert_eq!(
            build_body(&docs, &inline_mode("text/plain"), &bytes_of, 0),
            None
        );
        assert_eq!(
            build_body(&docs, &inline_mode("application/xml"), &no_inline, 0),
            None
        );
    }

    #[test]
    fn inline_multipart() {
        let docs = [
            doc("a.bin", "application/octet-stream"),
            doc("b.xml", "application/xml"),
            doc("c.xml", "application/xml"),
        ];
        let binary = |d: &DocumentRef| {
            Some(if d.name == "c.xml" {
                vec![0xff, 0x00, b'x']
            } else {
                bytes_of(d)?
            })
        };
        let mode = inline_mode("application/xml, multipart/mixed");
        let body = build_body(&docs, &mode, &binary, 0).expect("body");
        let b = boundary(&body);
        let mut expected = format!(
            "--{b}\r\n\
             Content-Type: application/xml\r\n\
             Content-ID: <b.xml.v3@cfg.example.com>\r\n\
             Content-Disposition: render\r\n\
             \r\n\
             <doc name=\"b.xml\"/>\r\n\
             --{b}\r\n\
             Content-Type: application/xml\r\n\
             Content-ID: <c.xml.v3@cfg.example.com>\r\n\
             Content-Disposition: render\r\n\
             Content-Transfer-Encoding: binary\r\n\
             \r\n"
        )
        .into_bytes();
        expected.extend_from_slice(&[0xff, 0x00, b'x']);
        expected.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        assert_eq!(body.bytes, expected);
    }

    #[test]
    fn boundary_never_occurs_in_a_part() {
        // A document that contains the boundary the first attempt would pick.
        let docs = [
            doc("a.xml", "application/xml"),
            doc("b.xml", "application/xml"),
        ];
        let mode = inline_mode("application/xml, multipart/mixed");
        let first = boundary(&build_body(&docs, &mode, &bytes_of, 0).expect("body"));
        let hostile = |d: &DocumentRef| {
            Some(if d.name == "a.xml" {
                format!("<x>{first}</x>").into_bytes()
            } else {
                bytes_of(d)?
            })
        };
        // The hostile bytes change the digest, so compute what attempt 0 would be for them and
        // embed that too: the builder must still find a free boundary.
        let parts_for = |f: &dyn Fn(&DocumentRef) -> Option<Vec<u8>>| -> Vec<Vec<u8>> {
            docs.iter()
                .map(|d| inline_part(d, &f(d).expect("bytes")))
                .collect()
        };
        let attempt0 = boundary_for(&parts_for(&hostile));
        let hostile2 = |d: &DocumentRef| {
            Some(if d.name == "a.xml" {
                format!("<x>{first}{attempt0}</x>").into_bytes()
            } else {
                bytes_of(d)?
            })
        };
        for f in [
            &hostile as &dyn Fn(&DocumentRef) -> Option<Vec<u8>>,
            &hostile2,
        ] {
            let body = build_body(&docs, &mode, f, 0).expect("body");
            let b = boundary(&body);
            for part in parts_for(f) {
                assert!(!contains(&part, b.as_bytes()));
            }
            // Exactly three delimiters: two opening, one closing.
            assert_eq!(
                body.bytes
                    .windows(b.len() + 2)
                    .filter(|w| w.starts_with(b"--") && &w[2..] == b.as_bytes())
                    .count(),
                3
            );
        }
    }

    #[test]
    fn unsafe_documents_are_skipped_and_urls_encoded() {
        let mut bad_ct = doc("a.xml", "application/xml\r\nX-Evil: 1");
        bad_ct.content_type = "application/xml\r\nX-Evil: 1".into();
        let mut bad_cid = doc("b.xml", "application/xml");
        bad_cid.content_id = "x>\r\n<y".into();
        let mut odd_url = doc("c.xml", "application/xml");
        odd_url.url = "https://h/a b\"c\\d\u{e9}".into();
        let body = build_body(
            &[bad_ct.clone(), bad_cid.clone(), odd_url],
            &ext(true),
            &no_inline,
            0,
        )
        .expect("body");
        assert!(
            body.content_type
                .contains("URL=\"https://h/a%20b%22c%5Cd%C3%A9\"")
        );
        assert!(!text(&body).contains("Evil"));
        assert_eq!(
            build_body(&[bad_ct, bad_cid], &ext(true), &no_inline, 0),
            None
        );
    }

    #[test]
    fn modes_from_accept_drive_the_body() {
        let docs = [
            doc("a.xml", "application/xml"),
            doc("b.xml", "application/xml"),
        ];
        let mode = body_mode(&[]).expect("default");
        let body = build_body(&docs, &mode, &no_inline, 0).expect("body");
        assert!(body.content_type.starts_with("multipart/mixed;boundary="));
        let mode = body_mode(&["message/external-body"]).expect("ext");
        let body = build_body(&docs, &mode, &no_inline, 0).expect("body");
        assert!(body.content_type.starts_with("message/external-body;"));
    }
}

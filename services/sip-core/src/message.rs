//! Reading and writing SIP messages on top of `rsip`.
//!
//! `rsip` 0.4 does the tokenising; this module adds what a server facing the open network needs
//! around it: a size limit, header folding and compact header names (which `rsip` does not
//! know), the RFC 3261 §8.1.1 mandatory-header checks, Content-Length framing, and a way to
//! answer a broken request with a 4xx/5xx instead of silently dropping it.
//!
//! `rsip` keeps every header as an untyped string and keeps a comma-separated list in one
//! [`rsip::Header`]; the helpers here ([`header`], [`headers_all`], [`header_params`]) work on
//! those strings without allocating, so hot paths never go through `rsip`'s typed parsers.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode};

/// Largest message accepted or produced. It is the largest UDP payload (RFC 3261 §18.1.1 lets
/// UDP messages grow to the IP limit) and far above any SUBSCRIBE/NOTIFY this server handles,
/// so anything bigger over a stream is hostile or broken and must not be buffered.
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// Why a datagram or stream frame is not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("start line or headers are not valid UTF-8")]
    NotUtf8,
    #[error("malformed SIP message: {0}")]
    Malformed(String),
    #[error("missing mandatory {0} header")]
    MissingHeader(&'static str),
    /// A request that is invalid but readable enough to be answered (RFC 3261 §8.2, §16.3):
    /// `request` carries its Via, From, To, Call-ID and CSeq, so [`response_for`] can build
    /// the `status reason` response. When the method itself was unknown `request.method` is a
    /// placeholder; the response echoes the real method from CSeq.
    #[error("invalid request: {status} {reason}")]
    Invalid {
        status: u16,
        reason: &'static str,
        request: Box<Request>,
    },
}

impl ParseError {
    /// True when the sender should get an error response (see [`ParseError::error_response`]);
    /// false when the message must be dropped (responses, unreadable requests).
    pub fn can_respond(&self) -> bool {
        matches!(self, Self::Invalid { .. })
    }

    /// The readable part of an invalid request.
    pub fn request(&self) -> Option<&Request> {
        match self {
            Self::Invalid { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The response to send back for an answerable error (`400 Bad CSeq`, `501 Not
    /// Implemented`, `505 Version Not Supported`, ...), with a fresh To tag like every
    /// response but 100 (RFC 3261 §8.2.6.2).
    pub fn error_response(&self) -> Option<Response> {
        match self {
            Self::Invalid {
                status,
                reason,
                request,
            } => Some(response_for(request, *status, Some(reason), None)),
            _ => None,
        }
    }
}

/// Parses one complete message (one UDP datagram, or one frame cut from a stream).
///
/// Checks, in order: size, UTF-8 of the start line and headers, `rsip` syntax, the five
/// headers every message needs (Via, From, To, Call-ID, CSeq), the CSeq against the request
/// method, and Content-Length against the body. A body longer than Content-Length is cut
/// (RFC 3261 §18.3); a shorter one is an error. Compact header names are expanded so that
/// callers only ever see the long forms.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let bytes = skip_leading_crlf(bytes);
    let (head, body) = split_head(bytes);
    let looks_like_request = !bytes.starts_with(b"SIP/");

    if std::str::from_utf8(head).is_err() {
        return Err(rejected(bytes, "Invalid UTF-8").unwrap_or(ParseError::NotUtf8));
    }
    // rsip splits lines at CRLF only, so a lone CR or LF would end up inside a value and be
    // echoed into our responses, breaking their framing.
    if has_bare_cr_or_lf(head) {
        return Err(rejected(bytes, "Malformed Line Ending")
            .unwrap_or_else(|| ParseError::Malformed("bare CR or LF in headers".into())));
    }

    // rsip neither unfolds continuation lines nor allows blanks before the colon; both are
    // legal (RFC 3261 §7.3.1), so rewrite the head in the rare case it needs it.
    let rewritten;
    let input: &[u8] = if head_needs_rewrite(head) {
        let mut v = rewrite_head(head);
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(body);
        rewritten = v;
        &rewritten
    } else {
        bytes
    };

    let mut msg = match SipMessage::try_from(input) {
        Ok(m) => m,
        Err(e) => {
            if looks_like_request && let Some(err) = rejected(bytes, "") {
                return Err(err);
            }
            return Err(ParseError::Malformed(e.to_string()));
        }
    };
    // rsip reads a Request-URI up to " SIP/2.0" even across line breaks, so its head can run
    // past the blank line where ours ends, and past the CR/LF checks above.
    if msg.body().len() != body.len() {
        return Err(ParseError::Malformed(
            "start line spans several lines".into(),
        ));
    }

    let method = match &mut msg {
        SipMessage::Request(r) => {
            expand_compact_headers(&mut r.headers);
            Some(r.method)
        }
        SipMessage::Response(r) => {
            // rsip reads any three digits; `000` would be printed as `0` and match nothing.
            if !(100..=699).contains(&r.status_code.code()) {
                return Err(ParseError::Malformed("status code outside 100-699".into()));
            }
            expand_compact_headers(&mut r.headers);
            None
        }
    };
    let body_len = msg.body().len();
    // Validate on borrowed header strings, then act on the owned message.
    let verdict: Result<Option<usize>, (u16, &'static str)> = 'verdict: {
        let headers = match &msg {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        };
        let found = match scan_mandatory(headers) {
            Ok(found) => found,
            // With a readable top Via a request can still be told what it lacks (the client
            // matches the answer by branch and CSeq method, RFC 3261 §17.1.3); without one
            // there is nowhere to send it.
            Err(ParseError::MissingHeader(name))
                if method.is_some()
                    && name != "Via"
                    && top_via_readable(headers)
                    && cseq_absent_or_readable(headers) =>
            {
                break 'verdict Err((400, missing_reason(name)));
            }
            Err(e) => return Err(e),
        };
        // Without a readable CSeq and top Via no response could be matched or routed, so
        // these are not answerable (and later stages may rely on both).
        if crate::via::parse_via(found.top_via).is_none() {
            return Err(ParseError::Malformed("unreadable top Via".into()));
        }
        match parse_cseq(found.cseq) {
            None => return Err(ParseError::Malformed("unreadable CSeq".into())),
            Some(_) if matches!(msg.version(), rsip::Version::V1) => {
                Err((505, "Version Not Supported"))
            }
            Some((_, m)) if method.is_some_and(|rm| !m.eq_ignore_ascii_case(method_str(rm))) => {
                Err((400, "CSeq Method Mismatch"))
            }
            Some(_) => match found.content_length.map(|v| trim_lws(v).parse::<usize>()) {
                None => Ok(None),
                Some(Err(_)) => Err((400, "Bad Content-Length")),
                Some(Ok(n)) if n > body_len => Err((400, "Truncated Body")),
                Some(Ok(n)) => Ok(Some(n)),
            },
        }
    };
    match (verdict, msg) {
        (Ok(Some(n)), mut msg) => {
            msg.body_mut().truncate(n);
            Ok(msg)
        }
        (Ok(None), msg) => Ok(msg),
        (Err((status, reason)), SipMessage::Request(mut req)) => {
            stand_in_for_missing(&mut req);
            Err(invalid(req, status, reason))
        }
        (Err((_, reason)), SipMessage::Response(_)) => {
            Err(ParseError::Malformed(reason.to_owned()))
        }
    }
}

fn invalid(req: Request, status: u16, reason: &'static str) -> ParseError {
    ParseError::Invalid {
        status,
        reason,
        request: Box::new(req),
    }
}

/// Classifies a request `rsip` refused (or one with a non-UTF-8 head) into an answerable
/// error, if its core headers are readable. `reason` overrides the generic phrase.
fn rejected(bytes: &[u8], reason: &'static str) -> Option<ParseError> {
    let lenient = lenient_request(bytes)?;
    let (status, default_reason) = if !lenient.version_ok {
        (505, "Version Not Supported")
    } else if !lenient.method_known {
        (501, "Not Implemented")
    } else if !lenient.uri_ok {
        (400, "Bad Request-URI")
    } else {
        (400, "Malformed Request")
    };
    let reason = if reason.is_empty() || status != 400 {
        default_reason
    } else {
        reason
    };
    Some(invalid(lenient.request, status, reason))
}

struct Lenient {
    request: Request,
    method_known: bool,
    uri_ok: bool,
    version_ok: bool,
}

/// Reads just enough of a request `rsip` refused to answer it: the start line and the Via,
/// From, To, Call-ID and CSeq headers (long or compact names). Returns `None` if any of those
/// is missing, or for responses. Unknown methods become `OPTIONS` and an unreadable
/// Request-URI becomes the empty default URI; only the headers matter for a response.
pub fn parse_lenient_for_error(bytes: &[u8]) -> Option<Request> {
    lenient_request(bytes).map(|l| l.request)
}

fn lenient_request(bytes: &[u8]) -> Option<Lenient> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return None;
    }
    let bytes = skip_leading_crlf(bytes);
    let (head, _) = split_head(bytes);
    let head = String::from_utf8_lossy(head);
    let head: Cow<'_, str> = if head_needs_rewrite(head.as_bytes()) {
        Cow::Owned(String::from_utf8_lossy(&rewrite_head(head.as_bytes())).into_owned())
    } else {
        head
    };
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let mut parts = start.split(' ');
    let (m, u, v) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || m.is_empty() || m.starts_with("SIP/") {
        return None;
    }
    let parsed_method = m.parse::<Method>().ok();
    let parsed_uri = rsip::Uri::try_from(u).ok();
    let mut out = Lenient {
        method_known: parsed_method.is_some(),
        uri_ok: parsed_uri.is_some(),
        version_ok: v == "SIP/2.0",
        request: Request {
            method: parsed_method.unwrap_or(Method::Options),
            uri: parsed_uri.unwrap_or_default(),
            version: rsip::Version::V2,
            headers: Headers::default(),
            body: Vec::new(),
        },
    };
    let mut seen = [false; 5];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = trim_lws(name);
        let value = trim_lws(value);
        // Everything here is echoed back; a value that could smuggle a line break or NUL
        // into our response is not "readable enough".
        if value.is_empty() || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            continue;
        }
        let name = expand_compact(name).unwrap_or(name);
        let (slot, h) = if name.eq_ignore_ascii_case("Via") {
            (0, Header::Via(rsip::headers::Via::new(value)))
        } else if name.eq_ignore_ascii_case("From") {
            (1, Header::From(rsip::headers::From::new(value)))
        } else if name.eq_ignore_ascii_case("To") {
            (2, Header::To(rsip::headers::To::new(value)))
        } else if name.eq_ignore_ascii_case("Call-ID") {
            (3, Header::CallId(rsip::headers::CallId::new(value)))
        } else if name.eq_ignore_ascii_case("CSeq") {
            // The client matches our response by CSeq; an unreadable one makes it useless.
            if parse_cseq(value).is_none() {
                continue;
            }
            (4, Header::CSeq(rsip::headers::CSeq::new(value)))
        } else {
            continue;
        };
        // Only Via may repeat; a second From/To/Call-ID/CSeq is ignored like rsip would.
        if slot != 0 && seen[slot] {
            continue;
        }
        seen[slot] = true;
        out.request.headers.push(h);
    }
    if !seen.iter().all(|s| *s)
        || crate::via::parse_via(first_list_value(header(&out.request.headers, "Via")?)).is_none()
    {
        return None;
    }
    Some(out)
}

fn first_list_value(v: &str) -> &str {
    ValueSplit::new(v, true).next().unwrap_or("")
}

/// Strips SIP whitespace (SP, HTAB; RFC 3261 §25.1 LWS once folding is undone). Not
/// `str::trim`, which also strips VT, FF, NEL and Unicode spaces: a value such as
/// `Call-ID: c\u{85}` must be echoed as sent, or the response matches no transaction.
fn trim_lws(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn skip_leading_crlf(mut bytes: &[u8]) -> &[u8] {
    // RFC 3261 §7.5: CRLFs before the start line are ignored (and RFC 5626 keep-alives).
    while let Some(rest) = bytes.strip_prefix(b"\r\n") {
        bytes = rest;
    }
    bytes
}

/// Splits at the blank line: head includes the CRLF of its last header line.
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    match find(bytes, b"\r\n\r\n") {
        Some(i) => (&bytes[..i + 2], &bytes[i + 4..]),
        None => (bytes, &[]),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn has_bare_cr_or_lf(head: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        let bad = match b {
            b'\r' => head.get(i + 1) != Some(&b'\n'),
            b'\n' => prev != b'\r',
            _ => false,
        };
        if bad {
            return true;
        }
        prev = b;
    }
    false
}

fn head_needs_rewrite(head: &[u8]) -> bool {
    let mut first = true;
    for line in head.split(|b| *b == b'\n') {
        if first {
            first = false;
            continue;
        }
        match line.first() {
            Some(b' ' | b'\t') => return true,
            Some(_) => {
                if let Some(colon) = line.iter().position(|b| *b == b':')
                    && colon > 0
                    && matches!(line[colon - 1], b' ' | b'\t')
                {
                    return true;
                }
            }
            None => {}
        }
    }
    false
}

/// Unfolds continuation lines and drops blanks before header colons. Output ends with the
/// CRLF of the last header line, like the input.
fn rewrite_head(head: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(head.len());
    let mut first = true;
    for raw in head.split(|b| *b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if first {
            out.extend_from_slice(line);
            first = false;
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            // Continuation: replace the line break and leading blanks by one space.
            let trimmed = line
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t'))
                .map_or(&[][..], |i| &line[i..]);
            while matches!(out.last(), Some(b' ' | b'\t')) {
                out.pop();
            }
            out.push(b' ');
            out.extend_from_slice(trimmed);
            continue;
        }
        out.extend_from_slice(b"\r\n");
        match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let name = &line[..colon];
                let end = name
                    .iter()
                    .rposition(|b| !matches!(b, b' ' | b'\t'))
                    .map_or(0, |i| i + 1);
                out.extend_from_slice(&name[..end]);
                out.extend_from_slice(&line[colon..]);
            }
            None => out.extend_from_slice(line),
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 3261 §7.3.3 plus the compact forms later RFCs registered (RFC 6665 `o`/`u`, RFC 4028
/// `x`, RFC 3515 `r`, RFC 3892 `b`, RFC 3841 `a`/`j`/`d`, RFC 4474 `y`/`n`).
pub fn expand_compact(name: &str) -> Option<&'static str> {
    let [c] = name.as_bytes() else {
        return None;
    };
    Some(match c.to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'x' => "Session-Expires",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        _ => return None,
    })
}

/// Turns `rsip`'s `Other("v", ..)` etc. into the typed variants the long names produce.
fn expand_compact_headers(headers: &mut Headers) {
    use rsip::headers as h;
    for hdr in headers.iter_mut() {
        let Header::Other(name, value) = hdr else {
            continue;
        };
        let Some(full) = expand_compact(name) else {
            continue;
        };
        let value = std::mem::take(value);
        *hdr = match full {
            "Call-ID" => Header::CallId(h::CallId::new(value)),
            "Contact" => Header::Contact(h::Contact::new(value)),
            "Content-Encoding" => Header::ContentEncoding(h::ContentEncoding::new(value)),
            "Content-Length" => Header::ContentLength(h::ContentLength::new(value)),
            "Content-Type" => Header::ContentType(h::ContentType::new(value)),
            "From" => Header::From(h::From::new(value)),
            "Subject" => Header::Subject(h::Subject::new(value)),
            "Supported" => Header::Supported(h::Supported::new(value)),
            "To" => Header::To(h::To::new(value)),
            "Via" => Header::Via(h::Via::new(value)),
            "Event" => Header::Event(h::Event::new(value)),
            other => Header::Other(other.to_owned(), value),
        };
    }
}

struct Mandatory<'a> {
    top_via: &'a str,
    cseq: &'a str,
    content_length: Option<&'a str>,
}

fn scan_mandatory(headers: &Headers) -> Result<Mandatory<'_>, ParseError> {
    // Only the first From, To and Call-ID count: they are what responses and dialogs use.
    let (mut from, mut to, mut call_id) = (None, None, None);
    let mut top_via = None;
    let mut cseq = None;
    let mut content_length = None;
    for h in headers.iter() {
        match h {
            Header::Via(v) if top_via.is_none() => {
                top_via = ValueSplit::new(v.value(), true).next();
            }
            Header::From(v) if from.is_none() => from = Some(!trim_lws(v.value()).is_empty()),
            Header::To(v) if to.is_none() => to = Some(!trim_lws(v.value()).is_empty()),
            Header::CallId(v) if call_id.is_none() => {
                call_id = Some(!trim_lws(v.value()).is_empty());
            }
            Header::CSeq(v) => {
                cseq.get_or_insert(v.value());
            }
            Header::ContentLength(v) => {
                content_length.get_or_insert(v.value());
            }
            _ => {}
        }
    }
    let missing = if top_via.is_none() {
        "Via"
    } else if from != Some(true) {
        "From"
    } else if to != Some(true) {
        "To"
    } else if call_id != Some(true) {
        "Call-ID"
    } else {
        match cseq {
            Some(cseq) => {
                return Ok(Mandatory {
                    top_via: top_via.unwrap_or(""),
                    cseq,
                    content_length,
                });
            }
            None => "CSeq",
        }
    };
    Err(ParseError::MissingHeader(missing))
}

fn top_via_readable(headers: &Headers) -> bool {
    header(headers, "Via")
        .and_then(crate::via::parse_via)
        .is_some()
}

/// Gives a request that lacks From, To, Call-ID or CSeq a stand-in for each, so the `400`
/// that names the missing header is itself a well-formed response (every response needs all
/// four). The client still matches it: RFC 3261 §17.1.3 matches by the top Via's branch and
/// the CSeq method, and the stand-in CSeq carries the request's method. The values are
/// visibly invented (RFC 3261 §8.1.1.3's anonymous URI, the `.invalid` domain).
fn stand_in_for_missing(req: &mut Request) {
    use rsip::headers as h;
    use rsip::headers::UntypedHeader;
    // An empty one counts as missing (see `scan_mandatory`) and would be copied first.
    req.headers.retain(|h| match h {
        Header::From(v) => !trim_lws(v.value()).is_empty(),
        Header::To(v) => !trim_lws(v.value()).is_empty(),
        Header::CallId(v) => !trim_lws(v.value()).is_empty(),
        _ => true,
    });
    let has = |req: &Request, name: &str| header(&req.headers, name).is_some();
    const ANONYMOUS: &str = "<sip:anonymous@anonymous.invalid>";
    if !has(req, "From") {
        req.headers.push(Header::From(h::From::new(format!(
            "{ANONYMOUS};tag={}",
            new_tag()
        ))));
    }
    if !has(req, "To") {
        req.headers.push(Header::To(h::To::new(ANONYMOUS)));
    }
    if !has(req, "Call-ID") {
        req.headers.push(Header::CallId(h::CallId::new(format!(
            "{}@missing.invalid",
            new_tag()
        ))));
    }
    if !has(req, "CSeq") {
        let method = method_str(req.method);
        req.headers
            .push(Header::CSeq(h::CSeq::new(format!("1 {method}"))));
    }
}

/// The client matches an answer by its CSeq; one that is there but unreadable would be copied
/// into a response that does not parse (a stand-in only replaces a missing one).
fn cseq_absent_or_readable(headers: &Headers) -> bool {
    !has_header(headers, "CSeq") || header(headers, "CSeq").is_some_and(|v| parse_cseq(v).is_some())
}

/// The reason phrase of the `400` for a request without one of the mandatory headers.
fn missing_reason(name: &str) -> &'static str {
    match name {
        "From" => "Missing From Header",
        "To" => "Missing To Header",
        "Call-ID" => "Missing Call-ID Header",
        "CSeq" => "Missing CSeq Header",
        _ => "Missing Mandatory Header",
    }
}

/// `CSeq: 1234 SUBSCRIBE` → `(1234, "SUBSCRIBE")`. The number must fit in 31 bits
/// (RFC 3261 §8.1.1.5).
pub fn parse_cseq(value: &str) -> Option<(u32, &str)> {
    let mut it = value.split_ascii_whitespace();
    let num = it.next()?;
    let method = it.next()?;
    if it.next().is_some() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = num.parse().ok()?;
    (n < 1 << 31).then_some((n, method))
}

/// The canonical (upper-case) token of an `rsip` method, without allocating.
pub fn method_str(m: Method) -> &'static str {
    match m {
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Info => "INFO",
        Method::Invite => "INVITE",
        Method::Message => "MESSAGE",
        Method::Notify => "NOTIFY",
        Method::Options => "OPTIONS",
        Method::PRack => "PRACK",
        Method::Publish => "PUBLISH",
        Method::Refer => "REFER",
        Method::Register => "REGISTER",
        Method::Subscribe => "SUBSCRIBE",
        Method::Update => "UPDATE",
    }
}

macro_rules! header_names {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The wire name and raw value of a header, for every `rsip` variant.
        pub fn name_value(h: &Header) -> (&str, &str) {
            match h {
                $(Header::$variant(v) => ($name, v.value()),)*
                Header::Other(n, v) => (n.as_str(), v.as_str()),
            }
        }
    };
}

header_names! {
    Accept => "Accept",
    AcceptEncoding => "Accept-Encoding",
    AcceptLanguage => "Accept-Language",
    AlertInfo => "Alert-Info",
    Allow => "Allow",
    AuthenticationInfo => "Authentication-Info",
    Authorization => "Authorization",
    CSeq => "CSeq",
    CallId => "Call-ID",
    CallInfo => "Call-Info",
    Contact => "Contact",
    ContentDisposition => "Content-Disposition",
    ContentEncoding => "Content-Encoding",
    ContentLanguage => "Content-Language",
    ContentLength => "Content-Length",
    ContentType => "Content-Type",
    Date => "Date",
    ErrorInfo => "Error-Info",
    Event => "Event",
    Expires => "Expires",
    From => "From",
    InReplyTo => "In-Reply-To",
    MaxForwards => "Max-Forwards",
    MimeVersion => "MIME-Version",
    MinExpires => "Min-Expires",
    Organization => "Organization",
    Priority => "Priority",
    ProxyAuthenticate => "Proxy-Authenticate",
    ProxyAuthorization => "Proxy-Authorization",
    ProxyRequire => "Proxy-Require",
    RecordRoute => "Record-Route",
    ReplyTo => "Reply-To",
    Require => "Require",
    RetryAfter => "Retry-After",
    Route => "Route",
    Server => "Server",
    Subject => "Subject",
    SubscriptionState => "Subscription-State",
    Supported => "Supported",
    Timestamp => "Timestamp",
    To => "To",
    Unsupported => "Unsupported",
    UserAgent => "User-Agent",
    Via => "Via",
    Warning => "Warning",
    WwwAuthenticate => "WWW-Authenticate",
}

/// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1 allows combining them
/// into one line). Others, such as Date or the auth headers, contain commas that are not
/// list separators and must never be split.
fn is_list_header(canonical: &str) -> bool {
    const LISTS: &[&str] = &[
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Allow",
        "Allow-Events",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Content-Language",
        "Alert-Info",
        "Call-Info",
        "Error-Info",
        "In-Reply-To",
        "Warning",
        "Path",
        "Service-Route",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
    ];
    LISTS.iter().any(|l| l.eq_ignore_ascii_case(canonical))
}

fn header_matches(h: &Header, want: &str) -> bool {
    let (name, _) = name_value(h);
    name.eq_ignore_ascii_case(want)
        || expand_compact(name).is_some_and(|f| f.eq_ignore_ascii_case(want))
}

/// First value of header `name` (long or compact, any case), trimmed. For list headers
/// (Via, Contact, Route, ...) this is the first list element, so `header(h, "Via")` is the
/// top Via even when several are combined on one line.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers_all(headers, name).next()
}

/// Whether header `name` is present at all, even with an empty value (which [`header`]
/// skips): an empty `Accept` means something different from none.
pub fn has_header(headers: &Headers, name: &str) -> bool {
    let want = canonical_name(name);
    headers.iter().any(|h| header_matches(h, want))
}

/// Every value of header `name` in message order. List headers are split at commas outside
/// quotes and `<>`; empty elements are skipped.
pub fn headers_all<'a>(headers: &'a Headers, name: &str) -> impl Iterator<Item = &'a str> {
    let want = canonical_name(name);
    let list = is_list_header(want);
    headers
        .iter()
        .filter(move |h| header_matches(h, want))
        .flat_map(move |h| ValueSplit::new(name_value(h).1, list))
}

/// The long form of `name` if it is compact, else `name` with the case of the known header
/// it names (so comparisons with the table stay exact).
fn canonical_name(name: &str) -> &str {
    expand_compact(name).unwrap_or(name)
}

/// Splits a header value into list elements (or yields it whole for non-list headers).
struct ValueSplit<'a> {
    rest: Option<&'a str>,
    list: bool,
}

impl<'a> ValueSplit<'a> {
    fn new(value: &'a str, list: bool) -> Self {
        Self {
            rest: Some(value),
            list,
        }
    }
}

impl<'a> Iterator for ValueSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let rest = self.rest?;
            let (item, tail) = if self.list {
                match split_outside(rest, b',') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                }
            } else {
                (rest, None)
            };
            self.rest = tail;
            let item = trim_lws(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// Position of the first `sep` outside double quotes (with `\` escapes) and angle brackets.
pub(crate) fn split_outside(s: &str, sep: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = 0u32;
    for (i, b) in s.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => angle += 1,
            b'>' => angle = angle.saturating_sub(1),
            _ if b == sep && angle == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `value;p1=v1;p2="v 2";flag` into the main value and its parameters. Parameter
/// names are lower-cased, values trimmed and unquoted; `;` inside quotes or `<>` (URI
/// parameters of a name-addr) does not split.
pub fn header_params(value: &str) -> (&str, Vec<(String, Option<String>)>) {
    let (main, rest) = match split_outside(value, b';') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    let params = Params::new(rest)
        .map(|(n, v)| (n.to_ascii_lowercase(), v.map(unquote)))
        .collect();
    (trim_lws(main), params)
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

/// Borrowing iterator over `;`-separated parameters (`name`, raw `value`), without the
/// leading main value. Names keep their case; compare with `eq_ignore_ascii_case`.
pub(crate) struct Params<'a> {
    rest: Option<&'a str>,
}

impl<'a> Params<'a> {
    /// `s` is the text after the main value's `;` (may be empty).
    pub(crate) fn new(s: &'a str) -> Self {
        Self { rest: Some(s) }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let (item, tail) = match split_outside(rest, b';') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = tail;
            let item = trim_lws(item);
            if item.is_empty() {
                continue;
            }
            return Some(match item.split_once('=') {
                Some((n, v)) => (trim_lws(n), Some(trim_lws(v))),
                None => (item, None),
            });
        }
    }
}

/// The parameters of a header value that follow its main part (`<uri>;tag=x` → `tag=x`).
pub(crate) fn params_of(value: &str) -> Params<'_> {
    match split_outside(value, b';') {
        Some(i) => Params::new(&value[i + 1..]),
        None => Params::new(""),
    }
}

/// The value of parameter `name` of a header value: `None` if absent, `Some(None)` for a
/// flag such as `;rport` or `;lr`.
pub(crate) fn param<'a>(value: &'a str, name: &str) -> Option<Option<&'a str>> {
    params_of(value)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The `tag` parameter of a From or To value.
pub fn tag_of(value: &str) -> Option<&str> {
    param(value, "tag").flatten().filter(|t| !t.is_empty())
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x;lr>;tag=1` → `sip:bob@x;lr`) or an
/// addr-spec (`sip:bob@x;tag=1` → `sip:bob@x`, since there parameters belong to the header).
pub fn name_addr_uri(value: &str) -> Option<&str> {
    let value = trim_lws(value);
    // Find '<' outside a quoted display name.
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => {
                let inner = &value[i + 1..];
                let end = inner.find('>')?;
                let uri = trim_lws(&inner[..end]);
                return (!uri.is_empty()).then_some(uri);
            }
            _ => {}
        }
    }
    if in_quotes {
        return None;
    }
    let end = value.find([';', ' ', '\t']).unwrap_or(value.len());
    let uri = &value[..end];
    (!uri.is_empty() && uri.contains(':')).then_some(uri)
}

/// Standard reason phrases (RFC 3261 §21 plus the event-framework codes), used because
/// `rsip` prints its enum variant names (`489 BadEvent`) instead.
pub fn default_reason(code: u16) -> Option<&'static str> {
    Some(match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        429 => "Provide Referrer Identity",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => return None,
    })
}

/// Builds the `rsip` status for `code`. A custom reason needs `StatusCode::Other`, so
/// compare statuses with [`StatusCode::code`], not with the named variants.
fn status_code(code: u16, reason: Option<&str>) -> StatusCode {
    let clean = |r: &str| -> String {
        r.chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect()
    };
    match reason {
        Some(r) if Some(r) != default_reason(code) => StatusCode::Other(code, clean(r)),
        _ => match StatusCode::from(code) {
            StatusCode::Other(c, _) => {
                StatusCode::Other(c, default_reason(c).unwrap_or("Unknown").to_owned())
            }
            known => known,
        },
    }
}

/// A response to `req` per RFC 3261 §8.2.6: every Via in order, From, To (with `to_tag`, or
/// a fresh tag when `None` and the status is not 100, added unless To already has a tag),
/// Call-ID, CSeq, and `Content-Length: 0`. The reason
/// phrase defaults to the standard one for `status`.
///
/// Add further headers with `resp.headers.push(rsip::Header::...)` (for example
/// `Header::Expires(rsip::headers::Expires::new("3600"))`, or
/// `Header::Other("Allow-Events".into(), "ua-profile".into())`) and set `resp.body`;
/// [`to_bytes`] rewrites Content-Length to match the body.
pub fn response_for(
    req: &Request,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    // §8.2.6.2: every response but 100 carries a To tag; one the caller does not choose
    // (an error answer, which creates no dialog) is fresh.
    let fresh;
    let to_tag = match to_tag {
        None if status != 100 => {
            fresh = new_tag();
            Some(fresh.as_str())
        }
        t => t,
    };
    let mut vias = Vec::with_capacity(2);
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for h in req.headers.iter() {
        match h {
            Header::Via(_) => vias.push(h.clone()),
            Header::From(_) if from.is_none() => from = Some(h.clone()),
            Header::To(v) if to.is_none() => {
                to = Some(match to_tag {
                    Some(tag) if tag_of(v.value()).is_none() => Header::To(rsip::headers::To::new(
                        format!("{};tag={tag}", v.value().trim_end_matches([' ', '\t'])),
                    )),
                    _ => h.clone(),
                });
            }
            Header::CallId(_) if call_id.is_none() => call_id = Some(h.clone()),
            Header::CSeq(_) if cseq.is_none() => cseq = Some(h.clone()),
            _ => {}
        }
    }
    vias.extend([from, to, call_id, cseq].into_iter().flatten());
    vias.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Response {
        status_code: status_code(status, reason),
        version: rsip::Version::V2,
        headers: vias.into(),
        body: Vec::new(),
    }
}

/// Serialises a message, always with one Content-Length that matches the body (any
/// Content-Length header already present is replaced).
pub fn to_bytes(msg: &SipMessage) -> Bytes {
    match msg {
        SipMessage::Request(r) => request_to_bytes(r),
        SipMessage::Response(r) => response_to_bytes(r),
    }
}

pub fn request_to_bytes(req: &Request) -> Bytes {
    use std::fmt::Write;
    let mut buf = BytesMut::with_capacity(estimate(&req.headers, req.body.len()));
    buf.put_slice(method_str(req.method).as_bytes());
    buf.put_u8(b' ');
    // Writing into BytesMut cannot fail.
    let _ = write!(buf, "{}", req.uri);
    buf.put_slice(b" SIP/2.0\r\n");
    write_rest(&mut buf, &req.headers, &req.body);
    buf.freeze()
}

pub fn response_to_bytes(resp: &Response) -> Bytes {
    use std::fmt::Write;
    let mut buf = BytesMut::with_capacity(estimate(&resp.headers, resp.body.len()));
    let code = resp.status_code.code();
    let _ = write!(buf, "SIP/2.0 {code} ");
    match &resp.status_code {
        StatusCode::Other(_, reason) => buf.put_slice(reason.as_bytes()),
        // rsip would print the variant name; use the real phrase.
        other => match default_reason(code) {
            Some(r) => buf.put_slice(r.as_bytes()),
            None => {
                let s = other.to_string();
                buf.put_slice(s.split_once(' ').map_or("", |(_, r)| r).as_bytes());
            }
        },
    }
    buf.put_slice(b"\r\n");
    write_rest(&mut buf, &resp.headers, &resp.body);
    buf.freeze()
}

fn estimate(headers: &Headers, body: usize) -> usize {
    let h: usize = headers
        .iter()
        .map(|h| {
            let (n, v) = name_value(h);
            n.len() + v.len() + 4
        })
        .sum();
    64 + h + 24 + body
}

fn write_rest(buf: &mut BytesMut, headers: &Headers, body: &[u8]) {
    use std::fmt::Write;
    for h in headers.iter() {
        if matches!(h, Header::ContentLength(_)) {
            continue;
        }
        let (name, value) = name_value(h);
        if matches!(h, Header::Other(..))
            && canonical_name(name).eq_ignore_ascii_case("Content-Length")
        {
            continue;
        }
        buf.put_slice(name.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(trim_lws(value).as_bytes());
        buf.put_slice(b"\r\n");
    }
    let _ = write!(buf, "Content-Length: {}\r\n\r\n", body.len());
    buf.put_slice(body);
}

/// A fresh RFC 3261 branch: the magic cookie plus 64 random bits, so branches never repeat
/// in practice (§8.1.1.7).
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// A fresh From/To tag with 64 random bits (§19.3 asks for at least 32).
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Length of the first complete message at the start of a stream buffer, for TCP/TLS
/// framing (RFC 3261 §18.3): `Ok(None)` means "read more". Leading CRLFs (keep-alives) are
/// counted in the length, so the caller can feed the frame to [`parse`] as is.
///
/// This scans the whole buffer on every call; a connection reading a message in pieces keeps
/// a [`StreamFramer`] instead, which only looks at the bytes it has not seen.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    StreamFramer::default().next_frame(buf)
}

/// Incremental stream framing: remembers how far it has searched for the end of the headers
/// and, once found, the frame's length, so a message that arrives a few bytes per read costs
/// time linear in its size rather than quadratic (each read used to rescan the buffer).
///
/// Feed it the connection's buffer after every read; when it returns `Some(len)` the caller
/// takes the first `len` bytes off the buffer, and the framer starts on the next message.
#[derive(Debug, Default, Clone)]
pub struct StreamFramer {
    /// Bytes at the start of the buffer already searched for the blank line.
    searched: usize,
    /// The current frame's total length, once its headers are complete.
    frame_len: Option<usize>,
    /// Bytes examined in all; only tests read it (to show the work is linear).
    examined: usize,
}

impl StreamFramer {
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<usize>, ParseError> {
        let total = match self.frame_len {
            Some(total) => total,
            None => {
                let start = buf.len() - skip_leading_crlf(buf).len();
                // A blank line may straddle the previous read's end: back up three bytes.
                let from = self.searched.saturating_sub(3).max(start);
                self.examined += buf.len() - from;
                let Some(at) = find(&buf[from..], b"\r\n\r\n") else {
                    self.searched = buf.len();
                    let pending = buf.len() - start;
                    if pending > MAX_MESSAGE_SIZE {
                        return Err(ParseError::TooLarge(pending));
                    }
                    return Ok(None);
                };
                let end = from + at;
                let body = head_content_length(&buf[start..end + 2])?;
                // A Content-Length near usize::MAX must not wrap the sum into a small,
                // "complete" frame.
                let len = (end + 4 - start).saturating_add(body);
                if len > MAX_MESSAGE_SIZE {
                    return Err(ParseError::TooLarge(len));
                }
                self.frame_len = Some(start + len);
                start + len
            }
        };
        if buf.len() < total {
            return Ok(None);
        }
        *self = Self {
            examined: self.examined,
            ..Self::default()
        };
        Ok(Some(total))
    }

    /// Bytes examined since the framer was made (for tests of its cost).
    pub fn examined(&self) -> usize {
        self.examined
    }
}

/// The Content-Length of a message head (start line and headers, without the blank line).
fn head_content_length(head: &[u8]) -> Result<usize, ParseError> {
    let head_str = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    for line in head_str.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if canonical_name(trim_lws(name)).eq_ignore_ascii_case("Content-Length") {
            return trim_lws(value)
                .parse::<usize>()
                .map_err(|_| ParseError::Malformed("bad Content-Length".into()));
        }
    }
    // On a stream Content-Length is mandatory (§20.14); without it nothing could be framed.
    Err(ParseError::MissingHeader("Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::message::HeadersExt;

    #[test]
    fn a_message_read_a_byte_at_a_time_is_framed_in_linear_work() {
        let mut msg = String::from("SUBSCRIBE sip:a@b SIP/2.0\r\n");
        for i in 0..400 {
            msg.push_str(&format!("X-Filler-{i}: {}\r\n", "v".repeat(100)));
        }
        msg.push_str("Content-Length: 5\r\n\r\nhello");
        let bytes = msg.as_bytes();
        let mut framer = StreamFramer::default();
        for n in 1..bytes.len() {
            assert_eq!(framer.next_frame(&bytes[..n]), Ok(None), "at {n}");
        }
        assert_eq!(framer.next_frame(bytes), Ok(Some(bytes.len())));
        // Rescanning on every read examined n²/2 bytes (about 900 million here).
        assert!(
            framer.examined() < 5 * bytes.len(),
            "examined {} bytes for a {}-byte message",
            framer.examined(),
            bytes.len()
        );
        // And it starts afresh on the next message, keep-alive CRLFs included.
        let two = format!("\r\n\r\n{msg}{msg}");
        let mut framer = StreamFramer::default();
        assert_eq!(framer.next_frame(two.as_bytes()), Ok(Some(4 + msg.len())));
        assert_eq!(
            framer.next_frame(&two.as_bytes()[4 + msg.len()..]),
            Ok(Some(msg.len()))
        );
    }

    #[test]
    fn a_content_length_near_the_integer_limit_is_too_large_not_a_wrapped_frame() {
        for cl in [usize::MAX.to_string(), (usize::MAX - 2).to_string()] {
            let msg =
                format!("OPTIONS sip:x@example.com SIP/2.0\r\nContent-Length: {cl}\r\n\r\nabc");
            assert!(
                matches!(
                    stream_frame_len(msg.as_bytes()),
                    Err(ParseError::TooLarge(_))
                ),
                "Content-Length {cl}"
            );
        }
    }

    const SUBSCRIBE: &str = "SUBSCRIBE sip:00112233aabb@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776;rport\r\n\
        Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP edge.example.com\r\n\
        Max-Forwards: 70\r\n\
        From: \"Desk, Phone\" <sip:00112233aabb@example.com>;tag=ft1\r\n\
        To: <sip:00112233aabb@example.com>\r\n\
        Call-ID: a84b4c76e66710@192.0.2.10\r\n\
        CSeq: 314159 SUBSCRIBE\r\n\
        Contact: <sip:phone@192.0.2.10:5062>\r\n\
        Event: ua-profile;profile-type=device;vendor=\"Acme; Inc\";model=X1\r\n\
        Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
        Expires: 3600\r\n\
        Content-Length: 0\r\n\r\n";

    fn req(raw: &str) -> Request {
        match parse(raw.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Deterministic xorshift so property loops are reproducible without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn parses_a_subscribe_and_reads_headers() {
        let r = req(SUBSCRIBE);
        assert_eq!(r.method, Method::Subscribe);
        let vias: Vec<_> = headers_all(&r.headers, "via").collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776;rport",
                "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1",
                "SIP/2.0/UDP edge.example.com"
            ]
        );
        assert_eq!(
            header(&r.headers, "CALL-ID"),
            Some("a84b4c76e66710@192.0.2.10")
        );
        assert_eq!(header(&r.headers, "i"), Some("a84b4c76e66710@192.0.2.10"));
        // Not list headers: commas stay.
        assert_eq!(
            header(&r.headers, "Date"),
            Some("Sat, 13 Nov 2010 23:29:00 GMT")
        );
        assert_eq!(
            header(&r.headers, "From"),
            Some("\"Desk, Phone\" <sip:00112233aabb@example.com>;tag=ft1")
        );
        let (main, params) = header_params(header(&r.headers, "o").expect("event"));
        assert_eq!(main, "ua-profile");
        assert_eq!(
            params,
            [
                ("profile-type".to_owned(), Some("device".to_owned())),
                ("vendor".to_owned(), Some("Acme; Inc".to_owned())),
                ("model".to_owned(), Some("X1".to_owned())),
            ]
        );
        assert_eq!(header(&r.headers, "X-Absent"), None);
    }

    #[test]
    fn compact_forms_become_long_forms() {
        let raw = "NOTIFY sip:srv@example.com SIP/2.0\r\n\
            v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc\r\n\
            f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>;tag=2\r\n\
            i: cid\r\nCSEQ: 2 NOTIFY\r\nm: <sip:a@192.0.2.1>\r\no: ua-profile\r\n\
            u: ua-profile\r\nk: path\r\nx: 1800\r\nc: text/plain\r\nl: 5\r\n\r\nhelloEXTRA";
        let r = req(raw);
        assert!(r.via_header().is_ok() && r.from_header().is_ok() && r.to_header().is_ok());
        assert!(r.call_id_header().is_ok() && r.contact_header().is_ok());
        assert!(r.headers.iter().any(|h| matches!(h, Header::Event(_))));
        assert_eq!(header(&r.headers, "Allow-Events"), Some("ua-profile"));
        assert_eq!(header(&r.headers, "Session-Expires"), Some("1800"));
        assert_eq!(header(&r.headers, "Supported"), Some("path"));
        assert_eq!(header(&r.headers, "Content-Type"), Some("text/plain"));
        assert_eq!(
            r.body, b"hello",
            "body cut to Content-Length (RFC 3261 §18.3)"
        );
        let out = request_to_bytes(&r);
        let text = std::str::from_utf8(&out).expect("utf8");
        assert!(text.contains("\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc\r\n"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nhello"));
    }

    #[test]
    fn folded_lines_and_blank_before_colon() {
        let raw = "OPTIONS sip:x@example.com SIP/2.0\r\n\
            Via : SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf\r\n\
            From: <sip:a@example.com>\r\n ;tag=1\r\nTo: <sip:x@example.com>\r\n\
            Call-ID: c\r\nCSeq: 1\r\n\tOPTIONS\r\n\r\n";
        let r = req(raw);
        assert_eq!(
            header(&r.headers, "From"),
            Some("<sip:a@example.com> ;tag=1")
        );
        assert_eq!(header(&r.headers, "From").and_then(tag_of), Some("1"));
        assert_eq!(header(&r.headers, "CSeq"), Some("1 OPTIONS"));
    }

    #[test]
    fn missing_mandatory_headers_are_named() {
        for (name, line) in [
            (
                "Via",
                "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776;rport\r\n",
            ),
            (
                "From",
                "From: \"Desk, Phone\" <sip:00112233aabb@example.com>;tag=ft1\r\n",
            ),
            ("To", "To: <sip:00112233aabb@example.com>\r\n"),
            ("Call-ID", "Call-ID: a84b4c76e66710@192.0.2.10\r\n"),
            ("CSeq", "CSeq: 314159 SUBSCRIBE\r\n"),
        ] {
            let mut raw = SUBSCRIBE.replace(line, "");
            if name == "Via" {
                raw = raw.replace(
                    "Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP edge.example.com\r\n",
                    "",
                );
            }
            let err = parse(raw.as_bytes()).expect_err(name);
            if name == "Via" {
                // Nowhere to send an answer.
                assert_eq!(err, ParseError::MissingHeader(name));
                assert!(!err.can_respond());
                continue;
            }
            // The answer names the missing header and carries what the request did have.
            let resp = err.error_response().expect(name);
            assert_eq!(u16::from(resp.status_code.clone()), 400, "{name}");
            let text = String::from_utf8(to_bytes(&resp.into()).to_vec()).expect("utf-8");
            assert!(
                text.starts_with(&format!("SIP/2.0 400 Missing {name} Header\r\n")),
                "{text}"
            );
            assert!(text.contains("branch=z9hG4bK776"), "{text}");
            // A response that lacks one is never answered.
            // With an unreadable CSeq beside the gap there is no answer that would parse
            // (found by the mutated-requests property test).
            if name != "CSeq" {
                let bad = raw.replace("CSeq: 314159 SUBSCRIBE", "CSeq: \u{e}314159 SUBSCRIBE");
                let err = parse(bad.as_bytes()).expect_err(name);
                assert!(err.error_response().is_none(), "{name}: {err:?}");
            }
            let resp = raw.replace(
                "SUBSCRIBE sip:00112233aabb@example.com SIP/2.0",
                "SIP/2.0 200 OK",
            );
            assert_eq!(
                parse(resp.as_bytes()).expect_err(name),
                ParseError::MissingHeader(name)
            );
        }
    }

    #[test]
    fn answerable_errors_carry_a_response() {
        let raw = SUBSCRIBE.replace("CSeq: 314159 SUBSCRIBE", "CSeq: 314159 NOTIFY");
        let err = parse(raw.as_bytes()).expect_err("mismatch");
        assert!(err.can_respond());
        let resp = err.error_response().expect("response");
        assert_eq!(resp.status_code.code(), 400);
        let bytes = response_to_bytes(&resp);
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert!(
            text.starts_with("SIP/2.0 400 CSeq Method Mismatch\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 314159 NOTIFY\r\n"));

        // Unreadable CSeq or top Via: nothing could match or route a response.
        for (from, to) in [
            ("CSeq: 314159 SUBSCRIBE", "CSeq: x SUBSCRIBE"),
            ("CSeq: 314159 SUBSCRIBE", "CSeq: 2147483648 SUBSCRIBE"),
            (
                "Via: SIP/2.0/UDP 192.0.2.10:5062",
                "Via: SIP/2.;/UDP 192.0.2.10:5062",
            ),
        ] {
            let err = parse(SUBSCRIBE.replace(from, to).as_bytes()).expect_err(to);
            assert!(matches!(err, ParseError::Malformed(_)), "{err:?}");
            assert!(!err.can_respond());
        }

        let raw = SUBSCRIBE.replacen("SUBSCRIBE sip:", "FROBNICATE sip:", 1);
        let err = parse(raw.as_bytes()).expect_err("unknown method");
        assert!(
            matches!(err, ParseError::Invalid { status: 501, .. }),
            "{err:?}"
        );
        let text = String::from_utf8(response_to_bytes(&err.error_response().expect("r")).to_vec())
            .expect("utf8");
        assert!(text.starts_with("SIP/2.0 501 Not Implemented\r\n"));
        assert!(text.contains("CSeq: 314159 SUBSCRIBE\r\n"));

        let raw = SUBSCRIBE.replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
        let err = parse(raw.as_bytes()).expect_err("version");
        assert!(
            matches!(err, ParseError::Invalid { status: 505, .. }),
            "{err:?}"
        );

        let raw = SUBSCRIBE.replace("Content-Length: 0", "Content-Length: 20");
        assert!(matches!(
            parse(raw.as_bytes()),
            Err(ParseError::Invalid {
                reason: "Truncated Body",
                ..
            })
        ));
        let raw = SUBSCRIBE.replace("Content-Length: 0", "Content-Length: zero");
        assert!(matches!(
            parse(raw.as_bytes()),
            Err(ParseError::Invalid {
                reason: "Bad Content-Length",
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_headers() {
        let mut raw = SUBSCRIBE
            .replace("Expires: 3600", "Subject: \u{1}XX")
            .into_bytes();
        let pos = raw.windows(3).position(|w| w == b"\x01XX").expect("marker");
        raw[pos + 1] = 0xff;
        let err = parse(&raw).expect_err("not utf8");
        assert!(
            matches!(
                err,
                ParseError::Invalid {
                    status: 400,
                    reason: "Invalid UTF-8",
                    ..
                }
            ),
            "{err:?}"
        );
        // Without readable core headers there is nobody to answer.
        let err = parse(b"\xff\xfe garbage\r\n\r\n").expect_err("garbage");
        assert_eq!(err, ParseError::NotUtf8);
        assert!(!err.can_respond());
    }

    #[test]
    fn responses_are_never_answered() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 10\r\n\r\nshort";
        let err = parse(raw.as_bytes()).expect_err("short body");
        assert!(matches!(err, ParseError::Malformed(_)));
        assert!(!err.can_respond());
        let ok = raw.replace("Content-Length: 10", "Content-Length: 5");
        let SipMessage::Response(r) = parse(ok.as_bytes()).expect("ok") else {
            panic!("not a response");
        };
        assert_eq!(r.status_code.code(), 200);
        assert_eq!(r.body, b"short");
    }

    #[test]
    fn size_limit() {
        let mut raw = SUBSCRIBE.as_bytes().to_vec();
        raw.resize(MAX_MESSAGE_SIZE + 1, b'x');
        assert_eq!(parse(&raw), Err(ParseError::TooLarge(MAX_MESSAGE_SIZE + 1)));
        assert_eq!(parse_lenient_for_error(&raw), None);
    }

    #[test]
    fn status_codes_outside_100_to_699_are_malformed() {
        // Found by the `sip_parse` fuzz target: `SIP/2.0 000` parsed, then printed as `0`.
        let rest = "\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n";
        for status in ["000", "099", "700", "999"] {
            let raw = format!("SIP/2.0 {status} X{rest}");
            assert!(
                matches!(parse(raw.as_bytes()), Err(ParseError::Malformed(_))),
                "{status}"
            );
        }
        for status in ["100", "200", "699"] {
            let raw = format!("SIP/2.0 {status} X{rest}");
            assert!(parse(raw.as_bytes()).is_ok(), "{status}");
        }
    }

    #[test]
    fn values_are_trimmed_of_sip_whitespace_only() {
        // From an earlier fuzzing round (the expires target found the same in Expires):
        // `str::trim` also strips VT, FF, NEL (U+0085) and Unicode spaces, none of which is
        // SIP whitespace.
        let base = "SUBSCRIBE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 SUBSCRIBE\r\n";
        // The response echoes the Call-ID as sent, or it matches no client transaction.
        let raw = format!("{base}Call-ID: c\u{85}\r\nContent-Length: 0\r\n\r\n");
        let r = req(&raw);
        assert_eq!(header(&r.headers, "Call-ID"), Some("c\u{85}"));
        let resp = response_to_bytes(&response_for(&r, 200, None, Some("t")));
        let resp = String::from_utf8(resp.to_vec()).expect("utf-8");
        assert!(resp.contains("Call-ID: c\u{85}\r\n"), "{resp}");
        // Content-Length is 1*DIGIT between SIP whitespace, on datagrams and streams alike.
        for junk in ["\u{85}", "\u{b}", "\u{c}", "\u{a0}"] {
            let raw = format!("{base}Call-ID: c\r\nContent-Length: 0{junk}\r\n\r\n");
            match parse(raw.as_bytes()) {
                Err(ParseError::Invalid {
                    status: 400,
                    reason,
                    ..
                }) => {
                    assert_eq!(reason, "Bad Content-Length", "{junk:?}")
                }
                other => panic!("{junk:?}: {other:?}"),
            }
            assert!(
                matches!(
                    stream_frame_len(raw.as_bytes()),
                    Err(ParseError::Malformed(_))
                ),
                "{junk:?}"
            );
        }
        let raw = format!("{base}Call-ID: c\r\nContent-Length: \t0 \r\n\r\n");
        assert!(parse(raw.as_bytes()).is_ok());
    }

    #[test]
    fn only_the_first_from_to_and_call_id_count() {
        // From an earlier fuzzing round: an empty first From passed because a later one was
        // not empty, but responses copy the first, so our 200 had an empty From (which the
        // sip_parse target's "our responses parse" property catches).
        let via = "SUBSCRIBE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n";
        let tail = "CSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n";
        let cases = [
            (
                "From",
                "From: \r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n",
            ),
            (
                "To",
                "From: <sip:a@b>;tag=1\r\nTo: \r\nTo: <sip:a@b>\r\nCall-ID: c\r\n",
            ),
            (
                "Call-ID",
                "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\ni: \r\nCall-ID: c\r\n",
            ),
        ];
        for (missing, headers) in cases {
            let raw = format!("{via}{headers}{tail}");
            // Answered, since the Via is readable: a 400 naming the header, which must itself
            // be a response that parses (so no empty From copied into it).
            let err = parse(raw.as_bytes()).expect_err(&raw);
            let resp = response_to_bytes(&err.error_response().expect("answerable"));
            let text = String::from_utf8_lossy(&resp).into_owned();
            assert!(
                text.starts_with(&format!("SIP/2.0 400 Missing {missing} Header\r\n")),
                "{text}"
            );
            assert!(parse(&resp).is_ok(), "{text}");
        }
        let raw = format!(
            "{via}From: <sip:a@b>;tag=1\r\nFrom: \r\nTo: <sip:a@b>\r\nCall-ID: c\r\n{tail}"
        );
        let r = req(&raw);
        let resp = response_to_bytes(&response_for(&r, 200, None, None));
        assert!(parse(&resp).is_ok(), "{resp:?}");
    }

    #[test]
    fn the_start_line_cannot_span_lines() {
        // Found by the sip_parse fuzz target: rsip took everything up to " SIP/2.0" as the
        // Request-URI, blank line included, so the headers after it escaped the bare CR/LF
        // check and a Via with a bare LF was echoed into our 200.
        let rest = "Via: SIP/2.0/UDP h;branch=z9hG4bK\nX\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n";
        for start in [
            "SUBSCRIBE sip:a@b\r\n\r\nX SIP/2.0\r\n",
            "SUBSCRIBE a: 1\r\nl: 8\r\n\r\nb:@x SIP/2.0\r\n",
        ] {
            let raw = format!("{start}{rest}");
            assert!(
                matches!(parse(raw.as_bytes()), Err(ParseError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn leading_crlf_is_ignored() {
        let raw = format!("\r\n\r\n{SUBSCRIBE}");
        assert!(parse(raw.as_bytes()).is_ok());
    }

    #[test]
    fn response_for_copies_the_right_headers() {
        let r = req(SUBSCRIBE);
        let resp = response_for(&r, 200, None, Some("lt9"));
        assert_eq!(resp.status_code, StatusCode::OK);
        let vias: Vec<_> = headers_all(&resp.headers, "Via").collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(
            vias[0],
            "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776;rport"
        );
        assert_eq!(
            header(&resp.headers, "To"),
            Some("<sip:00112233aabb@example.com>;tag=lt9")
        );
        assert_eq!(header(&resp.headers, "Contact"), None);
        assert_eq!(header(&resp.headers, "Content-Length"), Some("0"));
        let text = String::from_utf8(response_to_bytes(&resp).to_vec()).expect("utf8");
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5062"));
        assert!(text.ends_with("CSeq: 314159 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n"));
        assert!(parse(text.as_bytes()).is_ok(), "our responses parse");

        // An existing To tag is kept.
        let mut tagged = r.clone();
        for h in tagged.headers.iter_mut() {
            if let Header::To(t) = h {
                t.replace("<sip:x@y>;tag=old");
            }
        }
        let resp = response_for(&tagged, 481, None, Some("new"));
        assert_eq!(header(&resp.headers, "To"), Some("<sip:x@y>;tag=old"));
        let text = String::from_utf8(response_to_bytes(&resp).to_vec()).expect("utf8");
        assert!(text.starts_with("SIP/2.0 481 Call/Transaction Does Not Exist\r\n"));

        for (code, reason, line) in [
            (489, None, "SIP/2.0 489 Bad Event\r\n"),
            (202, None, "SIP/2.0 202 Accepted\r\n"),
            (499, None, "SIP/2.0 499 Unknown\r\n"),
            (
                404,
                Some("No Such Profile"),
                "SIP/2.0 404 No Such Profile\r\n",
            ),
            (
                400,
                Some("Evil\r\nInjected: yes"),
                "SIP/2.0 400 EvilInjected: yes\r\n",
            ),
        ] {
            let resp = response_for(&r, code, reason, None);
            assert_eq!(resp.status_code.code(), code);
            let bytes = response_to_bytes(&resp);
            assert!(bytes.starts_with(line.as_bytes()), "{code}: {bytes:?}");
        }
    }

    #[test]
    fn every_response_but_100_gets_a_to_tag() {
        let r = req(SUBSCRIBE);
        let tag = |resp: &Response| {
            header(&resp.headers, "To")
                .and_then(tag_of)
                .map(str::to_owned)
        };
        let a = tag(&response_for(&r, 503, None, None)).expect("503 has a To tag");
        let b = tag(&response_for(&r, 400, Some("Bad"), None)).expect("400 has a To tag");
        assert_ne!(a, b, "fresh tags");
        assert!(a.len() >= 8, "at least 32 random bits: {a}");
        assert_eq!(tag(&response_for(&r, 100, None, None)), None);
    }

    #[test]
    fn to_bytes_fixes_content_length() {
        let mut r = req(SUBSCRIBE);
        r.body = b"<xml/>".to_vec();
        r.headers.push(Header::Other("l".into(), "999".into()));
        let bytes = to_bytes(&SipMessage::Request(r));
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.ends_with("Content-Length: 6\r\n\r\n<xml/>"));
        let back = parse(&bytes).expect("round trip");
        assert_eq!(back.body(), b"<xml/>");
        assert_eq!(stream_frame_len(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let mut h = Headers::default();
        h.push(Header::Contact(rsip::headers::Contact::new(
            "\"Smith, J\" <sip:j@a;x=1>, <sip:k@b?subject=a,b>;q=0.5, sip:l@c",
        )));
        h.push(Header::Other("m".into(), "<sip:m@d>".into()));
        h.push(Header::Other(
            "WWW-Authenticate".into(),
            "Digest realm=\"a\", nonce=\"b\"".into(),
        ));
        let contacts: Vec<_> = headers_all(&h, "Contact").collect();
        assert_eq!(
            contacts,
            [
                "\"Smith, J\" <sip:j@a;x=1>",
                "<sip:k@b?subject=a,b>;q=0.5",
                "sip:l@c",
                "<sip:m@d>"
            ]
        );
        assert_eq!(headers_all(&h, "www-authenticate").count(), 1);
        let (main, params) = header_params("\"a;b\\\"c\" <sip:x@y;lr>; Tag = Z ;flag;q=\"0.5\"");
        assert_eq!(main, "\"a;b\\\"c\" <sip:x@y;lr>");
        assert_eq!(
            params,
            [
                ("tag".to_owned(), Some("Z".to_owned())),
                ("flag".to_owned(), None),
                ("q".to_owned(), Some("0.5".to_owned())),
            ]
        );
        assert_eq!(
            header_params("x;p=\"a\\\"b\"").1,
            [("p".to_owned(), Some("a\"b".to_owned()))]
        );
        assert_eq!(header_params("").0, "");
    }

    #[test]
    fn name_addr_forms() {
        assert_eq!(
            name_addr_uri("\"A <b>\" <sip:a@b;lr>;tag=1"),
            Some("sip:a@b;lr")
        );
        assert_eq!(name_addr_uri("sip:a@b;tag=1"), Some("sip:a@b"));
        assert_eq!(name_addr_uri("<sip:a@b"), None);
        assert_eq!(name_addr_uri("\"unterminated <sip:a@b>"), None);
        assert_eq!(name_addr_uri("*"), None);
        assert_eq!(tag_of("<sip:a@b>;TAG=x"), Some("x"));
        assert_eq!(tag_of("<sip:a@b;tag=uri-param>"), None);
    }

    #[test]
    fn branches_and_tags_are_fresh() {
        let b = new_branch();
        assert!(b.starts_with("z9hG4bK") && b.len() == 23);
        let tags: std::collections::HashSet<_> = (0..1000).map(|_| new_tag()).collect();
        assert_eq!(tags.len(), 1000);
        assert!(tags.iter().all(|t| t.len() == 16));
    }

    #[test]
    fn stream_framing() {
        let msg = SUBSCRIBE.replace("Content-Length: 0", "Content-Length: 4") + "body";
        let mut buf = format!("\r\n{msg}").into_bytes();
        assert_eq!(stream_frame_len(&buf[..10]), Ok(None));
        assert_eq!(stream_frame_len(&buf[..buf.len() - 1]), Ok(None));
        let n = buf.len();
        buf.extend_from_slice(b"NEXT");
        assert_eq!(stream_frame_len(&buf), Ok(Some(n)));
        assert!(parse(&buf[..n]).is_ok());
        let no_len = SUBSCRIBE.replace("Content-Length: 0\r\n", "");
        assert_eq!(
            stream_frame_len(no_len.as_bytes()),
            Err(ParseError::MissingHeader("Content-Length"))
        );
        let huge = SUBSCRIBE.replace("Content-Length: 0", "Content-Length: 99999999999");
        assert!(matches!(
            stream_frame_len(huge.as_bytes()),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(
            stream_frame_len(&vec![b'a'; MAX_MESSAGE_SIZE + 1]),
            Err(ParseError::TooLarge(_))
        ));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let len = rng.below(300);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse(&bytes);
            let _ = parse_lenient_for_error(&bytes);
            let _ = stream_frame_len(&bytes);
        }
    }

    /// Mutation loop over a valid SUBSCRIBE. `SIP_FUZZ_SEED` / `SIP_FUZZ_ROUNDS` widen it
    /// on demand (e.g. 300000 rounds with `--release`).
    #[test]
    fn mutated_messages_never_panic() {
        const ALPHABET: &[u8] = b" \t\r\n:;,<>\"\\=@/[]?*0123456789.zZ\xff\x00";
        let base = SUBSCRIBE.as_bytes();
        let seed = std::env::var("SIP_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut rng = Rng(seed.unwrap_or(42));
        let rounds: usize = std::env::var("SIP_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        for _ in 0..rounds {
            let mut m = base.to_vec();
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(m.len());
                match rng.below(4) {
                    0 => m[i] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => m.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                    2 => {
                        m.remove(i);
                    }
                    _ => m.truncate(i),
                }
                if m.is_empty() {
                    break;
                }
            }
            match parse(&m) {
                Ok(SipMessage::Request(r)) => {
                    // Everything we accept, we can answer and re-serialise.
                    let resp = response_to_bytes(&response_for(&r, 200, None, Some("t")));
                    assert!(parse(&resp).is_ok(), "responses must parse: {resp:?}");
                    let again = request_to_bytes(&r);
                    assert!(
                        parse(&again).is_ok(),
                        "re-serialised request must parse: {again:?}"
                    );
                    let _ = crate::via::top_via_branch(&r);
                    let _ = crate::dialog::Dialog::from_request(&r, "t".into());
                }
                Ok(SipMessage::Response(r)) => {
                    let _ = response_to_bytes(&r);
                }
                Err(e) => {
                    if let Some(resp) = e.error_response() {
                        let bytes = response_to_bytes(&resp);
                        assert!(
                            parse(&bytes).is_ok(),
                            "error responses must parse: {bytes:?}"
                        );
                    }
                }
            }
        }
    }
}

//! A deliberately small SIP reader and writer for the simulator's hot path.
//!
//! The reader pulls out only what a phone needs (status or method, Call-ID, CSeq, To tag,
//! Expires, Retry-After, Subscription-State, SIP-ETag, Event, Content-Type, body) and keeps
//! the raw Via/From/To/Call-ID/CSeq lines so a NOTIFY can be answered by copying them. It
//! borrows from the datagram and allocates nothing; anything it cannot read is `None`, and
//! the caller counts it.

use std::fmt::Write as _;

/// Most Via lines we copy into a response; a NOTIFY straight from the notifier has one,
/// a proxy adds one each. More than this and the message is treated as malformed.
const MAX_COPIED: usize = 8;

/// The parts of a SIP message a simulated phone acts on.
#[derive(Debug, Default)]
pub struct SipMsg<'a> {
    /// Status code of a response; `None` for a request.
    pub status: Option<u16>,
    /// Method of a request (`NOTIFY`, ...); `None` for a response.
    pub method: Option<&'a str>,
    pub call_id: &'a str,
    pub cseq: u32,
    pub cseq_method: &'a str,
    pub from_tag: Option<&'a str>,
    pub to_tag: Option<&'a str>,
    pub expires: Option<u32>,
    pub retry_after: Option<u32>,
    pub sub_state: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub event: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// Via, From, To, Call-ID and CSeq lines, verbatim, for building a response.
    copied: [&'a str; MAX_COPIED],
    n_copied: usize,
}

impl<'a> SipMsg<'a> {
    /// The lines a response must echo (RFC 3261 §8.2.6.2), in arrival order.
    pub fn copied_lines(&self) -> &[&'a str] {
        &self.copied[..self.n_copied]
    }
}

/// Long name of a compact header form (RFC 3261 §7.3.3), lower case.
fn expand(name: &str) -> Option<&'static str> {
    Some(match name {
        "i" | "I" => "call-id",
        "f" | "F" => "from",
        "t" | "T" => "to",
        "v" | "V" => "via",
        "l" | "L" => "content-length",
        "c" | "C" => "content-type",
        "o" | "O" => "event",
        _ => return None,
    })
}

/// The `tag=` parameter of a From/To value.
pub fn tag_param(value: &str) -> Option<&str> {
    // The tag lives after the closing '>' of a name-addr, or anywhere for an addr-spec.
    let after = value.rfind('>').map_or(value, |i| &value[i..]);
    after.split(';').find_map(|p| {
        let (n, v) = p.trim().split_once('=')?;
        n.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
    })
}

/// Value of a `name=value` parameter in a header value (unquoted), case-insensitive name.
pub fn param(value: &str, name: &str) -> Option<String> {
    crate::body::params(value)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Parses one SIP message. `None` when the start line, Call-ID or CSeq is unusable.
pub fn parse(buf: &[u8]) -> Option<SipMsg<'_>> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let rest = &buf[head_end + 4..];
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let mut m = SipMsg::default();
    if let Some(r) = first.strip_prefix("SIP/2.0 ") {
        m.status = Some(r.get(..3)?.parse().ok()?);
    } else {
        let (method, tail) = first.split_once(' ')?;
        if !tail.ends_with("SIP/2.0") {
            return None;
        }
        m.method = Some(method);
    }
    let mut content_length = None;
    let mut have_call_id = false;
    let mut have_cseq = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end();
        let value = value.trim();
        let lname = expand(name);
        let is = |long: &str| lname.map_or_else(|| name.eq_ignore_ascii_case(long), |l| l == long);
        if is("via") || is("from") || is("to") || is("call-id") || is("cseq") {
            if m.n_copied == MAX_COPIED {
                return None;
            }
            m.copied[m.n_copied] = line;
            m.n_copied += 1;
        }
        if is("call-id") {
            m.call_id = value;
            have_call_id = true;
        } else if is("cseq") {
            let (n, method) = value.split_once(char::is_whitespace)?;
            m.cseq = n.parse().ok()?;
            m.cseq_method = method.trim();
            have_cseq = true;
        } else if is("to") {
            m.to_tag = tag_param(value);
        } else if is("from") {
            m.from_tag = tag_param(value);
        } else if is("expires") {
            m.expires = value.parse().ok();
        } else if is("retry-after") {
            m.retry_after = value
                .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
                .next()
                .and_then(|v| v.parse().ok());
        } else if is("subscription-state") {
            m.sub_state = Some(value);
        } else if is("sip-etag") {
            m.etag = Some(value);
        } else if is("event") {
            m.event = Some(value);
        } else if is("content-type") {
            m.content_type = Some(value);
        } else if is("content-length") {
            content_length = value.parse::<usize>().ok();
        }
    }
    if !(have_call_id && have_cseq) {
        return None;
    }
    m.body = match content_length {
        Some(n) if n <= rest.len() => &rest[..n],
        Some(_) => return None,
        None => rest,
    };
    Some(m)
}

/// A stream carries bytes that cannot be framed as SIP; the connection is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError;

/// For stream transports: the length of the first complete message in `buf` (head plus
/// Content-Length body), `Ok(None)` if more bytes are needed, `Err` if the head is unusable.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    // Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are skipped by the caller.
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err(FrameError)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| FrameError)?;
    let mut len = None;
    for line in head.split("\r\n").skip(1) {
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim();
            if n.eq_ignore_ascii_case("content-length") || n == "l" || n == "L" {
                len = Some(v.trim().parse::<usize>().map_err(|_| FrameError)?);
            }
        }
    }
    // RFC 3261 §18.3: Content-Length is mandatory on streams.
    let len = len.ok_or(FrameError)?;
    let total = end + 4 + len;
    Ok((buf.len() >= total).then_some(total))
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Writes a response to `req` that copies its Via/From/To/Call-ID/CSeq lines.
pub fn write_response(out: &mut Vec<u8>, req: &SipMsg<'_>, status: u16, reason: &str) {
    out.clear();
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
    for line in req.copied_lines() {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    out.extend_from_slice(s.as_bytes());
}

/// Everything that varies between the SUBSCRIBEs one phone sends.
pub struct Subscribe<'a> {
    pub transport: &'a str,
    pub local: &'a str,
    pub request_uri: &'a str,
    pub aor: &'a str,
    pub from_tag: &'a str,
    pub to_tag: Option<&'a str>,
    pub call_id: &'a str,
    pub cseq: u32,
    pub branch: &'a str,
    pub contact_user: &'a str,
    pub instance: &'a str,
    pub event: &'a str,
    pub expires: u32,
    pub suppress_if_match: Option<&'a str>,
}

/// Writes a SUBSCRIBE for `ua-profile` with content indirection allowed.
pub fn write_subscribe(out: &mut Vec<u8>, s: &Subscribe<'_>) {
    out.clear();
    let mut m = String::with_capacity(640);
    let tp = s.transport;
    let _ = write!(
        m,
        "SUBSCRIBE {ruri} SIP/2.0\r\nVia: SIP/2.0/{tp} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <{aor}>;tag={ft}\r\nTo: <{aor}>",
        ruri = s.request_uri,
        local = s.local,
        branch = s.branch,
        aor = s.aor,
        ft = s.from_tag,
    );
    if let Some(t) = s.to_tag {
        let _ = write!(m, ";tag={t}");
    }
    let _ = write!(
        m,
        "\r\nCall-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
         Contact: <sip:{cu}@{local};transport={tpl}>;+sip.instance=\"<{inst}>\"\r\n\
         Event: {event}\r\nExpires: {exp}\r\n\
         Accept: message/external-body, multipart/mixed, application/xml\r\n\
         User-Agent: uaprof-storm\r\n",
        cid = s.call_id,
        cseq = s.cseq,
        cu = s.contact_user,
        local = s.local,
        tpl = tp.to_ascii_lowercase(),
        inst = s.instance,
        event = s.event,
        exp = s.expires,
    );
    if let Some(e) = s.suppress_if_match {
        let _ = write!(m, "Suppress-If-Match: {e}\r\n");
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    out.extend_from_slice(m.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:phone@127.0.0.2:5000 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn1\r\n\
        From: <sip:MAC%3a00df1e004cd0@example.com>;tag=srv1\r\n\
        t: <sip:MAC%3a00df1e004cd0@example.com>;tag=ph1\r\n\
        i: 7.0.ab\r\nCSeq: 2 NOTIFY\r\n\
        Event: ua-profile;profile-type=device;effective-by=30\r\n\
        Subscription-State: active;expires=3599\r\nSIP-ETag: e42\r\n\
        Content-Type: message/external-body;access-type=\"URL\";URL=\"http://h/p\"\r\n\
        Content-Length: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn reads_a_notify() {
        let m = parse(NOTIFY.as_bytes()).expect("parses");
        assert_eq!(m.method, Some("NOTIFY"));
        assert_eq!(m.call_id, "7.0.ab");
        assert_eq!((m.cseq, m.cseq_method), (2, "NOTIFY"));
        assert_eq!(m.from_tag, Some("srv1"));
        assert_eq!(m.to_tag, Some("ph1"));
        assert_eq!(m.etag, Some("e42"));
        assert_eq!(
            m.sub_state.and_then(|s| param(s, "expires")).as_deref(),
            Some("3599")
        );
        assert_eq!(
            m.event.and_then(|e| param(e, "effective-by")).as_deref(),
            Some("30")
        );
        assert_eq!(m.body, b"body");
        let mut out = Vec::new();
        write_response(&mut out, &m, 200, "OK");
        let r = parse(&out).expect("own response parses");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.call_id, "7.0.ab");
        assert_eq!(r.to_tag, Some("ph1"));
        assert_eq!(r.copied_lines().len(), 5);
    }

    #[test]
    fn reads_responses_and_rejects_garbage() {
        let r = "SIP/2.0 503 Service Unavailable\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\n\
                 Retry-After: 17;duration=3\r\nContent-Length: 0\r\n\r\n";
        let m = parse(r.as_bytes()).expect("parses");
        assert_eq!((m.status, m.retry_after), (Some(503), Some(17)));
        assert!(parse(b"garbage\r\n\r\n").is_none());
        assert!(parse(b"SIP/2.0 200 OK\r\nCSeq: 1 SUBSCRIBE\r\n\r\n").is_none());
        assert!(
            parse(
                b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 9\r\n\r\nab"
            )
            .is_none()
        );
    }

    #[test]
    fn frames_streams() {
        let one = b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc";
        let mut two = one.to_vec();
        two.extend_from_slice(b"SIP/2.0 200 OK\r\n");
        assert_eq!(frame_len(one), Ok(Some(one.len())));
        assert_eq!(frame_len(&two), Ok(Some(one.len())));
        assert_eq!(frame_len(&one[..one.len() - 1]), Ok(None));
        assert_eq!(frame_len(b"SIP/2.0 200 OK\r\n\r\n"), Err(FrameError));
    }

    #[test]
    fn writes_subscribe() {
        let mut out = Vec::new();
        write_subscribe(
            &mut out,
            &Subscribe {
                transport: "UDP",
                local: "127.0.0.2:4000",
                request_uri: "sip:MAC%3a020000000001@example.com",
                aor: "sip:MAC%3a020000000001@example.com",
                from_tag: "f1",
                to_tag: Some("t9"),
                call_id: "1.0.ab",
                cseq: 2,
                branch: "z9hG4bK1x2",
                contact_user: "p1",
                instance: "urn:uuid:x",
                event: "ua-profile;profile-type=device",
                expires: 3600,
                suppress_if_match: Some("e42"),
            },
        );
        let m = parse(&out).expect("parses");
        assert_eq!(m.method, Some("SUBSCRIBE"));
        assert_eq!(m.to_tag, Some("t9"));
        assert_eq!(m.expires, Some(3600));
        assert!(String::from_utf8_lossy(&out).contains("Suppress-If-Match: e42\r\n"));
    }

    #[test]
    fn finds() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"xxab", b"ab"), Some(2));
    }
}

//! NOTIFY bodies as a phone reads them (RFC 6080 §5.2, RFC 4483 content indirection).
//!
//! A body is empty (nothing provisioned yet), one `message/external-body` entity (the URL,
//! `size` and `hash` are parameters of the SIP Content-Type), a `multipart/mixed` of such
//! parts, or an inline document. Parsing yields the list of documents to fetch; a part the
//! phone cannot use is an error the caller counts, never a panic.

/// One document named by a NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRef {
    /// The URL to fetch; empty for an inline document.
    pub url: String,
    /// `size` parameter, if given.
    pub size: Option<u64>,
    /// `hash` parameter (hex SHA-1, RFC 4483), if given and well formed.
    pub hash: Option<[u8; 20]>,
    /// The document came inline in the NOTIFY: nothing to fetch.
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// An external-body without a `URL` parameter.
    MissingUrl,
    /// An access type other than `URL` (RFC 4483 only defines URL for SIP).
    AccessType(String),
    /// `multipart/*` without a boundary, or delimiters that do not parse.
    BadMultipart,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingUrl => f.write_str("external-body without URL"),
            Self::AccessType(a) => write!(f, "unsupported access-type {a:?}"),
            Self::BadMultipart => f.write_str("malformed multipart body"),
        }
    }
}

/// Nested multiparts deeper than this are refused: profile NOTIFYs use one level.
const MAX_DEPTH: u8 = 4;

/// The documents in a NOTIFY with this Content-Type and body.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<DocRef>, BodyError> {
    let mut docs = Vec::new();
    if let Some(ct) = content_type
        && (!body.is_empty() || media_type(ct).eq_ignore_ascii_case("message/external-body"))
    {
        entity(ct, body, &mut docs, 0)?;
    }
    Ok(docs)
}

fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

fn entity(ct: &str, body: &[u8], docs: &mut Vec<DocRef>, depth: u8) -> Result<(), BodyError> {
    let mt = media_type(ct);
    if mt.eq_ignore_ascii_case("message/external-body") {
        let mut url = None;
        let mut size = None;
        let mut hash = None;
        let mut access = None;
        for (n, v) in params(ct) {
            if n.eq_ignore_ascii_case("url") {
                // RFC 2017: whitespace inside the URL parameter is to be ignored.
                url = Some(v.chars().filter(|c| !c.is_whitespace()).collect::<String>());
            } else if n.eq_ignore_ascii_case("size") {
                size = v.parse().ok();
            } else if n.eq_ignore_ascii_case("hash") {
                hash = parse_sha1(&v);
            } else if n.eq_ignore_ascii_case("access-type") {
                access = Some(v);
            }
        }
        if let Some(a) = access
            && !a.eq_ignore_ascii_case("url")
        {
            return Err(BodyError::AccessType(a));
        }
        let url = url.filter(|u| !u.is_empty()).ok_or(BodyError::MissingUrl)?;
        docs.push(DocRef {
            url,
            size,
            hash,
            inline: false,
        });
        Ok(())
    } else if mt
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
    {
        if depth >= MAX_DEPTH {
            return Err(BodyError::BadMultipart);
        }
        let boundary = params(ct)
            .find(|(n, _)| n.eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v)
            .filter(|b| !b.is_empty())
            .ok_or(BodyError::BadMultipart)?;
        for part in split_multipart(body, boundary.as_bytes())? {
            let (headers, content) = match crate::sip::find(part, b"\r\n\r\n") {
                Some(i) => (&part[..i], &part[i + 4..]),
                // A part with headers only (no blank line) has an empty body.
                None if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
                None => (part, &part[part.len()..]),
            };
            let headers = String::from_utf8_lossy(headers);
            // RFC 2046 §5.1: a part without Content-Type is text/plain.
            let pct = headers
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-type"))
                .map_or_else(|| "text/plain".to_owned(), |(_, v)| v.trim().to_owned());
            entity(&pct, content, docs, depth + 1)?;
        }
        Ok(())
    } else {
        docs.push(DocRef {
            url: String::new(),
            size: Some(body.len() as u64),
            hash: None,
            inline: true,
        });
        Ok(())
    }
}

/// The parts between `--boundary` delimiters (RFC 2046 §5.1.1); preamble and epilogue
/// are dropped. Each part starts after the delimiter line's CRLF.
fn split_multipart<'b>(body: &'b [u8], boundary: &[u8]) -> Result<Vec<&'b [u8]>, BodyError> {
    let mut delim = Vec::with_capacity(boundary.len() + 4);
    delim.extend_from_slice(b"\r\n--");
    delim.extend_from_slice(boundary);
    // The first delimiter may open the body without a preceding CRLF.
    let mut pos = if body.starts_with(&delim[2..]) {
        0
    } else {
        crate::sip::find(body, &delim).ok_or(BodyError::BadMultipart)? + 2
    };
    let mut parts = Vec::new();
    loop {
        let after = pos + delim.len() - 2;
        let rest = body.get(after..).ok_or(BodyError::BadMultipart)?;
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let line_end = crate::sip::find(rest, b"\r\n").ok_or(BodyError::BadMultipart)?;
        let start = after + line_end + 2;
        let next = crate::sip::find(&body[start..], &delim).ok_or(BodyError::BadMultipart)?;
        parts.push(&body[start..start + next]);
        pos = start + next + 2;
    }
}

fn parse_sha1(v: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    (v.len() == 40 && hex::decode_to_slice(v, &mut out).is_ok()).then_some(out)
}

/// `;name=value` parameters of a header value, after its first `;`. Quoted values are
/// unquoted (a `;` inside quotes does not split), backslash escapes are undone.
pub fn params(value: &str) -> impl Iterator<Item = (&str, String)> + '_ {
    let mut rest = value.split_once(';').map_or("", |(_, r)| r);
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                if escaped {
                    escaped = false;
                } else if in_quotes && c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_quotes = !in_quotes;
                } else if c == ';' && !in_quotes {
                    end = i;
                    break;
                }
            }
            let item = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
            let (n, v) = item.split_once('=').unwrap_or((item, ""));
            let n = n.trim();
            if n.is_empty() {
                continue;
            }
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                Some(q) => {
                    let mut s = String::with_capacity(q.len());
                    let mut esc = false;
                    for c in q.chars() {
                        if esc || c != '\\' {
                            s.push(c);
                            esc = false;
                        } else {
                            esc = true;
                        }
                    }
                    s
                }
                None => v.to_owned(),
            };
            return Some((n, v));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    fn ext(url: &str) -> String {
        format!(
            "message/external-body;access-type=\"URL\";expiration=\"Tue, 14 Nov 2023 22:13:20 GMT\";\
             URL=\"{url}\";size=1234;hash={HASH}"
        )
    }

    #[test]
    fn single_external_body() {
        let ct = ext("http://127.0.0.1:8080/profiles/class/acme:Z100/fw.xml");
        let body = b"Content-Type: application/xml\r\nContent-ID: <fw.v3@x>\r\n\r\n";
        let docs = parse_body(Some(&ct), body).expect("parses");
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0].url,
            "http://127.0.0.1:8080/profiles/class/acme:Z100/fw.xml"
        );
        assert_eq!(docs[0].size, Some(1234));
        assert_eq!(docs[0].hash.map(hex::encode).as_deref(), Some(HASH));
        assert!(!docs[0].inline);
    }

    #[test]
    fn multipart_mixed_of_external_bodies() {
        let b = "uaprof-0123456789abcdef01234567";
        let body = format!(
            "--{b}\r\nContent-Type: {}\r\nContent-Disposition: render\r\n\r\n\
             Content-Type: application/xml\r\nContent-ID: <a@x>\r\n\r\n\r\n\
             --{b}\r\nContent-Type: {}\r\nContent-Disposition: render\r\n\r\n\
             Content-Type: application/xml\r\nContent-ID: <b@x>\r\n\r\n\r\n--{b}--\r\n",
            ext("http://h/a;x=1"),
            ext("http://h/b"),
        );
        let docs = parse_body(
            Some(&format!("multipart/mixed;boundary={b}")),
            body.as_bytes(),
        )
        .expect("ok");
        let urls: Vec<_> = docs.iter().map(|d| d.url.as_str()).collect();
        assert_eq!(urls, ["http://h/a;x=1", "http://h/b"]);
        // Quoted boundary and a preamble.
        let quoted = format!("multipart/mixed; boundary=\"{b}\"");
        let with_preamble = format!("preamble\r\n{body}");
        assert_eq!(
            parse_body(Some(&quoted), with_preamble.as_bytes())
                .expect("ok")
                .len(),
            2
        );
    }

    #[test]
    fn inline_and_empty() {
        assert_eq!(parse_body(None, b""), Ok(vec![]));
        assert_eq!(parse_body(Some("application/xml"), b""), Ok(vec![]));
        let docs = parse_body(Some("application/xml"), b"<cfg/>").expect("ok");
        assert_eq!(
            docs,
            [DocRef {
                url: String::new(),
                size: Some(6),
                hash: None,
                inline: true
            }]
        );
    }

    #[test]
    fn missing_or_bad_params() {
        assert_eq!(
            parse_body(Some("message/external-body;access-type=URL;size=3"), b""),
            Err(BodyError::MissingUrl)
        );
        assert_eq!(
            parse_body(Some("message/external-body;access-type=ftp;URL=\"x\""), b""),
            Err(BodyError::AccessType("ftp".into()))
        );
        // No size, malformed hash: the document is still fetched, unchecked on those.
        let docs = parse_body(
            Some("message/external-body;access-type=\"URL\";URL=\"http://h/x\";hash=zz"),
            b"",
        )
        .expect("ok");
        assert_eq!((docs[0].size, docs[0].hash), (None, None));
        assert_eq!(
            parse_body(Some("multipart/mixed"), b"--x\r\n\r\n--x--"),
            Err(BodyError::BadMultipart)
        );
        assert_eq!(
            parse_body(Some("multipart/mixed;boundary=x"), b"no delimiters"),
            Err(BodyError::BadMultipart)
        );
    }

    #[test]
    fn param_splitting() {
        let p: Vec<_> = params("a;x=1; y = \"q;\\\"z\" ;;flag").collect();
        assert_eq!(
            p,
            [
                ("x", "1".to_owned()),
                ("y", "q;\"z".to_owned()),
                ("flag", String::new())
            ]
        );
    }
}

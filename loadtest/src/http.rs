//! A small HTTP/1.1 keep-alive client: what a phone needs to fetch its documents.
//!
//! [`parse_response`] is sans-IO (status, Content-Length or chunked body, Connection:
//! close); [`Conn`] wraps one TCP connection and re-connects when the server closes it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted: profile documents are kilobytes; anything this big is a bug.
const MAX_RESPONSE: usize = 8 << 20;
/// A document fetch that takes longer than this counts as a transport failure.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// `Retry-After` in seconds, if given (a 503 of a fetch ceiling).
    pub retry_after: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HttpError {
    Malformed(&'static str),
    TooLarge,
}

/// Parses one response from the front of `buf`: `Ok(None)` if incomplete, else the
/// response and how many bytes it used.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, HttpError> {
    let Some(head_end) = crate::sip::find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err(HttpError::Malformed("header too long"))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| HttpError::Malformed("utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut it = status_line.split(' ');
    let version = it.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("status line"));
    }
    let status: u16 = it
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::Malformed("status code"))?;
    let mut len = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    let mut retry_after = None;
    for line in lines {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        let (n, v) = (n.trim(), v.trim());
        if n.eq_ignore_ascii_case("content-length") {
            len = Some(
                v.parse::<usize>()
                    .map_err(|_| HttpError::Malformed("content-length"))?,
            );
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if n.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        } else if n.eq_ignore_ascii_case("retry-after") {
            retry_after = v.parse().ok();
        }
    }
    let body_start = head_end + 4;
    let rest = &buf[body_start..];
    // 1xx, 204 and 304 have no body (RFC 9112 §6.3).
    if status < 200 || status == 204 || status == 304 {
        return Ok(Some((
            Response {
                status,
                body: Vec::new(),
                close,
                retry_after,
            },
            body_start,
        )));
    }
    if chunked {
        return Ok(dechunk(rest)?.map(|(body, used)| {
            (
                Response {
                    status,
                    body,
                    close,
                    retry_after,
                },
                body_start + used,
            )
        }));
    }
    match len {
        Some(n) if n > MAX_RESPONSE => Err(HttpError::TooLarge),
        Some(n) if rest.len() >= n => Ok(Some((
            Response {
                status,
                body: rest[..n].to_vec(),
                close,
                retry_after,
            },
            body_start + n,
        ))),
        Some(_) => Ok(None),
        // Body delimited by close: the caller hands us everything once EOF is seen.
        None => Err(HttpError::Malformed("no length")),
    }
}

/// Decodes a chunked body: `Ok(None)` if incomplete, else the body and bytes used
/// (trailers included).
fn dechunk(mut b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let total = b.len();
    let mut out = Vec::new();
    loop {
        let Some(eol) = crate::sip::find(b, b"\r\n") else {
            return Ok(None);
        };
        let size_text =
            std::str::from_utf8(&b[..eol]).map_err(|_| HttpError::Malformed("chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed("chunk size"))?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let end = if b.starts_with(b"\r\n") {
                2
            } else {
                match crate::sip::find(b, b"\r\n\r\n") {
                    Some(i) => i + 4,
                    None => return Ok(None),
                }
            };
            return Ok(Some((out, total - b.len() + end)));
        }
        if out.len() + size > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[..size]);
        if &b[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk end"));
        }
        b = &b[size + 2..];
    }
}

/// The path (and query) of an `http://` or `https://` URL; `None` for other schemes.
pub fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// One keep-alive connection to the content tier.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            req: Vec::with_capacity(256),
        }
    }

    /// GETs `path`; one retry on a fresh connection if a kept-alive one turns out dead.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let reused = self.stream.is_some();
        match tokio::time::timeout(FETCH_TIMEOUT, self.get_once(path)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) if reused => {
                self.stream = None;
                match tokio::time::timeout(FETCH_TIMEOUT, self.get_once(path)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
    }

    async fn get_once(&mut self, path: &str) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(self.host.as_bytes());
        self.req
            .extend_from_slice(b"\r\nUser-Agent: uaprof-storm\r\nAccept: */*\r\n\r\n");
        let res = async {
            stream.write_all(&self.req).await?;
            self.buf.clear();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match parse_response(&self.buf) {
                    Ok(Some((r, _))) => return Ok(r),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{e:?}"),
                        ));
                    }
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
        .await;
        match &res {
            Ok(r) if !r.close => {}
            _ => self.stream = None,
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello";
        assert_eq!(parse_response(&raw[..raw.len() - 1]), Ok(None));
        let mut two = raw.to_vec();
        two.extend_from_slice(b"HTTP/1.1 304");
        let (r, used) = parse_response(&two).expect("ok").expect("complete");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"hello"[..], false)
        );
        assert_eq!(used, raw.len());
    }

    #[test]
    fn chunked_body_and_close() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                    5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (r, used) = parse_response(raw).expect("ok").expect("complete");
        assert_eq!(r.body, b"hello world");
        assert!(r.close);
        assert_eq!(used, raw.len());
        assert_eq!(parse_response(&raw[..raw.len() - 3]), Ok(None));
    }

    #[test]
    fn bodiless_and_errors() {
        let (r, _) = parse_response(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!((r.status, r.body.len()), (304, 0));
        let (r, _) = parse_response(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(r.close, "HTTP/1.0 closes by default");
        assert!(parse_response(b"SIP/2.0 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(HttpError::TooLarge)
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            url_path("http://127.0.0.1:8080/profiles/a?x=1"),
            Some("/profiles/a?x=1")
        );
        assert_eq!(url_path("http://h"), Some("/"));
        assert_eq!(url_path("https://h/x"), Some("/x"));
        assert_eq!(url_path("ftp://h/x"), None);
    }
}

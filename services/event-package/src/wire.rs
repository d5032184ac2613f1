//! Small helpers for printing SIP/MIME text into byte buffers without intermediate Strings.

/// Appends the decimal form of `n`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a header value. Values partly come from the subscriber's own request (From, To,
/// Call-ID, Route); a CR or LF in one would let it inject headers into our NOTIFY, so they
/// become spaces. The common case (no CR/LF) is a plain copy.
pub(crate) fn push_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if bytes.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            bytes
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Appends `Name: value\r\n`.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_value(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Whether `needle` occurs in `haystack` (naive search: needles here are short boundaries).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Strips SIP whitespace (SP, HTAB: RFC 3261 §25.1 LWS, folding already undone by the SIP
/// core). Not `str::trim`, which also strips VT, FF, NEL and Unicode spaces.
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(is_lws)
}

pub(crate) fn trim_lws_start(s: &str) -> &str {
    s.trim_start_matches(is_lws)
}

pub(crate) fn is_lws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 3261 §25.1 `token` characters.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for n in [0u64, 7, 10, 86400, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut v = Vec::new();
        push_header(&mut v, "To", "<sip:a@b>\r\nX-Evil: 1");
        assert_eq!(v, b"To: <sip:a@b>  X-Evil: 1\r\n");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc--xyz", b"--x"));
        assert!(!contains(b"abc", b"abcd"));
        assert!(!contains(b"abc", b""));
    }
}

//! Upload validation: names, content types, and the media-policy documents.

use uaprof_api::ProfileKey;

use crate::error::ContentError;

/// Longest document name; names appear in URLs and NOTIFY bodies of every subscriber.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted Content-Type value; real ones are a few dozen characters.
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Media types that carry session-independent media policy (seed 003 and RFC 6796).
pub const POLICY_TYPES: [&str; 2] = [
    "application/session-policy+xml",
    "application/media-policy-dataset+xml",
];

pub fn validate_name(name: &str) -> Result<(), ContentError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContentError::BadName(name.to_owned()))
    }
}

/// Keys must arrive normalised; a hand-built `ProfileKey::Device("MAC:00DF..")` would
/// otherwise become a second key for one phone.
pub fn validate_key(key: &ProfileKey) -> Result<(), ContentError> {
    let normalised = ProfileKey::from_parts(key.kind(), &key.id())?;
    if &normalised == key {
        Ok(())
    } else {
        Err(ContentError::WrongKind(format!(
            "key {key} is not in normal form (expected {normalised})"
        )))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Checks `type/subtype *(; name=value)` (RFC 9110 §8.3.1) and returns it with the type and
/// subtype lowercased (they are case-insensitive; parameters are kept as given).
pub fn normalize_content_type(raw: &str) -> Result<String, ContentError> {
    let bad = || ContentError::BadContentType(raw.to_owned());
    let raw_trim = raw.trim();
    if raw_trim.is_empty() || raw_trim.len() > MAX_CONTENT_TYPE_LEN {
        return Err(bad());
    }
    let mut parts = raw_trim.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let (ty, sub) = essence.split_once('/').ok_or_else(bad)?;
    if !is_token(ty) || !is_token(sub) {
        return Err(bad());
    }
    let mut out = essence.to_ascii_lowercase();
    for param in parts {
        let param = param.trim();
        let (name, value) = param.split_once('=').ok_or_else(bad)?;
        let quoted = value.len() >= 2
            && value.starts_with('"')
            && value.ends_with('"')
            && value[1..value.len() - 1]
                .bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        if !is_token(name) || !(is_token(value) || quoted) {
            return Err(bad());
        }
        out.push_str("; ");
        out.push_str(param);
    }
    Ok(out)
}

/// The `type/subtype` part of a normalised content type.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default()
}

/// Media-policy documents: only for user and local-network keys, and well-formed enough.
///
/// This is a light check (non-empty, UTF-8, starts with `<` after an optional BOM and
/// whitespace). Full validation against the RFC 6796 schema (one mandatory codec per media
/// type, at least one allowed codec, DSCP 0-63, ...) comes later with an XML parser.
pub fn check_policy_document(
    key: &ProfileKey,
    content_type: &str,
    bytes: &[u8],
) -> Result<(), ContentError> {
    let essence = essence(content_type);
    if !POLICY_TYPES.contains(&essence) {
        return Ok(());
    }
    if !matches!(key, ProfileKey::User(_) | ProfileKey::LocalNetwork(_)) {
        return Err(ContentError::TypeNotAllowed {
            content_type: essence.to_owned(),
            kind: key.kind(),
        });
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ContentError::Malformed("policy document is not UTF-8".into()))?;
    let body = text.strip_prefix('\u{feff}').unwrap_or(text).trim_start();
    if body.is_empty() {
        return Err(ContentError::Malformed("policy document is empty".into()));
    }
    if !body.starts_with('<') {
        return Err(ContentError::Malformed(
            "policy document is not XML (must start with '<')".into(),
        ));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for ids in URL paths.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "settings.xml", "A-b_c.1", &"x".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü.xml", &"x".repeat(129), ".."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            normalize_content_type(" Application/XML ; charset=utf-8")
                .ok()
                .as_deref(),
            Some("application/xml; charset=utf-8")
        );
        assert_eq!(
            normalize_content_type("text/plain; a=\"b c\"")
                .ok()
                .as_deref(),
            Some("text/plain; a=\"b c\"")
        );
        for bad in [
            "",
            "xml",
            "/xml",
            "text/",
            "te xt/plain",
            "text/plain;",
            "a/b; c",
        ] {
            assert!(normalize_content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_documents() {
        let user = ProfileKey::user("alice@example.com").expect("key");
        let device = ProfileKey::device("00df1e004cd0").expect("key");
        let ct = "application/media-policy-dataset+xml";
        assert!(check_policy_document(&user, ct, b"\xEF\xBB\xBF \n<policy/>").is_ok());
        assert!(matches!(
            check_policy_document(&device, ct, b"<policy/>"),
            Err(ContentError::TypeNotAllowed { .. })
        ));
        assert!(check_policy_document(&user, ct, b"  ").is_err());
        assert!(check_policy_document(&user, ct, b"{}").is_err());
        assert!(check_policy_document(&device, "application/xml", b"").is_ok());
    }

    #[test]
    fn encoding() {
        assert_eq!(url_encode("acme:Z100"), "acme%3AZ100");
        assert_eq!(url_encode("alice@example.com"), "alice%40example.com");
    }
}

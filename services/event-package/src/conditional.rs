//! RFC 5839 conditional notification: a refresh carrying `Suppress-If-Match` that still
//! matches the current entity tag is answered `204 No Notification` and sends no NOTIFY.

/// Whether `Suppress-If-Match` (absent: `None`) matches the current entity tag. `*` matches
/// any tag (RFC 5839 §4.2); otherwise the tokens must be equal byte for byte after trimming
/// surrounding whitespace. An empty header matches nothing, so the subscriber still gets its
/// NOTIFY.
pub fn suppress_matches(suppress_if_match: Option<&str>, current_etag: &str) -> bool {
    match suppress_if_match.map(str::trim) {
        None | Some("") => false,
        Some("*") => true,
        Some(tag) => tag == current_etag.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(!suppress_matches(None, "abc"));
        assert!(!suppress_matches(Some(""), "abc"));
        assert!(!suppress_matches(Some("  "), ""));
        assert!(suppress_matches(Some("*"), "abc"));
        assert!(suppress_matches(Some(" * "), ""));
        assert!(suppress_matches(Some("abc"), "abc"));
        assert!(suppress_matches(Some(" abc\t"), "abc"));
        assert!(!suppress_matches(Some("ABC"), "abc"));
        assert!(!suppress_matches(Some("abcd"), "abc"));
        assert!(!suppress_matches(Some("ab"), "abc"));
    }
}

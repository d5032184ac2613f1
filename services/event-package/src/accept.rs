//! Which NOTIFY body a subscriber can take, from the SUBSCRIBE's `Accept` headers.
//!
//! Rules (decided here, relied on by [`crate::body`]):
//!
//! * **No Accept header** → content indirection ([`BodyMode::ExternalBody`]) with
//!   `multipart/mixed` allowed. RFC 6665 leaves the meaning of a SUBSCRIBE without Accept to
//!   the package, and RFC 6080 §6.5 (NOTIFY Bodies) makes content indirection (RFC 4483
//!   `message/external-body`, several URLs in `multipart/mixed`) the body this package sends;
//!   the seed draft (§3.5) even says the NOTIFY body MUST use content indirection.
//! * **Accept allows `message/external-body`** (listed, `message/*` or `*/*`, q > 0) →
//!   content indirection. `multipart/mixed` is used for several documents only if Accept
//!   allows it too (see [`BodyMode::ExternalBody`]).
//! * **Accept names `application/url`** (listed as such, q > 0) and not external-body →
//!   [`BodyMode::Url`]: the body is one URL, as SIP plug-and-play phones (Snom, Yealink,
//!   Grandstream, ...) expect it.
//! * **Accept allows something else** → [`BodyMode::Inline`]: the documents' own bytes, for
//!   the types the list allows.
//! * **Accept allows nothing** (an empty value, only q=0 ranges, nothing parseable) →
//!   [`NotAcceptable`], answered with 406 (RFC 3261 §21.4.7: an empty Accept means no body
//!   format is acceptable).
//!
//! Matching ignores media-type parameters other than `q`, is case-insensitive, and the most
//! specific range wins (`type/subtype` over `type/*` over `*/*`), so
//! `*/*, message/external-body;q=0` excludes content indirection.

use crate::wire::{is_token, trim_lws};

pub const EXTERNAL_BODY: &str = "message/external-body";
pub const MULTIPART_MIXED: &str = "multipart/mixed";
pub const URL_BODY: &str = "application/url";

/// Media ranges read from one SUBSCRIBE; ranges beyond this are ignored. Phones list a
/// handful; the bound caps the work a hostile Accept can cause per match.
pub const MAX_RANGES: usize = 32;

/// What kind of body the subscriber can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyMode {
    /// RFC 4483 content indirection. `multipart` says whether several documents may be sent
    /// as `multipart/mixed`; when false, only the first document is sent (strict: we never
    /// send a type the subscriber's Accept excludes). A caller that prefers leniency towards
    /// phones that forget to list `multipart/mixed` may set it to true by policy.
    ExternalBody { multipart: bool },
    /// The documents' bytes, for the types this list allows.
    Inline(AcceptList),
    /// One URL as the whole body (`application/url`): the first document's.
    Url,
}

impl BodyMode {
    /// Whether several documents may go out as one `multipart/mixed` body.
    pub fn allows_multipart(&self) -> bool {
        match self {
            Self::ExternalBody { multipart } => *multipart,
            Self::Inline(list) => list.allows(MULTIPART_MIXED),
            Self::Url => false,
        }
    }
}

/// The subscriber accepts no body this package can produce: answer 406.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Accept header allows no body format")]
#[non_exhaustive]
pub struct NotAcceptable;

impl NotAcceptable {
    pub fn status(&self) -> u16 {
        406
    }
}

/// One media range with its quality in thousandths (RFC 3261 `qvalue`, 0..=1000).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRange {
    /// Lowercase; `*` for a wildcard.
    top: String,
    sub: String,
    q: u16,
}

impl MediaRange {
    /// 2 for `type/subtype`, 1 for `type/*`, 0 for `*/*`; `None` if it does not match.
    fn specificity(&self, top: &str, sub: &str) -> Option<u8> {
        match (self.top.as_str(), self.sub.as_str()) {
            ("*", "*") => Some(0),
            (t, "*") if t == top => Some(1),
            (t, s) if t == top && s == sub => Some(2),
            _ => None,
        }
    }
}

/// Parsed `Accept` media ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptList {
    ranges: Vec<MediaRange>,
}

impl AcceptList {
    /// Parses every Accept header value (each a comma-separated list). Malformed ranges are
    /// skipped rather than failing the request: a phone that garbles one entry still gets
    /// what the others allow.
    pub fn parse(values: &[&str]) -> Self {
        let ranges = values
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(parse_range)
            .take(MAX_RANGES)
            .collect();
        Self { ranges }
    }

    /// The quality (0..=1000) the subscriber gives `content_type`; parameters are ignored.
    pub fn quality(&self, content_type: &str) -> u16 {
        let Some((top, sub)) = split_type(content_type) else {
            return 0;
        };
        let mut best: Option<(u8, u16)> = None;
        for r in &self.ranges {
            if let Some(spec) = r.specificity(&top, &sub) {
                best = match best {
                    // Equal specificity listed twice: the more generous one wins.
                    Some((s, q)) if s > spec || (s == spec && q >= r.q) => Some((s, q)),
                    _ => Some((spec, r.q)),
                };
            }
        }
        best.map_or(0, |(_, q)| q)
    }

    /// Whether the subscriber accepts `content_type` (case-insensitive, parameters ignored).
    pub fn allows(&self, content_type: &str) -> bool {
        self.quality(content_type) > 0
    }

    /// Whether `content_type` is listed by name (not only through a wildcard) with q > 0.
    pub fn names(&self, content_type: &str) -> bool {
        let Some((top, sub)) = split_type(content_type) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|r| r.q > 0 && r.specificity(&top, &sub) == Some(2))
    }

    /// Whether any range has q > 0.
    pub fn allows_anything(&self) -> bool {
        self.ranges.iter().any(|r| r.q > 0)
    }
}

/// `type/subtype` of a content type, lowercased, parameters dropped.
pub(crate) fn split_type(content_type: &str) -> Option<(String, String)> {
    let essence = trim_lws(content_type.split(';').next()?);
    let (top, sub) = essence.split_once('/')?;
    let (top, sub) = (trim_lws(top), trim_lws(sub));
    (is_token(top) && is_token(sub)).then(|| (top.to_ascii_lowercase(), sub.to_ascii_lowercase()))
}

fn parse_range(raw: &str) -> Option<MediaRange> {
    let mut parts = raw.split(';');
    let (top, sub) = split_type(parts.next()?)?;
    if top == "*" && sub != "*" {
        return None;
    }
    let mut q = 1000;
    for p in parts {
        let Some((name, value)) = p.split_once('=') else {
            continue;
        };
        if trim_lws(name).eq_ignore_ascii_case("q") {
            q = parse_qvalue(trim_lws(value))?;
        }
    }
    Some(MediaRange { top, sub, q })
}

/// RFC 3261 `qvalue`: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Decides the body mode from the SUBSCRIBE's Accept header values (one entry per header;
/// an empty slice means the request had no Accept header). See the module docs for the rules.
pub fn body_mode(accept_values: &[&str]) -> Result<BodyMode, NotAcceptable> {
    if accept_values.is_empty() {
        return Ok(BodyMode::ExternalBody { multipart: true });
    }
    let list = AcceptList::parse(accept_values);
    if list.allows(EXTERNAL_BODY) {
        Ok(BodyMode::ExternalBody {
            multipart: list.allows(MULTIPART_MIXED),
        })
    } else if list.names(URL_BODY) {
        Ok(BodyMode::Url)
    } else if list.allows_anything() {
        Ok(BodyMode::Inline(list))
    } else {
        Err(NotAcceptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(multipart: bool) -> Result<BodyMode, NotAcceptable> {
        Ok(BodyMode::ExternalBody { multipart })
    }

    #[test]
    fn a_listed_application_url_without_external_body_is_a_url_body() {
        assert_eq!(body_mode(&["application/url"]), Ok(BodyMode::Url));
        assert_eq!(
            body_mode(&["Application/URL;q=0.8, text/plain"]),
            Ok(BodyMode::Url)
        );
        // External-body wins where both are taken; a wildcard does not name the type.
        assert_eq!(
            body_mode(&["application/url, message/external-body"]),
            ext(false)
        );
        assert!(matches!(
            body_mode(&["application/*"]),
            Ok(BodyMode::Inline(_))
        ));
        assert!(matches!(
            body_mode(&["application/url;q=0, application/xml"]),
            Ok(BodyMode::Inline(_))
        ));
    }

    #[test]
    fn no_accept_header_means_content_indirection() {
        assert_eq!(body_mode(&[]), ext(true));
    }

    #[test]
    fn external_body_listed() {
        assert_eq!(body_mode(&["message/external-body"]), ext(false));
        assert_eq!(
            body_mode(&["Message/External-Body, multipart/mixed"]),
            ext(true)
        );
        // Several Accept headers are one list.
        assert_eq!(
            body_mode(&["message/external-body", "multipart/*;q=0.5"]),
            ext(true)
        );
        // RFC 6080-style: the profile type and the indirection both listed.
        assert_eq!(
            body_mode(&["message/external-body, application/x-z100-device-profile"]),
            ext(false)
        );
    }

    #[test]
    fn wildcards_allow_external_body() {
        assert_eq!(body_mode(&["*/*"]), ext(true));
        assert_eq!(body_mode(&["message/*"]), ext(false));
        assert_eq!(
            body_mode(&["message/*;q=0.1, multipart/mixed;q=0.001"]),
            ext(true)
        );
    }

    #[test]
    fn q_zero_excludes_and_specific_beats_wildcard() {
        let m = body_mode(&["*/*, message/external-body;q=0"]).expect("inline");
        let BodyMode::Inline(list) = m else {
            panic!("expected inline, got {m:?}");
        };
        assert!(list.allows("application/xml"));
        assert!(!list.allows("message/external-body"));
        assert!(list.allows("multipart/mixed"));

        let m = body_mode(&["message/*;q=0, message/external-body;q=0.2"]);
        assert_eq!(m, ext(false));
        let m = body_mode(&["message/external-body;q=0, multipart/mixed;q=0"]);
        assert_eq!(m, Err(NotAcceptable));
    }

    #[test]
    fn inline_when_only_document_types_listed() {
        let m = body_mode(&["application/xml;charset=utf-8, text/plain;q=0.5"]).expect("inline");
        let BodyMode::Inline(list) = &m else {
            panic!("expected inline, got {m:?}");
        };
        assert!(list.allows("Application/XML; charset=\"utf-8\""));
        assert!(list.allows("text/plain"));
        assert!(!list.allows("text/html"));
        assert!(!list.allows("garbage"));
        assert_eq!(list.quality("text/plain"), 500);
        assert!(!m.allows_multipart());
    }

    #[test]
    fn nothing_acceptable_is_406() {
        for v in [
            "",
            "   ",
            "*/*;q=0",
            "application/xml;q=0, text/plain;q=0.000",
            "garbage",
            "*/xml",
            "text/plain;q=2",
            "text/plain;q=0.5555",
        ] {
            let err = body_mode(&[v]).expect_err(v);
            assert_eq!(err.status(), 406);
        }
        // An empty Accept among real ones does not cancel them.
        assert_eq!(body_mode(&["", "message/external-body"]), ext(false));
    }

    #[test]
    fn only_sp_and_htab_are_whitespace() {
        // `str::trim` took NEL (U+0085), VT and Unicode spaces for SIP whitespace.
        for junk in [
            "message/external-body\u{85}",
            "\u{a0}message/external-body",
            "message/\u{b}external-body",
            "message/external-body;q=1\u{85}",
        ] {
            assert!(
                !AcceptList::parse(&[junk]).allows(EXTERNAL_BODY),
                "{junk:?}"
            );
        }
        let list = AcceptList::parse(&[" message / external-body ;\tq = 0.5\t"]);
        assert_eq!(list.quality(EXTERNAL_BODY), 500);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.001"), Some(1));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("x"), None);
        assert_eq!(parse_qvalue(""), None);
        assert_eq!(parse_qvalue("0.-1"), None);
    }

    #[test]
    fn range_count_is_bounded() {
        let many = vec!["text/plain"; MAX_RANGES * 4];
        assert_eq!(AcceptList::parse(&many).ranges.len(), MAX_RANGES);
    }
}

//! The `Event` header of this package.
//!
//! A SUBSCRIBE says `Event: ua-profile;profile-type=device;vendor="acme";model="Z100";
//! version="1.2.3"` (RFC 6080 §6.2; the seed draft spells the package `sip-profile` and its
//! examples use tokens rather than quoted strings, so both forms are accepted). The NOTIFY
//! echoes the package and `profile-type`, adds `effective-by` when the provisioner set one, and
//! echoes `id` as RFC 6665 §8.2.1 requires.

use serde::{Deserialize, Serialize};
use uaprof_api::ProfileType;

use crate::wire::{is_lws, is_token, is_token_char, trim_lws, trim_lws_start};

/// Value of `Allow-Events` in our 489 responses and in every NOTIFY.
pub const ALLOW_EVENTS: &str = "ua-profile, sip-profile";

/// Longest parameter value accepted. Real vendor/model/version strings are a few dozen
/// characters; the bound keeps hostile input out of logs and subscription records.
pub const MAX_PARAM_VALUE: usize = 128;

/// Most parameters accepted on one Event header; the package defines six, so anything near
/// this is noise or an attack.
pub const MAX_PARAMS: usize = 16;

/// Longest Event header value parsed at all (six bounded parameters fit easily).
pub const MAX_EVENT_LEN: usize = 1024;

/// The two spellings of the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Package {
    /// RFC 6080.
    UaProfile,
    /// draft-ietf-sipping-config-framework (the seed); still sent by older phones.
    SipProfile,
}

impl Package {
    pub const ALL: [Package; 2] = [Self::UaProfile, Self::SipProfile];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UaProfile => "ua-profile",
            Self::SipProfile => "sip-profile",
        }
    }

    /// Case-insensitive. RFC 6665 §8.2.1 compares event types byte by byte, but no other
    /// package differs from ours only by case, and phones that capitalise it exist.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(token))
    }
}

/// A parsed SUBSCRIBE `Event` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEvent {
    pub package: Package,
    /// The raw `profile-type` token, lowercased. Unknown tokens are kept: whether they are
    /// served is the caller's decision (404, RFC 6080 §6.2), see [`Self::known_profile_type`].
    pub profile_type: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub version: Option<String>,
    /// RFC 6665 `id`, kept byte for byte (it is compared exactly).
    pub id: Option<String>,
}

impl ProfileEvent {
    /// The profile type, if it is one this server knows.
    pub fn known_profile_type(&self) -> Option<ProfileType> {
        ProfileType::from_token(&self.profile_type)
    }
}

/// Why an Event header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Another event package (or none): answer 489 with `Allow-Events` (RFC 6665 §4.2.1).
    #[error("event package {0:?} is not served here")]
    BadEvent(String),
    /// RFC 6080 §6.2 makes `profile-type` mandatory in a SUBSCRIBE. Without it we cannot
    /// tell which documents are wanted. The package is ours, so 489 would be wrong; the
    /// request is malformed for this package: 400.
    #[error("Event header lacks the mandatory profile-type parameter")]
    MissingProfileType,
    /// A parameter value beyond [`MAX_PARAM_VALUE`] characters, or a header beyond
    /// [`MAX_EVENT_LEN`] bytes or [`MAX_PARAMS`] parameters: 400.
    #[error("Event header parameter {0} is too long or too many parameters")]
    TooLong(String),
    /// Syntax error (unterminated quote, duplicate or empty parameter, control characters): 400.
    #[error("malformed Event header: {0}")]
    Malformed(String),
}

impl EventError {
    /// The SIP status the SUBSCRIBE should be answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadEvent(_) => 489,
            Self::MissingProfileType | Self::TooLong(_) | Self::Malformed(_) => 400,
        }
    }
}

/// Parses a SUBSCRIBE's Event header value.
pub fn parse_event(value: &str) -> Result<ProfileEvent, EventError> {
    // The package is checked before anything else: a request for another package gets 489
    // (with Allow-Events) however its parameters look. Event types cannot contain quotes, so
    // the first ';' ends it.
    let (event_type, rest) = match value.find(';') {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let event_type = trim_lws(event_type);
    let package = Package::from_token(event_type)
        .ok_or_else(|| EventError::BadEvent(event_type.chars().take(MAX_PARAM_VALUE).collect()))?;
    if value.len() > MAX_EVENT_LEN {
        return Err(EventError::TooLong("Event".into()));
    }

    let mut event = ProfileEvent {
        package,
        profile_type: String::new(),
        vendor: None,
        model: None,
        version: None,
        id: None,
    };
    let mut have_profile_type = false;
    let mut count = 0usize;
    let mut params = ParamScanner {
        s: rest.unwrap_or(""),
    };
    while let Some((name, val)) = params.next_param()? {
        count += 1;
        if count > MAX_PARAMS {
            return Err(EventError::TooLong("count".into()));
        }
        let lower = name.to_ascii_lowercase();
        let slot = match lower.as_str() {
            "profile-type" => {
                if have_profile_type {
                    return Err(EventError::Malformed("duplicate profile-type".into()));
                }
                let v = required(&lower, val)?;
                if !is_token(&v) {
                    return Err(EventError::Malformed("profile-type is not a token".into()));
                }
                event.profile_type = v.to_ascii_lowercase();
                have_profile_type = true;
                continue;
            }
            "vendor" => &mut event.vendor,
            "model" => &mut event.model,
            "version" => &mut event.version,
            "id" => {
                if val
                    .as_deref()
                    .is_some_and(|v| !v.is_empty() && !is_token(v))
                {
                    return Err(EventError::Malformed("id is not a token".into()));
                }
                &mut event.id
            }
            // effective-by belongs to NOTIFY; in a SUBSCRIBE it, like any extension
            // parameter, is ignored (RFC 3261 generic-param).
            _ => continue,
        };
        if slot.is_some() {
            return Err(EventError::Malformed(format!("duplicate {lower}")));
        }
        *slot = Some(required(&lower, val)?);
    }
    if !have_profile_type {
        return Err(EventError::MissingProfileType);
    }
    Ok(event)
}

/// The package's known parameters all need a value.
fn required(name: &str, val: Option<String>) -> Result<String, EventError> {
    match val {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(EventError::Malformed(format!("{name} has no value"))),
    }
}

/// Walks `;name[=value]` pairs; values are tokens or quoted strings (RFC 3261 §25.1
/// `quoted-string`, with `\"` and `\\` escapes).
struct ParamScanner<'a> {
    s: &'a str,
}

impl<'a> ParamScanner<'a> {
    /// Called with `s` just after a ';' (or at the end).
    fn next_param(&mut self) -> Result<Option<(&'a str, Option<String>)>, EventError> {
        let s = trim_lws_start(self.s);
        if s.is_empty() {
            self.s = s;
            return Ok(None);
        }
        let name_end = s.find(|c: char| !is_token_char(c)).unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err(EventError::Malformed("empty parameter name".into()));
        }
        let mut rest = trim_lws_start(&s[name_end..]);
        let mut value = None;
        if let Some(after_eq) = rest.strip_prefix('=') {
            let after_eq = trim_lws_start(after_eq);
            let (v, tail) = if let Some(quoted) = after_eq.strip_prefix('"') {
                unquote(name, quoted)?
            } else {
                let end = after_eq
                    .find(|c: char| c == ';' || is_lws(c))
                    .unwrap_or(after_eq.len());
                let v = &after_eq[..end];
                if v.chars().any(|c| c.is_control() || c == '"' || c == ',') {
                    return Err(EventError::Malformed(format!("bad value for {name}")));
                }
                (v.to_owned(), &after_eq[end..])
            };
            if v.chars().count() > MAX_PARAM_VALUE {
                return Err(EventError::TooLong(name.to_owned()));
            }
            value = Some(v);
            rest = trim_lws_start(tail);
        }
        if let Some(tail) = rest.strip_prefix(';') {
            self.s = tail;
        } else if rest.is_empty() {
            self.s = rest;
        } else {
            return Err(EventError::Malformed(format!(
                "unexpected text after parameter {name}"
            )));
        }
        Ok(Some((name, value)))
    }
}

/// Reads a quoted string whose opening quote is already consumed; returns the unescaped
/// value and the text after the closing quote.
fn unquote<'a>(name: &str, s: &'a str) -> Result<(String, &'a str), EventError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) if !e.is_control() => out.push(e),
                _ => return Err(EventError::Malformed(format!("bad escape in {name}"))),
            },
            // A CR/LF here would be echoed into logs and records; tabs are legal in qdtext.
            c if c.is_control() && c != '\t' => {
                return Err(EventError::Malformed(format!(
                    "control character in {name}"
                )));
            }
            c => out.push(c),
        }
        // Stop early on hostile lengths instead of unescaping a megabyte first.
        if out.len() > MAX_PARAM_VALUE * 4 {
            return Err(EventError::TooLong(name.to_owned()));
        }
    }
    Err(EventError::Malformed(format!(
        "unterminated quote in {name}"
    )))
}

/// The NOTIFY's Event header value: the subscriber's package and `profile-type`,
/// `effective-by` (seconds, RFC 6080 §6.2) when set, and the subscription's `id` if it had one.
pub fn notify_event_header(
    package: Package,
    profile_type: &str,
    effective_by: Option<u32>,
    id: Option<&str>,
) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(package.as_str());
    out.push_str(";profile-type=");
    out.push_str(profile_type);
    if let Some(secs) = effective_by {
        out.push_str(";effective-by=");
        out.push_str(&secs.to_string());
    }
    if let Some(id) = id {
        out.push_str(";id=");
        out.push_str(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> ProfileEvent {
        parse_event(v).expect(v)
    }

    #[test]
    fn rfc6080_quoted_params() {
        let e = ok(r#"ua-profile;profile-type=device;vendor="acme";model="Z100";version="1.2.3""#);
        assert_eq!(e.package, Package::UaProfile);
        assert_eq!(e.profile_type, "device");
        assert_eq!(e.vendor.as_deref(), Some("acme"));
        assert_eq!(e.model.as_deref(), Some("Z100"));
        assert_eq!(e.version.as_deref(), Some("1.2.3"));
        assert_eq!(e.id, None);
        assert_eq!(e.known_profile_type(), Some(ProfileType::Device));
    }

    #[test]
    fn seed_draft_tokens_and_whitespace() {
        let e = ok("sip-profile ; profile-type = user ;\tvendor=acme; model=Z100;version=1.2.3 ");
        assert_eq!(e.package, Package::SipProfile);
        assert_eq!(e.profile_type, "user");
        assert_eq!(e.vendor.as_deref(), Some("acme"));
        assert_eq!(e.version.as_deref(), Some("1.2.3"));
    }

    #[test]
    fn only_sp_and_htab_are_whitespace() {
        // `str::trim` took NEL (U+0085), VT, FF and Unicode spaces for SIP whitespace.
        for bad in [
            "ua-profile\u{85};profile-type=device",
            "\u{a0}ua-profile;profile-type=device",
            "ua-profile;\u{b}profile-type=device",
            "ua-profile;profile-type=device\u{c}",
            "ua-profile;profile-type=device;vendor=acme\u{85}",
            "ua-profile;profile-type\u{2003}=device",
        ] {
            assert!(parse_event(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ok(" \tua-profile\t; profile-type =\tdevice \t").profile_type,
            "device"
        );
    }

    #[test]
    fn case_rules() {
        let e = ok(r#"UA-Profile;PROFILE-TYPE=Local-Network;Vendor="ACME";ID=AbC"#);
        assert_eq!(e.package, Package::UaProfile);
        assert_eq!(e.profile_type, "local-network");
        // Vendor and id values keep their case: they are compared exactly.
        assert_eq!(e.vendor.as_deref(), Some("ACME"));
        assert_eq!(e.id.as_deref(), Some("AbC"));
    }

    #[test]
    fn quoted_escapes_and_separators() {
        let e = ok(r#"ua-profile;profile-type=device;model="Z \"100\"; pro\\max";version="1""#);
        assert_eq!(e.model.as_deref(), Some(r#"Z "100"; pro\max"#));
        assert_eq!(e.version.as_deref(), Some("1"));
    }

    #[test]
    fn unknown_profile_type_is_kept_for_the_caller() {
        let e = ok("ua-profile;profile-type=application");
        assert_eq!(e.profile_type, "application");
        assert_eq!(e.known_profile_type(), None);
    }

    #[test]
    fn extension_params_ignored() {
        let e = ok("ua-profile;profile-type=device;effective-by=3600;x-foo;appids=\"a,b\"");
        assert_eq!(e.profile_type, "device");
    }

    #[test]
    fn other_packages_are_489() {
        for v in [
            "presence",
            "dialog;profile-type=device",
            "",
            "ua-profilex;profile-type=device",
            "ua-profile.winfo;profile-type=device",
            "presence;broken=\"",
        ] {
            let err = parse_event(v).expect_err(v);
            assert!(matches!(err, EventError::BadEvent(_)), "{v:?}: {err:?}");
            assert_eq!(err.status(), 489);
        }
    }

    #[test]
    fn missing_profile_type_is_400() {
        for v in ["ua-profile", "ua-profile;vendor=acme", "sip-profile;"] {
            let err = parse_event(v).expect_err(v);
            assert_eq!(err, EventError::MissingProfileType, "{v:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn malformed_is_400() {
        for v in [
            "ua-profile;profile-type=device;vendor=\"acme",
            "ua-profile;profile-type=device;vendor=",
            "ua-profile;profile-type",
            "ua-profile;profile-type=\"dev ice\"",
            "ua-profile;profile-type=device;profile-type=user",
            "ua-profile;profile-type=device;vendor=a;vendor=b",
            "ua-profile;profile-type=device;vendor=\"a\"b",
            "ua-profile;profile-type=device;;",
            "ua-profile;profile-type=device;model=\"a\r\nX-Evil: 1\"",
            "ua-profile;profile-type=device;id=\"a b\"",
            "ua-profile;profile-type=device;vendor=a\"b",
        ] {
            let err = parse_event(v).expect_err(v);
            assert_eq!(err.status(), 400, "{v:?}: {err:?}");
        }
    }

    #[test]
    fn absurd_lengths_are_400() {
        let long = "x".repeat(MAX_PARAM_VALUE + 1);
        for v in [
            format!("ua-profile;profile-type=device;vendor=\"{long}\""),
            format!("ua-profile;profile-type=device;model={long}"),
            format!("ua-profile;profile-type={long}"),
            format!(
                "ua-profile;profile-type=device{}",
                ";a=b".repeat(MAX_PARAMS)
            ),
            format!("ua-profile;profile-type=device;x=\"{}\"", "y".repeat(4000)),
        ] {
            let err = parse_event(&v).expect_err("too long");
            assert!(matches!(err, EventError::TooLong(_)), "{err:?}");
            assert_eq!(err.status(), 400);
        }
        let at_limit = "x".repeat(MAX_PARAM_VALUE);
        let e = ok(&format!(
            "ua-profile;profile-type=device;vendor=\"{at_limit}\""
        ));
        assert_eq!(e.vendor.as_deref(), Some(at_limit.as_str()));
    }

    #[test]
    fn notify_header() {
        assert_eq!(
            notify_event_header(Package::UaProfile, "device", None, None),
            "ua-profile;profile-type=device"
        );
        assert_eq!(
            notify_event_header(Package::SipProfile, "user", Some(3600), Some("7")),
            "sip-profile;profile-type=user;effective-by=3600;id=7"
        );
        // What we print, we parse back.
        let e = ok(&notify_event_header(
            Package::UaProfile,
            "device",
            Some(0),
            Some("x"),
        ));
        assert_eq!(e.profile_type, "device");
        assert_eq!(e.id.as_deref(), Some("x"));
    }

    #[test]
    fn allow_events_lists_both_packages() {
        for p in Package::ALL {
            assert!(ALLOW_EVENTS.split(", ").any(|t| t == p.as_str()));
        }
    }
}

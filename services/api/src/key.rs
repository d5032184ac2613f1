//! Profile types and profile keys.
//!
//! A [`ProfileKey`] names the owner of a set of documents. Keys are normalised on the way in
//! (provisioning API, SUBSCRIBE Request-URI, change events), so two spellings of one MAC
//! address or AoR can never become two keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `profile-type` Event parameter values this server knows (RFC 6080 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileType {
    Device,
    User,
    LocalNetwork,
}

impl ProfileType {
    pub const ALL: [ProfileType; 3] = [Self::Device, Self::User, Self::LocalNetwork];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::User => "user",
            Self::LocalNetwork => "local-network",
        }
    }

    /// Parses the token case-insensitively; `None` for tokens we do not know (the caller
    /// answers 404, RFC 6080 §4.1.2).
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(token))
    }
}

impl fmt::Display for ProfileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be built from user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("unknown key kind {0:?} (expected device, user, local-network or class)")]
    UnknownKind(String),
    #[error("invalid device id {0:?} (expected a MAC address or a urn:uuid instance id)")]
    BadDeviceId(String),
    #[error("invalid address-of-record {0:?} (expected user@host)")]
    BadAor(String),
    #[error("invalid domain {0:?}")]
    BadDomain(String),
    #[error("invalid class {0:?} (expected vendor and model, each 1-64 visible characters)")]
    BadClass(String),
}

/// The owner of a set of profile documents.
///
/// The string forms are normalised: device ids are `mac:<12 lowercase hex>` or a lowercase
/// `urn:...`; AoRs are `user@host` with the host lowercased; domains are lowercase; vendor and
/// model are kept as given (they are compared exactly, as phones send them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProfileKey {
    Device(String),
    User(String),
    LocalNetwork(String),
    Class { vendor: String, model: String },
}

/// Longest identifier accepted in any key part; phones' ids are far shorter, and a bound
/// keeps hostile input from bloating every index entry.
pub const MAX_KEY_PART: usize = 256;

impl ProfileKey {
    pub fn device(raw: &str) -> Result<Self, KeyError> {
        normalize_device_id(raw).map(Self::Device)
    }

    pub fn user(raw: &str) -> Result<Self, KeyError> {
        normalize_aor(raw).map(Self::User)
    }

    pub fn local_network(raw: &str) -> Result<Self, KeyError> {
        normalize_domain(raw).map(Self::LocalNetwork)
    }

    pub fn class(vendor: &str, model: &str) -> Result<Self, KeyError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_graphic() && c != '/' && c != '"')
        };
        if ok(vendor) && ok(model) {
            Ok(Self::Class {
                vendor: vendor.to_owned(),
                model: model.to_owned(),
            })
        } else {
            Err(KeyError::BadClass(format!("{vendor}/{model}")))
        }
    }

    /// Builds a key from the two path segments of the provisioning API
    /// (`device/<id>`, `user/<aor>`, `local-network/<domain>`, `class/<vendor>:<model>`).
    pub fn from_parts(kind: &str, id: &str) -> Result<Self, KeyError> {
        match kind {
            "device" => Self::device(id),
            "user" => Self::user(id),
            "local-network" => Self::local_network(id),
            "class" => {
                let (vendor, model) = id
                    .split_once(':')
                    .ok_or_else(|| KeyError::BadClass(id.to_owned()))?;
                Self::class(vendor, model)
            }
            other => Err(KeyError::UnknownKind(other.to_owned())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Device(_) => "device",
            Self::User(_) => "user",
            Self::LocalNetwork(_) => "local-network",
            Self::Class { .. } => "class",
        }
    }

    /// The id part as used in URLs and the provisioning API (inverse of [`Self::from_parts`]).
    pub fn id(&self) -> String {
        match self {
            Self::Device(s) | Self::User(s) | Self::LocalNetwork(s) => s.clone(),
            Self::Class { vendor, model } => format!("{vendor}:{model}"),
        }
    }
}

impl fmt::Display for ProfileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind(), self.id())
    }
}

/// Normalises a device identity: a MAC address in any common spelling (`MAC:00DF1E004CD0`,
/// `00:df:1e:00:4c:d0`, `00-DF-1E-00-4C-D0`, `00df1e004cd0`) or an instance URN
/// (`urn:uuid:...`, as in `+sip.instance`). Percent-escapes (`MAC%3a...`) are decoded first,
/// since phones put the id in the user part of a SIP URI.
pub fn normalize_device_id(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::BadDeviceId(raw.to_owned());
    if raw.is_empty() || raw.len() > MAX_KEY_PART {
        return Err(bad());
    }
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let s = decoded.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("urn:") {
        let valid = !rest.is_empty()
            && rest.contains(':')
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-:._".contains(c));
        return if valid { Ok(lower) } else { Err(bad()) };
    }
    let hex_part = lower.strip_prefix("mac:").unwrap_or(&lower);
    let digits: String = hex_part
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if digits.len() == 12 && digits.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(format!("mac:{digits}"))
    } else {
        Err(bad())
    }
}

/// Normalises an AoR to `user@host`: strips a `sip:`/`sips:` scheme, URI parameters and angle
/// brackets, lowercases the host (user parts are case-sensitive in SIP, RFC 3261 §19.1.4).
pub fn normalize_aor(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::BadAor(raw.to_owned());
    if raw.is_empty() || raw.len() > MAX_KEY_PART {
        return Err(bad());
    }
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let mut s = decoded.trim().trim_start_matches('<').trim_end_matches('>');
    for scheme in ["sips:", "sip:"] {
        // `get`, not indexing: the prefix may end inside a multi-byte character.
        if s.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        {
            s = &s[scheme.len()..];
            break;
        }
    }
    let s = s.split([';', '?', '>']).next().unwrap_or_default();
    let (user, host) = s.rsplit_once('@').ok_or_else(bad)?;
    let host = host.split(':').next().unwrap_or_default();
    let user_ok = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>\"@/".contains(c));
    if !user_ok {
        return Err(bad());
    }
    let host = normalize_domain(host).map_err(|_| bad())?;
    Ok(format!("{user}@{host}"))
}

/// Normalises a domain name (or IP literal) to lowercase and checks its characters.
pub fn normalize_domain(raw: &str) -> Result<String, KeyError> {
    let s = raw.trim().trim_end_matches('.');
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    if valid {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(KeyError::BadDomain(raw.to_owned()))
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_spellings_are_one_key() {
        for raw in [
            "MAC%3a00DF1E004CD0",
            "MAC:00df1e004cd0",
            "00:DF:1E:00:4C:D0",
            "00-df-1e-00-4c-d0",
            "00df1e004cd0",
        ] {
            assert_eq!(normalize_device_id(raw).as_deref(), Ok("mac:00df1e004cd0"));
        }
    }

    #[test]
    fn instance_urn_is_lowercased() {
        assert_eq!(
            normalize_device_id("<urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>").as_deref(),
            Ok("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        );
    }

    #[test]
    fn bad_device_ids_are_rejected() {
        for raw in [
            "",
            "00df1e004c",
            "zzdf1e004cd0",
            "urn:",
            "%zz",
            "urn:uuid:a b",
        ] {
            assert!(normalize_device_id(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn aor_normalisation() {
        assert_eq!(
            normalize_aor("sip:Alice@Example.COM;transport=tcp").as_deref(),
            Ok("Alice@example.com")
        );
        assert_eq!(
            normalize_aor("<SIPS:bob@host.example:5061>").as_deref(),
            Ok("bob@host.example")
        );
        assert!(normalize_aor("example.com").is_err());
        assert!(normalize_aor("@example.com").is_err());
    }

    #[test]
    fn a_multi_byte_character_where_the_scheme_would_end_is_an_error_not_a_panic() {
        // "abcé@host": the 4th byte, where "sip:" would end, is inside "é". Found by review:
        // `sip:abc%C3%A9@host` as a user Request-URI, or the same in a GET path.
        for raw in [
            "abc%C3%A9@host",
            "abc\u{e9}@host",
            "ab\u{e9}@host",
            "\u{e9}\u{e9}\u{e9}@h",
        ] {
            assert!(normalize_aor(raw).is_err(), "{raw}");
        }
        assert!(ProfileKey::user("sip:abc%C3%A9@host").is_err());
    }

    #[test]
    fn key_parts_round_trip() {
        let keys = [
            ProfileKey::device("00df1e004cd0").unwrap(),
            ProfileKey::user("alice@example.com").unwrap(),
            ProfileKey::local_network("Example.com").unwrap(),
            ProfileKey::class("acme", "Z100").unwrap(),
        ];
        for key in keys {
            assert_eq!(ProfileKey::from_parts(key.kind(), &key.id()), Ok(key));
        }
        assert!(matches!(
            ProfileKey::from_parts("printer", "x"),
            Err(KeyError::UnknownKind(_))
        ));
    }

    #[test]
    fn profile_type_tokens() {
        assert_eq!(
            ProfileType::from_token("Local-Network"),
            Some(ProfileType::LocalNetwork)
        );
        assert_eq!(ProfileType::from_token("application"), None);
    }
}

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
        // The id is `<vendor>:<model>`, split at the first colon: a colon in the vendor would
        // make a key that parses back as another.
        if ok(vendor) && ok(model) && !vendor.contains(':') {
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
/// `MAC00DF1E004CD0`, `MAC=00DF1E004CD0`,
/// `00:df:1e:00:4c:d0`, `00-DF-1E-00-4C-D0`, `00df1e004cd0`) or an instance URN
/// (`urn:uuid:...`, as in `+sip.instance`). Percent-escapes (`MAC%3a...`) are decoded first,
/// since phones put the id in the user part of a SIP URI.
pub fn normalize_device_id(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::BadDeviceId(raw.to_owned());
    if raw.is_empty() || raw.len() > MAX_KEY_PART {
        return Err(bad());
    }
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let s = decoded
        .trim_matches([' ', '\t'])
        .trim_start_matches('<')
        .trim_end_matches('>');
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("urn:") {
        let valid = !rest.is_empty()
            && rest.contains(':')
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-:._".contains(c));
        return if valid { Ok(lower) } else { Err(bad()) };
    }
    // Phones write `MAC:<mac>`, `MAC%3a<mac>` (decoded above), `MAC=<mac>` or `MAC<mac>`; a
    // bare MAC cannot start with `m`, so the prefix is never part of the address.
    let hex_part = lower
        .strip_prefix("mac")
        .map_or(lower.as_str(), |r| r.strip_prefix([':', '=']).unwrap_or(r));
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
/// brackets, lowercases the host (user parts are case-sensitive in SIP, RFC 3261 §19.1.4) and
/// drops a port (an IPv6 literal keeps its brackets).
///
/// The input is a URI as phones send it, so the user part's `%XX` escapes are decoded, once,
/// and the user is written back in one canonical spelling: RFC 3261 `unreserved` characters and
/// `&=+$,` as they are, every other byte as an uppercase `%XX`. `%41` and `A` are therefore one
/// user (RFC 3261 §19.1.4 compares them equal), and the result normalises to itself: a key
/// that went through the API once never turns into another key when it is parsed again.
pub fn normalize_aor(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::BadAor(raw.to_owned());
    if raw.is_empty() || raw.len() > MAX_KEY_PART {
        return Err(bad());
    }
    let mut s = raw
        .trim_matches([' ', '\t'])
        .trim_start_matches('<')
        .trim_end_matches('>');
    for scheme in ["sips:", "sip:"] {
        // `get`, not indexing: the prefix may end inside a multi-byte character.
        if s.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        {
            s = &s[scheme.len()..];
            break;
        }
    }
    // `@` cannot appear unescaped in a user part or password, so the first one ends them; `;`
    // and `?` can (RFC 3261 `user-unreserved`), so parameters and headers are only looked for
    // after it. A password (`user:password@`) is never part of a key.
    let (userinfo, rest) = s.split_once('@').ok_or_else(bad)?;
    let user = userinfo.split(':').next().unwrap_or_default();
    let host = rest.split([';', '?', '>']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']').ok_or_else(bad)?;
            &host[..end + 2]
        }
        None => host.split(':').next().unwrap_or_default(),
    };
    let user = decode_escapes(user).ok_or_else(bad)?;
    // Control characters have no business in an identity, escaped or not.
    if user.is_empty() || user.iter().any(|b| b.is_ascii_control()) {
        return Err(bad());
    }
    let user = percent_encoding::percent_encode(&user, USER_ESCAPED).to_string();
    let host = normalize_domain(host).map_err(|_| bad())?;
    if user.len() + 1 + host.len() > MAX_KEY_PART {
        return Err(bad());
    }
    Ok(format!("{user}@{host}"))
}

/// Bytes a canonical AoR user part escapes: all but RFC 3261 `unreserved` (alphanumerics and
/// `-_.!~*'()`) and the `user-unreserved` characters that cannot be mistaken for a URI
/// delimiter or a URL path separator (`&=+$,`).
const USER_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',');

/// Decodes `%XX` escapes into bytes; `None` when a `%` is not followed by two hex digits
/// (RFC 3261 and RFC 3986 `escaped`/`pct-encoded`: `%+a` or `%4` is malformed, not literal).
fn decode_escapes(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| percent_encoding::percent_decode(bytes).collect())
}

/// Normalises a domain name (or IP literal) to lowercase and checks its characters. An IPv6
/// address, bracketed or not, comes back bracketed in its RFC 5952 form (`[2001:db8::1]`);
/// brackets around anything else, or a colon outside them, are refused, so the result always
/// normalises to itself.
pub fn normalize_domain(raw: &str) -> Result<String, KeyError> {
    let bad = || KeyError::BadDomain(raw.to_owned());
    let s = raw.trim_matches([' ', '\t']);
    let literal = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(v6) = literal.parse::<std::net::Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    let s = s.trim_end_matches('.');
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    if valid {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(bad())
    }
}

/// Decodes `%XX` escapes (one layer: a URL path segment, a SIP URI user part); `None` for a
/// malformed escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(decode_escapes(s)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_spellings_are_one_key() {
        for raw in [
            "MAC%3a00DF1E004CD0",
            "MAC%3A00df1e004cd0",
            "MAC00DF1E004CD0",
            "MAC=00df1e004cd0",
            "mac=00-df-1e-00-4c-d0",
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
    fn a_multi_byte_character_where_the_scheme_would_end_is_escaped_not_a_panic() {
        // "abcé@host": the 4th byte, where "sip:" would end, is inside "é". Found by review:
        // `sip:abc%C3%A9@host` as a user Request-URI, or the same in a GET path.
        for raw in ["abc%C3%A9@host", "abc%c3%a9@host", "abc\u{e9}@host"] {
            assert_eq!(normalize_aor(raw).as_deref(), Ok("abc%C3%A9@host"), "{raw}");
        }
        assert_eq!(
            normalize_aor("\u{e9}\u{e9}\u{e9}@h").as_deref(),
            Ok("%C3%A9%C3%A9%C3%A9@h")
        );
        assert!(ProfileKey::user("sip:abc%C3%A9@host").is_ok());
    }

    #[test]
    fn an_escaped_character_and_the_character_are_one_user() {
        assert_eq!(normalize_aor("sip:%61lice@h"), normalize_aor("alice@h"));
        assert_eq!(normalize_aor("a%3bb@h").as_deref(), Ok("a%3Bb@h"));
    }

    #[test]
    fn malformed_escapes_and_control_characters_are_refused() {
        // `u8::from_str_radix` took "+a" as a hex number, so `%+a` decoded to 0x0a.
        for raw in ["%+a@h", "a%4@h", "a%@h", "a%zz@h"] {
            assert!(normalize_aor(raw).is_err(), "{raw:?}");
            assert_eq!(percent_decode(raw), None, "{raw:?}");
        }
        for raw in ["a%00b@h", "a%0Ab@h", "a\tb@h"] {
            assert!(normalize_aor(raw).is_err(), "{raw:?}");
        }
        assert!(normalize_device_id("MAC%+a00DF1E004CD0").is_err());
    }

    #[test]
    fn normalised_aors_normalise_to_themselves() {
        // Each of these changed on a second pass before: the escape was decoded again, or a
        // second `sip:` was stripped.
        for raw in [
            "%25@o",
            "a%2541@example.com",
            "sip:sip:a@example.com",
            "sip:a;b?c@example.com;transport=udp?subject=x",
            "<sip:A%20b@Example.com:5060;transport=tcp>",
            "bob@[2001:DB8::1]:5061",
            "x@[::1]",
        ] {
            let once = normalize_aor(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(normalize_aor(&once).as_deref(), Ok(once.as_str()), "{raw}");
        }
        assert_eq!(normalize_aor("%25@o").as_deref(), Ok("%25@o"));
        // `;` and `?` belong to the user part before the `@`, to parameters after it.
        assert_eq!(
            normalize_aor("sip:a;b?c@Example.com;transport=udp").as_deref(),
            Ok("a%3Bb%3Fc@example.com")
        );
        assert_eq!(
            normalize_aor("sip:alice:secret@h").as_deref(),
            Ok("alice@h")
        );
        assert!(normalize_aor("a@b@example.com").is_err());
        // Found by the key_normalize fuzz target: a lone `[` passed as a domain once and
        // was refused the second time.
        assert!(normalize_aor("\t)  @  [ ").is_err());
        for raw in ["[", "]", "[example.com]", "a:b", "[::1", "[::1]:5060"] {
            assert!(normalize_domain(raw).is_err(), "{raw:?}");
        }
        assert_eq!(
            normalize_domain("2001:DB8:0::1").as_deref(),
            Ok("[2001:db8::1]")
        );
        assert_eq!(
            normalize_domain("[2001:db8::1]").as_deref(),
            Ok("[2001:db8::1]")
        );
        assert_eq!(
            normalize_aor("bob@[2001:DB8::1]:5061").as_deref(),
            Ok("bob@[2001:db8::1]")
        );
    }

    #[test]
    fn a_colon_in_a_class_vendor_is_refused_since_the_id_would_split_elsewhere() {
        assert!(ProfileKey::class("a:b", "c").is_err());
        let key = ProfileKey::class("acme", "Z:100").expect("colon in model");
        assert_eq!(ProfileKey::from_parts("class", &key.id()), Ok(key));
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

//! The stored form of a subscription in Redis: a header the Lua scripts can read and edit
//! in place, followed by an opaque tail only Rust reads.
//!
//! ```text
//! offset  size  field
//! 0       1     flags: bit0 subject indexed implicitly (see below), bit1 etag present,
//!               bit2 the id is in the subject's bucket,
//!               bits 4..7 format version (1)
//! 1       8     expires_at_ms, big endian
//! 9       4     local_cseq, big endian
//! 13      1     profile type (0 device, 1 user, 2 local-network)
//! 14      2+n   subject key (u16 length, then the key's canonical string)
//! ..      2+n   confirmed entity tag
//! ..      2+n   +sip.instance
//! ..      1     number of dependency keys, then per key 2+n (n = 0 means "the subject")
//! ..            tail: postcard of [`Tail`] (dialog, transport, package, Accept, ...)
//! ```
//!
//! "Implicit" means the subscription is stored in the bucket its subject hashes to and
//! depends on its subject: a lookup by that key scans the one bucket instead of reading a
//! per-key index entry. That is the common case (a phone subscribing for its own device
//! profile) and saves the largest index of all, one entry per device.
//!
//! The tail leaves out what the header already says and what is usually redundant: the local
//! tag when it is the id's own tag, the remote URI when it equals the local URI.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sip_core::dialog::Dialog;
use sip_core::transport::Transport;
use uaprof_api::{ProfileKey, ProfileType};

use crate::store::{PackageName, StoreError, SubId, Subscription};

const VERSION: u8 = 1;
pub const FLAG_IMPLICIT: u8 = 1;
const FLAG_ETAG: u8 = 2;
/// The id places the subscription in its subject's bucket (scripts re-derive bit0 from it).
const FLAG_COLOCATED: u8 = 4;

#[derive(Serialize, Deserialize)]
struct Tail {
    call_id: String,
    /// `None` when it is the subscription id's own tag.
    local_tag: Option<String>,
    remote_tag: String,
    local_uri: String,
    /// `None` when equal to `local_uri`.
    remote_uri: Option<String>,
    remote_target: String,
    route_set: Vec<String>,
    secure: bool,
    remote_cseq: u32,
    transport: Transport,
    source: SocketAddr,
    package: PackageName,
    vendor: Option<String>,
    model: Option<String>,
    version: Option<String>,
    accept: Option<Vec<AcceptValue>>,
    event_id: Option<String>,
}

/// Accept values phones send, stored as one byte.
const KNOWN_ACCEPT: [&str; 8] = [
    "message/external-body",
    "multipart/mixed",
    "application/xml",
    "text/xml",
    "text/plain",
    "application/octet-stream",
    "*/*",
    "application/*",
];

#[derive(Serialize, Deserialize)]
enum AcceptValue {
    Known(u8),
    Other(String),
}

impl AcceptValue {
    fn pack(v: &str) -> Self {
        KNOWN_ACCEPT
            .iter()
            .position(|k| *k == v)
            .and_then(|i| u8::try_from(i).ok())
            .map_or_else(|| Self::Other(v.to_owned()), Self::Known)
    }

    fn unpack(self) -> Option<String> {
        match self {
            Self::Known(i) => KNOWN_ACCEPT.get(usize::from(i)).map(|s| (*s).to_owned()),
            Self::Other(s) => Some(s),
        }
    }
}

/// Dialog strings repeat the phone's address and identity: a Contact of
/// `sip:0004f2aabbcc@10.1.2.3:5060` from 10.1.2.3:5060 for device mac:0004f2aabbcc. Each
/// occurrence of those tokens is stored as one control byte (which SIP text never holds; a
/// string that does is stored verbatim behind a 0 byte).
struct Tokens([String; 3]);

impl Tokens {
    fn new(source: SocketAddr, subject: &ProfileKey) -> Self {
        let id = match subject {
            ProfileKey::Device(d) => d.strip_prefix("mac:").unwrap_or(d).to_owned(),
            ProfileKey::User(a) => a.split('@').next().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        Tokens([source.ip().to_string(), id, source.port().to_string()])
    }

    fn squeeze(&self, s: &str) -> String {
        if s.bytes().any(|b| b < 4) {
            return format!("\0{s}");
        }
        let mut out = s.to_owned();
        for (i, t) in self.0.iter().enumerate() {
            if t.len() >= 3 && !t.bytes().any(|b| b < 4) {
                out = out.replace(t.as_str(), &char::from(i as u8 + 1).to_string());
            }
        }
        out
    }

    fn expand(&self, s: String) -> String {
        if let Some(raw) = s.strip_prefix('\0') {
            return raw.to_owned();
        }
        if !s.bytes().any(|b| b < 4) {
            return s;
        }
        let mut out = String::with_capacity(s.len() + 32);
        for c in s.chars() {
            match c {
                '\u{1}' | '\u{2}' | '\u{3}' => out.push_str(&self.0[c as usize - 1]),
                c => out.push(c),
            }
        }
        out
    }
}

/// A key as stored (record header, index set names, hints): a kind byte, then the id.
/// A MAC device id takes 6 raw bytes; a class is `vendor/model` (neither may contain `/`).
/// Lossless and never re-normalised, so a key decodes to exactly the key that was stored.
pub fn key_bytes(key: &ProfileKey) -> Vec<u8> {
    let tagged = |tag: u8, s: &str| {
        let mut v = Vec::with_capacity(1 + s.len());
        v.push(tag);
        v.extend_from_slice(s.as_bytes());
        v
    };
    match key {
        ProfileKey::Device(s) => match mac_bytes(s) {
            Some(mac) => {
                let mut v = vec![1];
                v.extend_from_slice(&mac);
                v
            }
            None => tagged(2, s),
        },
        ProfileKey::User(s) => tagged(3, s),
        ProfileKey::LocalNetwork(s) => tagged(4, s),
        ProfileKey::Class { vendor, model } => tagged(5, &format!("{vendor}/{model}")),
    }
}

/// `mac:` and 12 lowercase hex digits, as 6 bytes (only if that renders back identically).
fn mac_bytes(s: &str) -> Option<[u8; 6]> {
    let hex = s.strip_prefix("mac:")?;
    hex_bytes::<6>(hex)
}

fn hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

pub fn parse_key(b: &[u8]) -> Option<ProfileKey> {
    let (tag, rest) = b.split_first()?;
    let text = || std::str::from_utf8(rest).ok().map(str::to_owned);
    Some(match tag {
        1 if rest.len() == 6 => ProfileKey::Device(format!("mac:{}", hex::encode(rest))),
        2 => ProfileKey::Device(text()?),
        3 => ProfileKey::User(text()?),
        4 => ProfileKey::LocalNetwork(text()?),
        5 => {
            let t = text()?;
            let (vendor, model) = t.split_once('/')?;
            ProfileKey::Class {
                vendor: vendor.to_owned(),
                model: model.to_owned(),
            }
        }
        _ => return None,
    })
}

/// A UUID in canonical lowercase 8-4-4-4-12 form, as 16 bytes.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
    if s.len() != 36 || dashes != [8, 13, 18, 23] {
        return None;
    }
    hex_bytes::<16>(&s.replace('-', ""))
}

fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A string field (entity tag, `+sip.instance`) as stored. The usual shapes take their
/// binary size: our 20-hex-digit entity tags 10 bytes, a `<urn:uuid:...>` instance 16.
/// The empty string stays empty. Lua only compares these for equality.
pub fn compact(s: &str) -> Vec<u8> {
    let tagged = |tag: u8, body: &[u8]| {
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(body);
        v
    };
    if s.is_empty() {
        return Vec::new();
    }
    if let Some(b) = hex_bytes::<10>(s) {
        return tagged(1, &b);
    }
    if let Some(b) = s
        .strip_prefix("<urn:uuid:")
        .and_then(|r| r.strip_suffix('>'))
        .and_then(uuid_bytes)
    {
        return tagged(2, &b);
    }
    if let Some(b) = s.strip_prefix("urn:uuid:").and_then(uuid_bytes) {
        return tagged(3, &b);
    }
    tagged(0, s.as_bytes())
}

pub fn expand(b: &[u8]) -> Option<String> {
    let Some((tag, rest)) = b.split_first() else {
        return Some(String::new());
    };
    Some(match tag {
        0 => std::str::from_utf8(rest).ok()?.to_owned(),
        1 if rest.len() == 10 => hex::encode(rest),
        2 if rest.len() == 16 => format!("<urn:uuid:{}>", uuid_text(rest)),
        3 if rest.len() == 16 => format!("urn:uuid:{}", uuid_text(rest)),
        _ => return None,
    })
}

pub fn type_byte(t: ProfileType) -> u8 {
    match t {
        ProfileType::Device => 0,
        ProfileType::User => 1,
        ProfileType::LocalNetwork => 2,
    }
}

fn type_from(b: u8) -> Option<ProfileType> {
    match b {
        0 => Some(ProfileType::Device),
        1 => Some(ProfileType::User),
        2 => Some(ProfileType::LocalNetwork),
        _ => None,
    }
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) -> Result<(), StoreError> {
    let n = u16::try_from(s.len())
        .map_err(|_| StoreError::Other(format!("field too long to store ({} bytes)", s.len())))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

/// The dependency section (count, then keys) and whether the subject is implicit.
pub fn deps_section(
    sub_subject: &ProfileKey,
    depends_on: &[ProfileKey],
    colocated: bool,
) -> Result<(Vec<u8>, bool), StoreError> {
    let implicit = colocated && depends_on.contains(sub_subject);
    let n = u8::try_from(depends_on.len())
        .map_err(|_| StoreError::Other("more than 255 dependency keys".into()))?;
    let mut out = vec![n];
    for k in depends_on {
        if implicit && k == sub_subject {
            out.extend_from_slice(&0u16.to_be_bytes());
        } else {
            put_bytes(&mut out, &key_bytes(k))?;
        }
    }
    Ok((out, implicit))
}

/// Encodes `sub`; `colocated` says whether its id places it in its subject's bucket.
pub fn encode(sub: &Subscription, colocated: bool) -> Result<Vec<u8>, StoreError> {
    let (deps, implicit) = deps_section(&sub.subject, &sub.depends_on, colocated)?;
    let mut out = Vec::with_capacity(256);
    let mut flags = VERSION << 4;
    if implicit {
        flags |= FLAG_IMPLICIT;
    }
    if colocated {
        flags |= FLAG_COLOCATED;
    }
    if sub.confirmed_etag.is_some() {
        flags |= FLAG_ETAG;
    }
    out.push(flags);
    out.extend_from_slice(&sub.expires_at_ms.to_be_bytes());
    out.extend_from_slice(&sub.local_cseq.to_be_bytes());
    out.push(type_byte(sub.profile_type));
    put_bytes(&mut out, &key_bytes(&sub.subject))?;
    put_bytes(
        &mut out,
        &compact(sub.confirmed_etag.as_deref().unwrap_or("")),
    )?;
    put_bytes(&mut out, &compact(sub.instance.as_deref().unwrap_or("")))?;
    out.extend_from_slice(&deps);
    let d = &sub.dialog;
    let t = Tokens::new(sub.source, &sub.subject);
    let tail = Tail {
        call_id: t.squeeze(&d.call_id),
        local_tag: (d.local_tag != sub.id.tag()).then(|| d.local_tag.clone()),
        remote_tag: d.remote_tag.clone(),
        local_uri: t.squeeze(&d.local_uri),
        remote_uri: (d.remote_uri != d.local_uri).then(|| t.squeeze(&d.remote_uri)),
        remote_target: t.squeeze(&d.remote_target),
        route_set: d.route_set.iter().map(|r| t.squeeze(r)).collect(),
        secure: d.secure,
        remote_cseq: d.remote_cseq,
        transport: sub.transport,
        source: sub.source,
        package: sub.package,
        vendor: sub.vendor.clone(),
        model: sub.model.clone(),
        version: sub.version.clone(),
        accept: sub
            .accept
            .as_ref()
            .map(|a| a.iter().map(|v| AcceptValue::pack(v)).collect()),
        event_id: sub.event_id.clone(),
    };
    postcard::to_extend(&tail, out).map_err(|e| StoreError::Other(format!("encode: {e}")))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        self.take(usize::from(n))
    }
}

/// A stored record's expiry, Unix milliseconds.
pub fn expires_of(buf: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(buf.get(1..9)?.try_into().ok()?))
}

/// The explicit dependency keys of a stored record (those with an index set; the implicit
/// subject has none), read as the scripts read them. `None` if the header is malformed.
pub fn explicit_keys(buf: &[u8]) -> Option<Vec<Vec<u8>>> {
    // flags, expires, cseq, profile type
    let mut r = Reader { buf, pos: 14 };
    for _ in 0..3 {
        r.field()?;
    }
    let n = r.u8()?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let k = r.field()?;
        if !k.is_empty() {
            out.push(k.to_vec());
        }
    }
    Some(out)
}

/// Decodes a stored record; `None` if it is not a record this version wrote.
pub fn decode(id: SubId, buf: &[u8]) -> Option<Subscription> {
    let mut r = Reader { buf, pos: 0 };
    let flags = r.u8()?;
    if flags >> 4 != VERSION {
        return None;
    }
    let expires_at_ms = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let local_cseq = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let profile_type = type_from(r.u8()?)?;
    let subject = parse_key(r.field()?)?;
    let etag = expand(r.field()?)?;
    let confirmed_etag = (flags & FLAG_ETAG != 0).then_some(etag);
    let instance = Some(expand(r.field()?)?).filter(|s| !s.is_empty());
    let n = r.u8()?;
    let mut depends_on = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let k = r.field()?;
        depends_on.push(if k.is_empty() {
            subject.clone()
        } else {
            parse_key(k)?
        });
    }
    let tail: Tail = postcard::from_bytes(buf.get(r.pos..)?).ok()?;
    let t = Tokens::new(tail.source, &subject);
    let local_uri = t.expand(tail.local_uri);
    let accept = match tail.accept {
        Some(a) => Some(
            a.into_iter()
                .map(AcceptValue::unpack)
                .collect::<Option<Vec<_>>>()?,
        ),
        None => None,
    };
    Some(Subscription {
        id,
        dialog: Dialog {
            call_id: t.expand(tail.call_id),
            local_tag: tail.local_tag.unwrap_or_else(|| id.tag()),
            remote_tag: tail.remote_tag,
            remote_uri: tail
                .remote_uri
                .map_or_else(|| local_uri.clone(), |u| t.expand(u)),
            local_uri,
            remote_target: t.expand(tail.remote_target),
            route_set: tail.route_set.into_iter().map(|r| t.expand(r)).collect(),
            secure: tail.secure,
            remote_cseq: tail.remote_cseq,
        },
        transport: tail.transport,
        source: tail.source,
        package: tail.package,
        profile_type,
        subject,
        vendor: tail.vendor,
        model: tail.model,
        version: tail.version,
        instance,
        accept,
        event_id: tail.event_id,
        expires_at_ms,
        local_cseq,
        confirmed_etag,
        depends_on,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::sample;

    #[test]
    fn round_trips_and_stays_small() {
        let mut sub = sample(0x1234, "mac:0004f2aabbcc");
        sub.instance = Some("<urn:uuid:00000000-0000-1000-8000-0004f2aabbcc>".into());
        sub.confirmed_etag = Some("0123456789abcdef0123".into());
        sub.accept = Some(vec!["message/external-body".into()]);
        for colocated in [false, true] {
            let bytes = encode(&sub, colocated).expect("encode");
            assert_eq!(decode(sub.id, &bytes), Some(sub.clone()));
            assert!(bytes.len() < 220, "record is {} bytes", bytes.len());
        }
        let implicit = encode(&sub, true).expect("encode");
        assert_eq!(implicit[0] & FLAG_IMPLICIT, FLAG_IMPLICIT);
        sub.confirmed_etag = Some(String::new());
        sub.dialog.local_tag = "other".into();
        sub.dialog.remote_uri = "sip:x@y".into();
        let bytes = encode(&sub, false).expect("encode");
        assert_eq!(decode(sub.id, &bytes), Some(sub.clone()));
        // A check-sync record keeps its kind (records written before it decode as before:
        // the new package is the last variant).
        sub.package = PackageName::CheckSync;
        sub.instance = Some("check-sync:mac:0004f2aabbcc".into());
        let bytes = encode(&sub, true).expect("encode");
        assert_eq!(decode(sub.id, &bytes), Some(sub));
    }

    #[test]
    fn phone_shaped_dialogs_shrink_and_round_trip() {
        let mut sub = sample(0x1234, "mac:0004f2aabbcc");
        sub.source = "10.1.2.3:5062".parse().expect("addr");
        sub.dialog.remote_target = "sip:0004f2aabbcc@10.1.2.3:5062".into();
        sub.dialog.call_id = "1f2e3d4c@10.1.2.3".into();
        sub.dialog.local_uri = "sip:0004f2aabbcc@voip.example.com".into();
        sub.dialog.route_set = vec!["<sip:10.1.2.3;lr>".into()];
        sub.accept = Some(vec!["message/external-body".into(), "x/y".into()]);
        let plain = encode(&sub, false).expect("encode");
        assert_eq!(decode(sub.id, &plain), Some(sub.clone()));
        // Strings holding the token bytes themselves are kept verbatim.
        sub.dialog.call_id = "\u{1}odd\u{2}@10.1.2.3".into();
        sub.dialog.remote_uri = "\\0\u{3}".into();
        let odd = encode(&sub, false).expect("encode");
        assert_eq!(decode(sub.id, &odd), Some(sub));
    }

    #[test]
    fn compact_strings_round_trip() {
        for s in [
            "",
            "0123456789abcdef0123",
            "0123456789ABCDEF0123",
            "<urn:uuid:00000000-0000-1000-8000-0004f2aabbcc>",
            "urn:uuid:00000000-0000-1000-8000-0004f2aabbcc",
            "<urn:uuid:00000000-0000-1000-8000-0004F2AABBCC>",
            "<urn:uuid:0000000000001000-8000-0004f2aabbcc---->",
            "anything",
        ] {
            assert_eq!(expand(&compact(s)).as_deref(), Some(s));
        }
        assert_eq!(compact("0123456789abcdef0123").len(), 11);
        assert_eq!(
            compact("<urn:uuid:00000000-0000-1000-8000-0004f2aabbcc>").len(),
            17
        );
    }

    #[test]
    fn keys_round_trip_exactly() {
        for k in [
            ProfileKey::Device("mac:0004F2aabbcc".into()),
            ProfileKey::Device("urn:uuid:x".into()),
            ProfileKey::User("sip:a@x".into()),
            ProfileKey::Class {
                vendor: "a:b".into(),
                model: "c".into(),
            },
            ProfileKey::LocalNetwork("example.com".into()),
            ProfileKey::Device("mac:0004f2aabbcc".into()),
        ] {
            assert_eq!(parse_key(&key_bytes(&k)), Some(k));
        }
    }

    #[test]
    fn explicit_keys_leave_out_the_implicit_subject() {
        let sub = sample(0x1234, "mac:0004f2aabbcc");
        let class = key_bytes(&sub.depends_on[1]);
        let subject = key_bytes(&sub.subject);
        let colocated = encode(&sub, true).expect("encode");
        assert_eq!(explicit_keys(&colocated), Some(vec![class.clone()]));
        let apart = encode(&sub, false).expect("encode");
        assert_eq!(explicit_keys(&apart), Some(vec![subject, class]));
        assert_eq!(explicit_keys(&apart[..20]), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(SubId(1), b"").is_none());
        assert!(decode(SubId(1), &[0x10; 40]).is_none());
        assert!(decode(SubId(1), &[0x20; 40]).is_none());
    }
}

//! The Kafka event schema, `uaprof.events.v1` (`proto/uaprof/events/v1/events.proto`).
//!
//! * [`proto`]: the generated messages.
//! * [`decode_change`] / [`encode_change`]: a change event (record key + value) to and from
//!   the domain [`Change`], with every structural check; the content tier checks the rest
//!   (names, types, sizes, versions) when it applies the change.
//! * [`Applied`] with [`encode_applied`] / [`decode_applied`]: the record the content tier
//!   publishes once a change is durable.
//! * [`record_key`] / [`parse_record_key`]: the canonical `<kind>/<id>` record key.
//!
//! Nothing here does I/O; the `bus` crate moves these bytes through Kafka.

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/uaprof.events.v1.rs"));
}

use prost::Message;
use uaprof_api::change::valid_change_id;
use uaprof_api::{Change, ChangeOp, KeyError, ProfileKey, ResyncTarget, Timing};

/// Why a record is not a valid event. Every variant is a permanent rejection: the record is
/// dead-lettered with [`EventError::reason`] and never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("not a valid {0} protobuf: {1}")]
    Malformed(&'static str, String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("invalid change id {0:?} (1-128 visible ASCII characters)")]
    BadChangeId(String),
    #[error("record key {record:?} is not the canonical key {canonical:?} of the event")]
    KeyMismatch { record: String, canonical: String },
    #[error("record key {0:?} is not a canonical profile key")]
    BadRecordKey(String),
    #[error("both effective_by_seconds and rollout_window_seconds are set")]
    BothTimings,
}

impl EventError {
    /// Short label for metrics and the dead-letter `uaprof-reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(..) => "malformed",
            Self::Missing(_) => "missing_field",
            Self::BadKey(_) => "bad_key",
            Self::BadChangeId(_) => "bad_change_id",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::BadRecordKey(_) => "bad_record_key",
            Self::BothTimings => "bad_timing",
        }
    }
}

/// The record key of a change to `key`: its canonical string form.
pub fn record_key(key: &ProfileKey) -> String {
    key.to_string()
}

/// Parses a canonical `<kind>/<id>` key; a spelling that is not canonical is refused, since
/// it would land in another partition than the key's other changes.
pub fn parse_record_key(raw: &str) -> Result<ProfileKey, EventError> {
    let bad = || EventError::BadRecordKey(raw.to_owned());
    let (kind, id) = raw.split_once('/').ok_or_else(bad)?;
    let key = ProfileKey::from_parts(kind, id).map_err(|_| bad())?;
    if key.to_string() == raw {
        Ok(key)
    } else {
        Err(bad())
    }
}

fn key_from_wire(k: Option<proto::ProfileKey>) -> Result<ProfileKey, EventError> {
    use proto::profile_key::Kind;
    let kind = k.and_then(|k| k.kind).ok_or(EventError::Missing("key"))?;
    Ok(match kind {
        Kind::Device(id) => ProfileKey::device(&id)?,
        Kind::User(aor) => ProfileKey::user(&aor)?,
        Kind::LocalNetwork(domain) => ProfileKey::local_network(&domain)?,
        Kind::DeviceClass(c) => ProfileKey::class(&c.vendor, &c.model)?,
    })
}

fn key_to_wire(key: &ProfileKey) -> proto::ProfileKey {
    use proto::profile_key::Kind;
    let kind = match key {
        ProfileKey::Device(id) => Kind::Device(id.clone()),
        ProfileKey::User(aor) => Kind::User(aor.clone()),
        ProfileKey::LocalNetwork(d) => Kind::LocalNetwork(d.clone()),
        ProfileKey::Class { vendor, model } => Kind::DeviceClass(proto::DeviceClass {
            vendor: vendor.clone(),
            model: model.clone(),
        }),
    };
    proto::ProfileKey { kind: Some(kind) }
}

/// Decodes one change record. `record_key` is the Kafka record's key, which must be the
/// canonical form of the event's key.
pub fn decode_change(record_key: Option<&[u8]>, payload: &[u8]) -> Result<Change, EventError> {
    use proto::profile_change::{Operation, Timing as WireTiming};
    let ev = proto::ProfileChange::decode(payload)
        .map_err(|e| EventError::Malformed("uaprof.events.v1.ProfileChange", e.to_string()))?;
    if !valid_change_id(&ev.change_id) {
        return Err(EventError::BadChangeId(ev.change_id));
    }
    let key = key_from_wire(ev.key)?;
    let canonical = key.to_string();
    let record = record_key
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    if record != canonical {
        return Err(EventError::KeyMismatch { record, canonical });
    }
    let op = match ev.operation.ok_or(EventError::Missing("operation"))? {
        Operation::PutDocument(p) => ChangeOp::PutDocument {
            name: p.name,
            content_type: p.content_type,
            bytes: p.content,
        },
        Operation::DeleteDocument(d) => ChangeOp::DeleteDocument { name: d.name },
        Operation::DeleteKey(_) => ChangeOp::DeleteKey,
        Operation::SetDefaultUser(u) => {
            ChangeOp::SetDefaultUser(Some(u.user).filter(|u| !u.is_empty()))
        }
        Operation::SetResync(r) => ChangeOp::SetResync(resync_from_wire(r)?),
        Operation::SetDeviceAttributes(a) => ChangeOp::SetAttributes {
            default_user: Some(a.default_user).filter(|u| !u.is_empty()),
            resync: match a.resync {
                Some(r) => resync_from_wire(r)?,
                None => None,
            },
        },
    };
    let timing = match ev.timing {
        None => Timing::default(),
        Some(WireTiming::EffectiveBySeconds(s)) => Timing {
            effective_by: Some(s),
            rollout_window: None,
        },
        Some(WireTiming::RolloutWindowSeconds(s)) => Timing {
            effective_by: None,
            rollout_window: Some(s),
        },
    };
    Ok(Change {
        change_id: ev.change_id,
        key,
        version: Some(ev.version).filter(|v| *v != 0),
        op,
        timing,
        producer: ev.producer,
        occurred_unix_ms: ev.occurred_unix_ms,
    })
}

/// Encodes a change as (record key, value).
pub fn encode_change(change: &Change) -> Result<(String, Vec<u8>), EventError> {
    use proto::profile_change::{Operation, Timing as WireTiming};
    let operation = match &change.op {
        ChangeOp::PutDocument {
            name,
            content_type,
            bytes,
        } => Operation::PutDocument(proto::PutDocument {
            name: name.clone(),
            content_type: content_type.clone(),
            content: bytes.clone(),
        }),
        ChangeOp::DeleteDocument { name } => {
            Operation::DeleteDocument(proto::DeleteDocument { name: name.clone() })
        }
        ChangeOp::DeleteKey => Operation::DeleteKey(proto::DeleteKey {}),
        ChangeOp::SetDefaultUser(u) => Operation::SetDefaultUser(proto::SetDefaultUser {
            user: u.clone().unwrap_or_default(),
        }),
        ChangeOp::SetResync(t) => Operation::SetResync(resync_to_wire(t.as_ref())),
        ChangeOp::SetAttributes {
            default_user,
            resync,
        } => Operation::SetDeviceAttributes(proto::SetDeviceAttributes {
            default_user: default_user.clone().unwrap_or_default(),
            resync: resync.as_ref().map(|t| resync_to_wire(Some(t))),
        }),
    };
    let timing = match (change.timing.effective_by, change.timing.rollout_window) {
        (Some(_), Some(_)) => return Err(EventError::BothTimings),
        (Some(s), None) => Some(WireTiming::EffectiveBySeconds(s)),
        (None, Some(s)) => Some(WireTiming::RolloutWindowSeconds(s)),
        (None, None) => None,
    };
    let ev = proto::ProfileChange {
        change_id: change.change_id.clone(),
        key: Some(key_to_wire(&change.key)),
        version: change.version.unwrap_or(0),
        operation: Some(operation),
        timing,
        producer: change.producer.clone(),
        occurred_unix_ms: change.occurred_unix_ms,
    };
    Ok((record_key(&change.key), ev.encode_to_vec()))
}

/// A `SetResync` as a target: an empty contact clears it, and then nothing else may be set.
fn resync_from_wire(r: proto::SetResync) -> Result<Option<ResyncTarget>, EventError> {
    let opt = |s: String| Some(s).filter(|s| !s.is_empty());
    if r.contact.is_empty() {
        if !(r.event.is_empty() && r.username.is_empty() && r.password.is_empty()) {
            return Err(EventError::Missing("set_resync.contact"));
        }
        return Ok(None);
    }
    Ok(Some(ResyncTarget {
        contact: r.contact,
        event: opt(r.event),
        username: opt(r.username),
        password: opt(r.password),
    }))
}

fn resync_to_wire(t: Option<&ResyncTarget>) -> proto::SetResync {
    let Some(t) = t else {
        return proto::SetResync::default();
    };
    proto::SetResync {
        contact: t.contact.clone(),
        event: t.event.clone().unwrap_or_default(),
        username: t.username.clone().unwrap_or_default(),
        password: t.password.clone().unwrap_or_default(),
    }
}

/// What the content tier published after applying a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub change_id: String,
    pub key: ProfileKey,
    pub version: u64,
    pub timing: Timing,
    pub occurred_unix_ms: u64,
    pub applied_unix_ms: u64,
    pub applied_by: String,
    /// The change could change the device's resync target.
    pub resync: bool,
}

impl Applied {
    /// The change as the notifier's feed sees it (`seq` is assigned by the consumer).
    pub fn to_feed(&self, seq: u64) -> uaprof_api::ProfileChange {
        uaprof_api::ProfileChange {
            seq,
            key: self.key.clone(),
            version: self.version,
            effective_by: self.timing.effective_by,
            rollout_window: self.timing.rollout_window,
            traceparent: None,
            resync: self.resync,
        }
    }
}

pub fn encode_applied(a: &Applied) -> Vec<u8> {
    proto::ProfileApplied {
        change_id: a.change_id.clone(),
        key: record_key(&a.key),
        version: a.version,
        effective_by_seconds: a.timing.effective_by,
        rollout_window_seconds: a.timing.rollout_window,
        occurred_unix_ms: a.occurred_unix_ms,
        applied_unix_ms: a.applied_unix_ms,
        applied_by: a.applied_by.clone(),
        resync: a.resync,
    }
    .encode_to_vec()
}

pub fn decode_applied(payload: &[u8]) -> Result<Applied, EventError> {
    let a = proto::ProfileApplied::decode(payload)
        .map_err(|e| EventError::Malformed("uaprof.events.v1.ProfileApplied", e.to_string()))?;
    Ok(Applied {
        change_id: a.change_id,
        key: parse_record_key(&a.key)?,
        version: a.version,
        timing: Timing {
            effective_by: a.effective_by_seconds,
            rollout_window: a.rollout_window_seconds,
        },
        occurred_unix_ms: a.occurred_unix_ms,
        applied_unix_ms: a.applied_unix_ms,
        applied_by: a.applied_by,
        resync: a.resync,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn sample() -> Change {
        Change {
            change_id: "c-1".into(),
            key: ProfileKey::class("acme", "Z100").expect("class"),
            version: Some(7),
            op: ChangeOp::PutDocument {
                name: "a.xml".into(),
                content_type: "application/xml".into(),
                bytes: Bytes::from_static(b"<a/>"),
            },
            timing: Timing {
                effective_by: None,
                rollout_window: Some(30),
            },
            producer: "oss".into(),
            occurred_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn change_round_trip() {
        let c = sample();
        let (key, value) = encode_change(&c).expect("encode");
        assert_eq!(key, "class/acme:Z100");
        assert_eq!(decode_change(Some(key.as_bytes()), &value), Ok(c));
    }

    #[test]
    fn version_zero_means_next() {
        let mut c = sample();
        c.version = None;
        let (key, value) = encode_change(&c).expect("encode");
        assert_eq!(
            decode_change(Some(key.as_bytes()), &value).map(|c| c.version),
            Ok(None)
        );
    }

    #[test]
    fn structural_errors_are_named() {
        let (key, value) = encode_change(&sample()).expect("encode");
        assert_eq!(
            decode_change(Some(b"class/acme:Z200"), &value).map_err(|e| e.reason()),
            Err("key_mismatch")
        );
        assert_eq!(
            decode_change(None, &value).map_err(|e| e.reason()),
            Err("key_mismatch")
        );
        assert_eq!(
            decode_change(Some(key.as_bytes()), b"\xff\xff\xff").map_err(|e| e.reason()),
            Err("malformed")
        );
        let mut ev = proto::ProfileChange::decode(value.as_slice()).expect("decode");
        ev.operation = None;
        assert_eq!(
            decode_change(Some(key.as_bytes()), &ev.encode_to_vec()).map_err(|e| e.reason()),
            Err("missing_field")
        );
        ev.change_id = String::new();
        assert_eq!(
            decode_change(Some(key.as_bytes()), &ev.encode_to_vec()).map_err(|e| e.reason()),
            Err("bad_change_id")
        );
        let ev = proto::ProfileChange {
            change_id: "x".into(),
            key: Some(proto::ProfileKey {
                kind: Some(proto::profile_key::Kind::Device("not-a-mac".into())),
            }),
            ..Default::default()
        };
        assert_eq!(
            decode_change(Some(b"device/x"), &ev.encode_to_vec()).map_err(|e| e.reason()),
            Err("bad_key")
        );
    }

    #[test]
    fn device_spellings_normalise_but_the_record_key_must_be_canonical() {
        let ev = proto::ProfileChange {
            change_id: "x".into(),
            key: Some(proto::ProfileKey {
                kind: Some(proto::profile_key::Kind::Device("00:DF:1E:00:4C:D0".into())),
            }),
            operation: Some(proto::profile_change::Operation::DeleteKey(
                proto::DeleteKey {},
            )),
            ..Default::default()
        };
        let bytes = ev.encode_to_vec();
        let c = decode_change(Some(b"device/mac:00df1e004cd0"), &bytes).expect("valid");
        assert_eq!(c.key, ProfileKey::device("00df1e004cd0").expect("mac"));
        assert!(decode_change(Some(b"device/00:DF:1E:00:4C:D0"), &bytes).is_err());
    }

    #[test]
    fn canonical_record_keys() {
        assert!(parse_record_key("device/mac:00df1e004cd0").is_ok());
        assert!(parse_record_key("user/alice@example.com").is_ok());
        assert!(parse_record_key("user/alice@EXAMPLE.com").is_err());
        assert!(parse_record_key("printer/x").is_err());
        assert!(parse_record_key("nokind").is_err());
    }

    #[test]
    fn applied_round_trip() {
        let a = Applied {
            change_id: "c".into(),
            key: ProfileKey::user("alice@example.com").expect("aor"),
            version: 3,
            timing: Timing {
                effective_by: Some(10),
                rollout_window: None,
            },
            occurred_unix_ms: 1,
            applied_unix_ms: 2,
            applied_by: "content-a".into(),
            resync: true,
        };
        assert_eq!(decode_applied(&encode_applied(&a)), Ok(a.clone()));
        assert_eq!(a.to_feed(9).effective_by, Some(10));
        assert_eq!(a.to_feed(9).rollout_window, None);
        assert!(decode_applied(b"\x12\x03x/y").is_err());
    }
}

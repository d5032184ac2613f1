//! Conversions between the `uaprof.content.v1` messages and the [`uaprof_api`] types.
//!
//! Writing never fails. Reading checks everything, in both directions: a key must parse and
//! must already be in canonical form, because a key that normalises to something else would
//! silently name a different owner than the peer meant (and an index entry the peer never
//! wrote).

use uaprof_api::key::MAX_KEY_PART;
use uaprof_api::{
    DocumentRef, KeyError, ProfileChange, ProfileKey, ProfileType, Resolution, ResolveRequest,
    ResyncTarget,
};

use crate::proto;

/// Longest key string accepted from the wire: the longest id part plus the longest kind
/// prefix (`local-network/`) and some slack. Checked first so that error messages, which
/// quote the key, stay short enough for a `grpc-message` header.
const MAX_WIRE_KEY: usize = MAX_KEY_PART + 32;

/// Why a message from the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WireError {
    #[error("{field}: key of {len} bytes is longer than {MAX_WIRE_KEY}")]
    KeyTooLong { field: &'static str, len: usize },
    #[error("{field}: key {value:?} is not of the form <kind>/<id>")]
    KeyShape { field: &'static str, value: String },
    #[error("{field}: {source}")]
    BadKey {
        field: &'static str,
        #[source]
        source: KeyError,
    },
    #[error("{field}: key {value:?} is not in canonical form (it normalises to {canonical:?})")]
    NotCanonical {
        field: &'static str,
        value: String,
        canonical: String,
    },
    #[error("profile_type {0} is unspecified or unknown")]
    ProfileType(i32),
    #[error("{got} changes in a reply to a request for at most {max}")]
    TooManyChanges { got: usize, max: usize },
    #[error("change seq {seq} is not after {after} (replies must be in increasing seq order)")]
    OutOfOrder { seq: u64, after: u64 },
}

/// Parses a key in its canonical string form (`ProfileKey`'s `Display`: `<kind>/<id>`).
pub(crate) fn parse_key(field: &'static str, value: &str) -> Result<ProfileKey, WireError> {
    if value.len() > MAX_WIRE_KEY {
        return Err(WireError::KeyTooLong {
            field,
            len: value.len(),
        });
    }
    // No kind contains '/', so the first one separates kind and id.
    let (kind, id) = value.split_once('/').ok_or_else(|| WireError::KeyShape {
        field,
        value: value.to_owned(),
    })?;
    let key =
        ProfileKey::from_parts(kind, id).map_err(|source| WireError::BadKey { field, source })?;
    let canonical = key.to_string();
    if canonical != value {
        return Err(WireError::NotCanonical {
            field,
            value: value.to_owned(),
            canonical,
        });
    }
    Ok(key)
}

fn profile_type_to_wire(t: ProfileType) -> proto::ProfileType {
    match t {
        ProfileType::Device => proto::ProfileType::Device,
        ProfileType::User => proto::ProfileType::User,
        ProfileType::LocalNetwork => proto::ProfileType::LocalNetwork,
    }
}

fn profile_type_from_wire(raw: i32) -> Result<ProfileType, WireError> {
    match proto::ProfileType::try_from(raw) {
        Ok(proto::ProfileType::Device) => Ok(ProfileType::Device),
        Ok(proto::ProfileType::User) => Ok(ProfileType::User),
        Ok(proto::ProfileType::LocalNetwork) => Ok(ProfileType::LocalNetwork),
        Ok(proto::ProfileType::Unspecified) | Err(_) => Err(WireError::ProfileType(raw)),
    }
}

pub(crate) fn resolve_request_to_wire(r: &ResolveRequest) -> proto::ResolveRequest {
    proto::ResolveRequest {
        profile_type: profile_type_to_wire(r.profile_type).into(),
        subject: r.subject.to_string(),
        vendor: r.vendor.clone(),
        model: r.model.clone(),
        version: r.version.clone(),
    }
}

pub(crate) fn resolve_request_from_wire(
    r: proto::ResolveRequest,
) -> Result<ResolveRequest, WireError> {
    Ok(ResolveRequest {
        profile_type: profile_type_from_wire(r.profile_type)?,
        subject: parse_key("subject", &r.subject)?,
        vendor: r.vendor,
        model: r.model,
        version: r.version,
    })
}

pub(crate) fn resolution_to_wire(r: &Resolution) -> proto::Resolution {
    proto::Resolution {
        documents: r
            .documents
            .iter()
            .map(|d| proto::DocumentRef {
                owner: d.owner.to_string(),
                name: d.name.clone(),
                url: d.url.clone(),
                content_type: d.content_type.clone(),
                size: d.size,
                sha1_hex: d.sha1_hex.clone(),
                version: d.version,
                content_id: d.content_id.clone(),
                expires_unix: d.expires_unix,
            })
            .collect(),
        depends_on: r.depends_on.iter().map(ToString::to_string).collect(),
        known: r.known,
        folder_url: r.folder_url.clone().unwrap_or_default(),
        resync: r.resync.as_ref().map(|t| proto::ResyncTarget {
            contact: t.contact.clone(),
            event: t.event.clone().unwrap_or_default(),
            username: t.username.clone().unwrap_or_default(),
            password: t.password.clone().unwrap_or_default(),
        }),
    }
}

pub(crate) fn resolution_from_wire(r: proto::Resolution) -> Result<Resolution, WireError> {
    let documents = r
        .documents
        .into_iter()
        .map(|d| {
            Ok(DocumentRef {
                owner: parse_key("documents.owner", &d.owner)?,
                name: d.name,
                url: d.url,
                content_type: d.content_type,
                size: d.size,
                sha1_hex: d.sha1_hex,
                version: d.version,
                content_id: d.content_id,
                expires_unix: d.expires_unix,
            })
        })
        .collect::<Result<_, WireError>>()?;
    let depends_on = r
        .depends_on
        .iter()
        .map(|k| parse_key("depends_on", k))
        .collect::<Result<_, _>>()?;
    Ok(Resolution {
        documents,
        depends_on,
        known: r.known,
        folder_url: Some(r.folder_url).filter(|u| !u.is_empty()),
        resync: r.resync.map(|t| {
            let opt = |s: String| Some(s).filter(|s| !s.is_empty());
            ResyncTarget {
                contact: t.contact,
                event: opt(t.event),
                username: opt(t.username),
                password: opt(t.password),
            }
        }),
    })
}

pub(crate) fn change_to_wire(c: &ProfileChange) -> proto::ProfileChange {
    proto::ProfileChange {
        seq: c.seq,
        key: c.key.to_string(),
        version: c.version,
        effective_by: c.effective_by,
        rollout_window: c.rollout_window,
        resync: c.resync,
    }
}

/// Reads the changes of one reply to a poll from `after` for at most `max` changes, and
/// checks what the consumer's position logic relies on: no more than asked for, and seqs
/// strictly increasing from after `after`.
pub(crate) fn changes_from_wire(
    changes: Vec<proto::ProfileChange>,
    after: u64,
    max: usize,
) -> Result<Vec<ProfileChange>, WireError> {
    if changes.len() > max {
        return Err(WireError::TooManyChanges {
            got: changes.len(),
            max,
        });
    }
    let mut last = after;
    changes
        .into_iter()
        .map(|c| {
            if c.seq <= last {
                return Err(WireError::OutOfOrder {
                    seq: c.seq,
                    after: last,
                });
            }
            last = c.seq;
            Ok(ProfileChange {
                seq: c.seq,
                key: parse_key("key", &c.key)?,
                version: c.version,
                effective_by: c.effective_by,
                rollout_window: c.rollout_window,
                traceparent: None,
                resync: c.resync,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<ProfileKey> {
        vec![
            ProfileKey::device("00:DF:1E:00:4C:D0").unwrap(),
            ProfileKey::device("urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6").unwrap(),
            ProfileKey::user("sip:Alice@Example.com").unwrap(),
            ProfileKey::local_network("Example.COM").unwrap(),
            ProfileKey::class("acme", "Z100").unwrap(),
        ]
    }

    #[test]
    fn canonical_keys_round_trip() {
        for key in keys() {
            assert_eq!(parse_key("k", &key.to_string()), Ok(key));
        }
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let err = |s: &str| parse_key("subject", s).unwrap_err();
        assert!(matches!(
            err("mac:00df1e004cd0"),
            WireError::KeyShape { .. }
        ));
        assert!(matches!(
            err("printer/x"),
            WireError::BadKey {
                source: KeyError::UnknownKind(_),
                ..
            }
        ));
        assert!(matches!(
            err("device/nonsense"),
            WireError::BadKey {
                source: KeyError::BadDeviceId(_),
                ..
            }
        ));
        assert!(matches!(
            err(&format!("device/{}", "a".repeat(MAX_WIRE_KEY))),
            WireError::KeyTooLong { .. }
        ));
        // Parsable but not canonical: the peer would be told about a different key.
        let e = err("device/00:DF:1E:00:4C:D0");
        assert_eq!(
            e.to_string(),
            "subject: key \"device/00:DF:1E:00:4C:D0\" is not in canonical form (it normalises \
             to \"device/mac:00df1e004cd0\")"
        );
    }

    #[test]
    fn keys_that_once_failed_a_second_normalisation_now_cross_the_wire() {
        // `normalize_aor` used to strip one `sip:` and decode `%XX` on every pass, so these
        // keys did not survive a second normalisation and were refused here. Normalisation is
        // idempotent now (issue 12): each is its own canonical form.
        for key in [
            ProfileKey::user("sip:sip:a@example.com").unwrap(),
            ProfileKey::user("a%2541@example.com").unwrap(),
            ProfileKey::user("%25@o").unwrap(),
        ] {
            assert_eq!(
                parse_key("k", &key.to_string()).ok(),
                Some(key.clone()),
                "{key}"
            );
        }
    }

    #[test]
    fn profile_types_round_trip_and_unspecified_is_refused() {
        for t in ProfileType::ALL {
            assert_eq!(
                profile_type_from_wire(profile_type_to_wire(t).into()),
                Ok(t)
            );
        }
        assert_eq!(profile_type_from_wire(0), Err(WireError::ProfileType(0)));
        assert_eq!(profile_type_from_wire(99), Err(WireError::ProfileType(99)));
    }

    #[test]
    fn resolution_round_trips() {
        let keys = keys();
        let res = Resolution {
            documents: vec![DocumentRef {
                owner: keys[0].clone(),
                name: "a.xml".into(),
                url: "http://h/profiles/device/mac:00df1e004cd0/a.xml".into(),
                content_type: "application/xml".into(),
                size: 3,
                sha1_hex: "aa".into(),
                version: 7,
                content_id: "x@h".into(),
                expires_unix: 99,
            }],
            depends_on: keys,
            known: true,
            folder_url: Some("http://h/profiles/set/-/mac%3A00df1e004cd0/-/".into()),
            resync: Some(ResyncTarget {
                contact: "sip:1001@10.0.0.7:5062".into(),
                event: None,
                username: Some("1001".into()),
                password: Some("pw".into()),
            }),
        };
        assert_eq!(
            resolution_from_wire(resolution_to_wire(&res)),
            Ok(res.clone())
        );
        let without = Resolution {
            resync: None,
            ..res
        };
        assert_eq!(
            resolution_from_wire(resolution_to_wire(&without)),
            Ok(without)
        );
    }

    #[test]
    fn change_batches_are_checked() {
        let change = |seq| {
            change_to_wire(&ProfileChange {
                seq,
                key: ProfileKey::class("acme", "Z100").unwrap(),
                version: 1,
                effective_by: Some(5),
                rollout_window: Some(60),
                traceparent: None,
                resync: seq == 6,
            })
        };
        let ok = changes_from_wire(vec![change(4), change(6)], 3, 2).unwrap();
        assert_eq!(ok.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![4, 6]);
        assert_eq!((ok[0].resync, ok[1].resync), (false, true));
        assert_eq!(
            (ok[0].effective_by, ok[0].rollout_window),
            (Some(5), Some(60))
        );
        assert_eq!(
            changes_from_wire(vec![change(4), change(6)], 3, 1),
            Err(WireError::TooManyChanges { got: 2, max: 1 })
        );
        assert_eq!(
            changes_from_wire(vec![change(3)], 3, 5),
            Err(WireError::OutOfOrder { seq: 3, after: 3 })
        );
        assert_eq!(
            changes_from_wire(vec![change(5), change(5)], 3, 5),
            Err(WireError::OutOfOrder { seq: 5, after: 5 })
        );
    }
}

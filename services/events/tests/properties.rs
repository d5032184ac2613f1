//! Property tests of the event decoders (stable; the cargo-fuzz target `event_proto`
//! explores the same with coverage guidance).

use bytes::Bytes;
use events::{Applied, decode_applied, decode_change, encode_applied, encode_change};
use proptest::collection::vec;
use proptest::prelude::*;
use uaprof_api::{Change, ChangeOp, ProfileKey, ResyncTarget, Timing};

/// Keys in their normal form, one strategy per kind.
fn key() -> impl Strategy<Value = ProfileKey> {
    let graphic = "[!#-.0-9;-~]{1,20}";
    prop_oneof![
        any::<[u8; 6]>().prop_map(|m| ProfileKey::Device(format!("mac:{}", hex(&m)))),
        "[a-z0-9]{1,8}".prop_map(|u| ProfileKey::Device(format!("urn:uuid:{u}"))),
        (
            "[A-Za-z0-9._~!-]{1,12}",
            "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8})?"
        )
            .prop_map(|(u, h)| ProfileKey::User(format!("{u}@{h}"))),
        "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8})?".prop_map(ProfileKey::LocalNetwork),
        (graphic, graphic).prop_map(|(vendor, model)| ProfileKey::Class { vendor, model }),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn timing() -> impl Strategy<Value = Timing> {
    prop_oneof![
        Just(Timing::default()),
        any::<u32>().prop_map(|s| Timing {
            effective_by: Some(s),
            rollout_window: None
        }),
        any::<u32>().prop_map(|s| Timing {
            effective_by: None,
            rollout_window: Some(s)
        }),
    ]
}

fn op() -> impl Strategy<Value = ChangeOp> {
    prop_oneof![
        ("\\PC{0,20}", "\\PC{0,20}", vec(any::<u8>(), 0..64)).prop_map(
            |(name, content_type, b)| {
                ChangeOp::PutDocument {
                    name,
                    content_type,
                    bytes: Bytes::from(b),
                }
            }
        ),
        "\\PC{0,20}".prop_map(|name| ChangeOp::DeleteDocument { name }),
        Just(ChangeOp::DeleteKey),
        // The wire has no "unset" apart from the empty string.
        proptest::option::of("\\PC{1,20}").prop_map(ChangeOp::SetDefaultUser),
        proptest::option::of(resync()).prop_map(ChangeOp::SetResync),
        (
            proptest::option::of("\\PC{1,20}"),
            proptest::option::of(resync())
        )
            .prop_map(|(default_user, resync)| ChangeOp::SetAttributes {
                default_user,
                resync
            }),
    ]
}

/// A target as the wire can carry it: unset fields are empty strings there.
fn resync() -> impl Strategy<Value = ResyncTarget> {
    (
        "\\PC{1,40}",
        proptest::option::of("\\PC{1,12}"),
        proptest::option::of(("\\PC{1,12}", "\\PC{1,12}")),
    )
        .prop_map(|(contact, event, creds)| ResyncTarget {
            contact,
            event,
            username: creds.as_ref().map(|c| c.0.clone()),
            password: creds.map(|c| c.1),
        })
}

fn change() -> impl Strategy<Value = Change> {
    (
        "[!-~]{1,40}",
        key(),
        proptest::option::of(1u64..),
        op(),
        timing(),
        "\\PC{0,16}",
        any::<u64>(),
    )
        .prop_map(
            |(change_id, key, version, op, timing, producer, occurred_unix_ms)| Change {
                change_id,
                key,
                version,
                op,
                timing,
                producer,
                occurred_unix_ms,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(key in proptest::option::of(vec(any::<u8>(), 0..40)), payload in vec(any::<u8>(), 0..256)) {
        let _ = decode_change(key.as_deref(), &payload);
        let _ = decode_applied(&payload);
    }

    #[test]
    fn changes_round_trip(c in change()) {
        let (record_key, bytes) = encode_change(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&record_key, &c.key.to_string());
        prop_assert_eq!(decode_change(Some(record_key.as_bytes()), &bytes), Ok(c));
    }

    #[test]
    fn a_change_under_another_record_key_is_refused(c in change(), other in key()) {
        prop_assume!(other != c.key);
        let (_, bytes) = encode_change(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let refused = decode_change(Some(other.to_string().as_bytes()), &bytes);
        prop_assert_eq!(refused.map_err(|e| e.reason()), Err("key_mismatch"));
    }

    #[test]
    fn applied_records_round_trip(
        change_id in "[!-~]{1,40}", key in key(), version in any::<u64>(),
        effective_by in proptest::option::of(any::<u32>()),
        rollout_window in proptest::option::of(any::<u32>()),
        occurred_unix_ms in any::<u64>(), applied_unix_ms in any::<u64>(), applied_by in "\\PC{0,16}",
        resync in any::<bool>(),
    ) {
        let a = Applied {
            change_id, key, version,
            timing: Timing { effective_by, rollout_window },
            occurred_unix_ms, applied_unix_ms, applied_by, resync,
        };
        prop_assert_eq!(decode_applied(&encode_applied(&a)), Ok(a));
    }
}

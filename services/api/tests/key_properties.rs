//! Property tests of profile-key normalisation (stable; the cargo-fuzz target
//! `key_normalize` explores the same with coverage guidance).

use proptest::prelude::*;
use uaprof_api::ProfileKey;
use uaprof_api::key::{normalize_aor, normalize_device_id, normalize_domain};

type Normalize = fn(&str) -> Result<String, uaprof_api::KeyError>;

const NORMALIZERS: [(&str, Normalize); 3] = [
    ("normalize_device_id", normalize_device_id),
    ("normalize_aor", normalize_aor),
    ("normalize_domain", normalize_domain),
];

/// Strings near the keys' grammar (escapes, brackets, schemes, separators), where the
/// interesting cases are, plus arbitrary text.
fn near_keys() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-fA-F0-9:%<>@.;=?/-]{0,40}",
        "(sips?:|SIP:|urn:uuid:|mac:|MAC%3a|<)?[a-zA-Z0-9%._~-]{0,16}(@|%40)?[a-zA-Z0-9.%:-]{0,16}(;[a-z]+=[a-z0-9]+)?>?",
        // Escapes, escaped escapes (`%2540`) included: phones percent-encode user parts.
        "(sips?:)?([a-zA-Z0-9.]|%25|%[2-7][0-9a-fA-F]){1,10}(@|%40)[a-zA-Z0-9.]{1,10}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn normalisation_never_panics(s in near_keys(), kind in "(device|user|local-network|class|x)") {
        for (_, f) in NORMALIZERS {
            let _ = f(&s);
        }
        let _ = ProfileKey::from_parts(&kind, &s);
    }

    #[test]
    fn mac_spellings_normalise_to_one_stable_key(mac in any::<[u8; 6]>(), style in 0usize..5, upper in any::<bool>()) {
        let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        let raw = match style {
            0 => hex.concat(),
            1 => hex.join(":"),
            2 => hex.join("-"),
            3 => format!("MAC%3a{}", hex.concat()),
            _ => format!("mac:{}", hex.concat()),
        };
        let raw = if upper { raw.to_ascii_uppercase() } else { raw };
        let key = normalize_device_id(&raw).map_err(|e| TestCaseError::fail(format!("{raw}: {e}")))?;
        prop_assert_eq!(&key, &format!("mac:{}", hex.concat()));
        prop_assert_eq!(normalize_device_id(&key), Ok(key));
    }

    /// `normalize(normalize(x)) == normalize(x)` for every input it accepts.
    #[test]
    fn normalisation_is_idempotent(s in near_keys()) {
        for (name, f) in NORMALIZERS {
            if let Ok(once) = f(&s) {
                prop_assert_eq!(f(&once), Ok(once), "{}({:?})", name, s);
            }
        }
        for kind in ["device", "user", "local-network", "class"] {
            if let Ok(key) = ProfileKey::from_parts(kind, &s) {
                prop_assert_eq!(ProfileKey::from_parts(key.kind(), &key.id()), Ok(key));
            }
        }
    }
}

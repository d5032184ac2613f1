//! The `Expires` value parser and the duration grant.
//!
//! Properties: nothing panics; only SIP whitespace around ASCII digits is accepted; the value
//! is the number, clamped to 2³²−1; the printed number parses back to itself; the grant never
//! lengthens a request and never goes below the minimum except for 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_event::expiry::{ExpiryPolicy, parse_expires};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_expires(value);
    let digits = value.trim_matches([' ', '\t']);
    let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    assert_eq!(parsed.is_some(), well_formed, "{value:?} → {parsed:?}");
    if let Some(n) = parsed {
        match digits.parse::<u64>() {
            Ok(v) if v <= u64::from(u32::MAX) => assert_eq!(u64::from(n), v),
            _ => assert_eq!(n, u32::MAX, "{value:?} is beyond 2³²−1"),
        }
        assert_eq!(parse_expires(&n.to_string()), Some(n));
        let policy = ExpiryPolicy::default();
        match policy.grant(Some(n)) {
            Ok(granted) => {
                assert!(granted <= n);
                assert!(granted == 0 || granted >= policy.min);
            }
            Err(tb) => assert!(n < tb.min_expires && n != 0),
        }
    }
});

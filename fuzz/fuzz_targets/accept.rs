//! The `Accept` rules: media ranges and the NOTIFY body mode.
//!
//! Properties: nothing panics; qualities stay within 0..=1000 and `allows` agrees with them;
//! the body mode agrees with what the list allows (content indirection exactly when
//! `message/external-body` is allowed, inline only when something is, 406 otherwise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_event::accept::{
    AcceptList, BodyMode, EXTERNAL_BODY, MULTIPART_MIXED, URL_BODY, body_mode,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One Accept header per line.
    let values: Vec<&str> = text.split('\n').collect();
    let list = AcceptList::parse(&values);
    for ty in [
        EXTERNAL_BODY,
        MULTIPART_MIXED,
        "application/xml",
        "Text/Plain;q=1",
        "x",
        "",
    ] {
        let q = list.quality(ty);
        assert!(q <= 1000, "quality {q} for {ty}");
        assert_eq!(list.allows(ty), q > 0);
    }
    match body_mode(&values) {
        Ok(BodyMode::ExternalBody { multipart }) => {
            assert!(list.allows(EXTERNAL_BODY));
            assert_eq!(multipart, list.allows(MULTIPART_MIXED));
        }
        Ok(BodyMode::Inline(inline)) => {
            assert!(!list.allows(EXTERNAL_BODY) && list.allows_anything());
            assert!(!list.names(URL_BODY));
            assert_eq!(inline, list);
        }
        Ok(BodyMode::Url) => {
            assert!(!list.allows(EXTERNAL_BODY) && list.names(URL_BODY));
        }
        Err(_) => assert!(!list.allows_anything()),
    }
});

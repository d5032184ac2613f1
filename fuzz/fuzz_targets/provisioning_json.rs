//! The provisioning API's device-attributes body (`PUT /provision/v1/device/<id>`), as the
//! HTTP handler reads it, and the AoR check the content tier applies to it.
//!
//! Properties: nothing panics; an accepted body prints to JSON that reads back the same.
#![no_main]

use content::{DeviceAttributes, parse_device_attributes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(attrs) = parse_device_attributes(data) else {
        return;
    };
    let printed = serde_json::to_vec(&attrs).expect("a struct of strings serialises");
    let again: DeviceAttributes = parse_device_attributes(&printed).unwrap_or_else(|e| {
        panic!(
            "printed {} does not parse: {e}",
            String::from_utf8_lossy(&printed)
        )
    });
    assert_eq!(again, attrs);
    if let Some(user) = &attrs.default_user {
        let _ = uaprof_api::key::normalize_aor(user);
    }
});

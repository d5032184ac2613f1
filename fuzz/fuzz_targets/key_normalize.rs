//! Profile-key normalisation (device ids, AoRs, domains, provisioning-path keys).
//!
//! Properties: nothing panics, and normalisation is idempotent: a normalised value is its own
//! normal form (`normalize(normalize(x)) == normalize(x)`), so a key survives every later
//! re-normalisation (HTTP path, Kafka event, content-tier check) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uaprof_api::ProfileKey;
use uaprof_api::key::{normalize_aor, normalize_device_id, normalize_domain};

fn idempotent(name: &str, f: fn(&str) -> Result<String, uaprof_api::KeyError>, raw: &str) {
    if let Ok(once) = f(raw) {
        assert_eq!(
            f(&once).as_ref(),
            Ok(&once),
            "{name}({raw:?}) is not stable"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    idempotent("normalize_device_id", normalize_device_id, raw);
    idempotent("normalize_aor", normalize_aor, raw);
    idempotent("normalize_domain", normalize_domain, raw);
    // `<kind>/<id>` as on the provisioning path.
    let (kind, id) = raw.split_once('/').unwrap_or(("device", raw));
    if let Ok(key) = ProfileKey::from_parts(kind, id) {
        assert_eq!(
            ProfileKey::from_parts(key.kind(), &key.id()).as_ref(),
            Ok(&key),
            "from_parts({kind:?}, {id:?}) is not stable"
        );
    }
});

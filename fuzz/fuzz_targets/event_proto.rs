//! The Kafka event decoders (`uaprof.events.v1` ProfileChange and ProfileApplied).
//!
//! Properties: nothing panics on any record key and payload; a decoded change encodes to a
//! record that decodes to the same change, and the same for an applied record.
#![no_main]

use events::{EventError, decode_applied, decode_change, encode_applied, encode_change};
use libfuzzer_sys::fuzz_target;
use uaprof_api::ProfileKey;

fuzz_target!(|data: &[u8]| {
    // First byte: length of the record key that follows; the rest is the payload.
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (record_key, payload) = rest.split_at(usize::from(len).min(rest.len()));
    let mut decoded = decode_change(Some(record_key), payload);
    // A random record key almost never matches the event's key; retry with the canonical one
    // the decoder names, so the checks behind the key comparison get explored too.
    if let Err(EventError::KeyMismatch { canonical, .. }) = &decoded {
        decoded = decode_change(Some(canonical.as_bytes()), payload);
    }
    if let Ok(change) = decoded
        // Keys whose normal form is not stable are the key_normalize target's finding; here
        // they would only repeat it.
        && stable(&change.key)
    {
        let (key, bytes) = encode_change(&change).expect("a decoded change encodes");
        assert_eq!(decode_change(Some(key.as_bytes()), &bytes), Ok(change));
    }

    if let Ok(applied) = decode_applied(payload) {
        assert_eq!(decode_applied(&encode_applied(&applied)), Ok(applied));
    }
});

fn stable(key: &ProfileKey) -> bool {
    ProfileKey::from_parts(key.kind(), &key.id()).as_ref() == Ok(key)
}

//! The SUBSCRIBE `Event` header parser.
//!
//! Properties: nothing panics; errors map to 400 or 489; what the NOTIFY echoes of a parsed
//! header (package, profile-type, id) parses back to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_event::event::{notify_event_header, parse_event};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match parse_event(value) {
        Ok(ev) => {
            let printed =
                notify_event_header(ev.package, &ev.profile_type, Some(300), ev.id.as_deref());
            let again = parse_event(&printed)
                .unwrap_or_else(|e| panic!("printed {printed:?} does not parse: {e}"));
            assert_eq!(again.package, ev.package);
            assert_eq!(again.profile_type, ev.profile_type);
            assert_eq!(again.id, ev.id);
        }
        Err(e) => assert!(matches!(e.status(), 400 | 489), "{e}"),
    }
});

//! Property tests of the Event, Accept and Expires parsers (stable; the cargo-fuzz targets
//! `event_header`, `accept` and `expires` explore the same with coverage guidance).

use profile_event::accept::{AcceptList, EXTERNAL_BODY, body_mode};
use profile_event::event::{Package, notify_event_header, parse_event};
use profile_event::expiry::parse_expires;
use proptest::collection::vec;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,20}"
}

/// A token without `*`, which Accept reads as a wildcard.
fn media_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%_+`'~-]{1,20}"
}

/// Text a quoted string may carry (printable, with `"` and `\` to be escaped).
fn qtext() -> impl Strategy<Value = String> {
    "[ -~\t]{1,30}"
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn lws() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

/// Mixes the case of an ASCII string by a bit mask.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn event_parser_never_panics(s in "\\PC{0,200}", raw in vec(any::<u8>(), 0..200)) {
        for input in [s, String::from_utf8_lossy(&raw).into_owned()] {
            if let Err(e) = parse_event(&input) {
                prop_assert!(matches!(e.status(), 400 | 489));
            }
        }
    }

    #[test]
    fn generated_event_headers_parse_and_echo(
        sip_profile in any::<bool>(),
        mask in any::<u64>(),
        profile_type in token(),
        vendor in qtext(),
        model in token(),
        id in proptest::option::of(token()),
        w in lws(),
    ) {
        let package = if sip_profile { Package::SipProfile } else { Package::UaProfile };
        let mut header = format!(
            "{w}{}{w};{w}profile-type{w}={w}{}{w};vendor={};{}={model}",
            recase(package.as_str(), mask),
            profile_type,
            quote(&vendor),
            recase("model", mask),
        );
        if let Some(id) = &id {
            header += &format!(";id={id}");
        }
        let ev = parse_event(&header).map_err(|e| TestCaseError::fail(format!("{header:?}: {e}")))?;
        prop_assert_eq!(ev.package, package);
        prop_assert_eq!(&ev.profile_type, &profile_type.to_ascii_lowercase());
        prop_assert_eq!(ev.vendor.as_deref(), Some(vendor.as_str()));
        prop_assert_eq!(ev.model.as_deref(), Some(model.as_str()));
        prop_assert_eq!(&ev.id, &id);

        let printed = notify_event_header(ev.package, &ev.profile_type, Some(60), ev.id.as_deref());
        let again = parse_event(&printed).map_err(|e| TestCaseError::fail(format!("{printed:?}: {e}")))?;
        prop_assert_eq!(again.package, ev.package);
        prop_assert_eq!(again.profile_type, ev.profile_type);
        prop_assert_eq!(again.id, ev.id);
    }

    #[test]
    fn accept_parser_never_panics(values in vec("\\PC{0,80}", 0..4)) {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let list = AcceptList::parse(&refs);
        prop_assert!(list.quality(EXTERNAL_BODY) <= 1000);
        let _ = body_mode(&refs);
    }

    #[test]
    fn accept_qualities_are_read_back(
        top in media_token(), sub in media_token(), q in 0u16..=1000, digits in 1usize..=3, w in lws(),
    ) {
        // q printed with 1-3 decimals; what is read is q rounded down to those decimals.
        let scale = [100u16, 10, 1][digits - 1];
        let q = q / scale * scale;
        let printed = if q == 1000 {
            "1".to_owned()
        } else {
            format!("0.{:0width$}", q / scale, width = digits)
        };
        let value = format!("{w}{top}/{sub}{w};{w}q={printed}{w}");
        let list = AcceptList::parse(&[value.as_str()]);
        prop_assert_eq!(list.quality(&format!("{}/{}", top.to_ascii_uppercase(), sub)), q, "{}", value);
    }

    #[test]
    fn expires_parser_never_panics(s in "\\PC{0,40}") {
        if let Some(n) = parse_expires(&s) {
            prop_assert_eq!(parse_expires(&n.to_string()), Some(n));
        }
    }

    #[test]
    fn printed_expires_read_back(n in any::<u32>(), big in (u64::from(u32::MAX) + 1).., w1 in lws(), w2 in lws()) {
        prop_assert_eq!(parse_expires(&format!("{w1}{n}{w2}")), Some(n));
        prop_assert_eq!(parse_expires(&format!("{w1}{big}{w2}")), Some(u32::MAX));
    }
}

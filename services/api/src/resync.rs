//! A device's resync target: where and how the notifier makes a phone that never subscribes
//! fetch its configuration again (an out-of-dialog NOTIFY, `Event: check-sync`).
//!
//! The operator sets it on the device (`resync` in the provisioning API's device attributes,
//! `SetResync` on Kafka); the content tier keeps it with the device's other attributes and
//! hands it to the notifiers with the device's resolution. The password is needed in clear
//! to answer a phone's digest challenge (the realm is the phone's), so it is stored as given
//! and never shown again.

use serde::{Deserialize, Serialize};

/// Longest contact URI accepted.
pub const MAX_CONTACT: usize = 256;
/// Longest username or password accepted.
pub const MAX_CREDENTIAL: usize = 128;
/// Longest Event value accepted.
pub const MAX_EVENT: usize = 32;

/// Where a device's check-sync NOTIFY goes and how it is authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncTarget {
    /// The phone's SIP URI (`sip:` or `sips:`, usually its registered contact): the NOTIFY's
    /// Request-URI and To, and where it is sent.
    pub contact: String,
    /// The Event package, e.g. `check-sync` or `resync`; unset: the phone's vendor's.
    #[serde(default)]
    pub event: Option<String>,
    /// Digest credentials the phone may challenge the NOTIFY with (its line's).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl ResyncTarget {
    /// Checks the target: a `sip:`/`sips:` URI with a host, an Event token, and both or none
    /// of username and password. The error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let c = self.contact.as_str();
        if c.len() > MAX_CONTACT {
            return Err(format!("contact longer than {MAX_CONTACT} bytes"));
        }
        let rest = c
            .strip_prefix("sip:")
            .or_else(|| c.strip_prefix("sips:"))
            .ok_or("contact must be a sip: or sips: URI")?;
        if c.bytes()
            .any(|b| !b.is_ascii_graphic() || b"<>\"".contains(&b))
        {
            return Err("contact must be a bare URI (no spaces, quotes or angle brackets)".into());
        }
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host.split([';', '?']).next().unwrap_or_default();
        let host = if host.starts_with('[') {
            host.split_once(']').map(|(h, _)| h).unwrap_or(host)
        } else {
            host.split(':').next().unwrap_or_default()
        };
        if host.trim_start_matches('[').is_empty() {
            return Err("contact has no host".into());
        }
        if let Some(e) = &self.event
            && (e.is_empty() || e.len() > MAX_EVENT || !e.bytes().all(is_token_byte))
        {
            return Err(format!(
                "event must be a SIP token of at most {MAX_EVENT} bytes"
            ));
        }
        match (&self.username, &self.password) {
            (None, None) => Ok(()),
            (Some(u), Some(p)) => {
                for (what, v) in [("username", u), ("password", p)] {
                    if v.is_empty() || v.len() > MAX_CREDENTIAL {
                        return Err(format!("{what} must be 1 to {MAX_CREDENTIAL} bytes"));
                    }
                    if v.chars().any(char::is_control) {
                        return Err(format!("{what} has a control character"));
                    }
                }
                if u.contains('"') || u.contains('\\') {
                    return Err("username may not contain quotes or backslashes".into());
                }
                Ok(())
            }
            _ => Err("username and password go together".into()),
        }
    }

    /// The target as the provisioning API shows it: the password replaced by whether one
    /// is set.
    pub fn shown(&self) -> ShownResyncTarget {
        ShownResyncTarget {
            contact: self.contact.clone(),
            event: self.event.clone(),
            username: self.username.clone(),
            password_set: self.password.is_some(),
        }
    }
}

/// A [`ResyncTarget`] without its password (what a GET returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownResyncTarget {
    pub contact: String,
    pub event: Option<String>,
    pub username: Option<String>,
    pub password_set: bool,
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(contact: &str) -> ResyncTarget {
        ResyncTarget {
            contact: contact.into(),
            event: None,
            username: None,
            password: None,
        }
    }

    #[test]
    fn contacts() {
        for ok in [
            "sip:0004f2a1b2c3@10.0.0.7:5062",
            "sips:phone.example.net",
            "sip:[2001:db8::7]:5060;transport=udp",
            "sip:alice@pbx.example.com;transport=tcp",
        ] {
            assert_eq!(target(ok).validate(), Ok(()), "{ok}");
        }
        for bad in [
            "http://x",
            "sip:",
            "sip:a@",
            "sip:a b@host",
            "<sip:host>",
            "sip:[]",
        ] {
            assert!(target(bad).validate().is_err(), "{bad}");
        }
        assert!(
            target(&format!("sip:{}", "h".repeat(MAX_CONTACT)))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn events_and_credentials() {
        let mut t = target("sip:host");
        t.event = Some("check-sync".into());
        assert_eq!(t.validate(), Ok(()));
        t.event = Some("check sync".into());
        assert!(t.validate().is_err());
        t.event = None;
        t.username = Some("1001".into());
        assert!(t.validate().is_err(), "a username needs a password");
        t.password = Some("pa ss\"word".into());
        assert_eq!(t.validate(), Ok(()));
        t.password = Some("line\nbreak".into());
        assert!(t.validate().is_err());
        t.password = Some("x".into());
        t.username = Some("a\"b".into());
        assert!(t.validate().is_err());
    }

    #[test]
    fn the_shown_form_has_no_password() {
        let t = ResyncTarget {
            contact: "sip:h".into(),
            event: None,
            username: Some("u".into()),
            password: Some("secret".into()),
        };
        let shown = serde_json::to_string(&t.shown()).expect("json");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("\"password_set\":true"), "{shown}");
    }
}

//! Signed change events: an HMAC-SHA256 over a record's value, in header
//! [`SIGNATURE_HEADER`], under a secret shared with the producer the event names
//! (`kafka.event_signing_key_files`). The content tier checks it before storing anything.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::KafkaConfig;

/// The record header that carries an event's signature (lowercase hex).
pub const SIGNATURE_HEADER: &str = "uaprof-signature";

/// The producers' secrets, and whether unsigned events are refused.
#[derive(Default)]
pub struct EventKeys {
    keys: BTreeMap<String, Vec<u8>>,
    require: bool,
}

/// Why an event's signature was refused (the dead-letter reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureRefused {
    /// The producer has a key, and the record's signature is missing or does not match.
    Bad,
    /// Signatures are required and the producer has no key.
    Unsigned,
}

impl SignatureRefused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Bad => "bad_signature",
            Self::Unsigned => "unsigned",
        }
    }

    /// What the dead letter's `uaprof-error` says.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Bad => "the uaprof-signature header is missing or does not match",
            Self::Unsigned => "unsigned, and kafka.require_signed_events is set",
        }
    }
}

impl EventKeys {
    pub fn load(cfg: &KafkaConfig) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (producer, file) in &cfg.event_signing_key_files {
            let secret = content::read_secret(file)
                .map_err(|e| format!("kafka.event_signing_key_files.{producer}: {e}"))?;
            keys.insert(producer.clone(), secret);
        }
        Ok(Self {
            keys,
            require: cfg.require_signed_events,
        })
    }

    fn mac(secret: &[u8], value: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value);
        mac
    }

    /// The signature header value for `producer`'s record `value`, if it has a key.
    pub fn sign(&self, producer: &str, value: &[u8]) -> Option<String> {
        let secret = self.keys.get(producer)?;
        Some(hex::encode(
            Self::mac(secret, value).finalize().into_bytes(),
        ))
    }

    /// Checks the signature `header` of a record `value` from `producer`.
    pub fn verify(
        &self,
        producer: &str,
        value: &[u8],
        header: Option<&[u8]>,
    ) -> Result<(), SignatureRefused> {
        let Some(secret) = self.keys.get(producer) else {
            return if self.require {
                Err(SignatureRefused::Unsigned)
            } else {
                Ok(())
            };
        };
        let sig = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| hex::decode(h.trim()).ok())
            .ok_or(SignatureRefused::Bad)?;
        Self::mac(secret, value)
            .verify_slice(&sig)
            .map_err(|_| SignatureRefused::Bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(require: bool) -> (EventKeys, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("oss.key");
        std::fs::write(&f, "a-shared-secret-of-thirty-two-bytes!!\n").expect("write");
        let cfg = KafkaConfig {
            brokers: "k:9092".into(),
            event_signing_key_files: [("oss".to_owned(), f)].into(),
            require_signed_events: require,
            ..KafkaConfig::default()
        };
        (EventKeys::load(&cfg).expect("load"), dir)
    }

    #[test]
    fn a_signed_event_verifies_and_nothing_else_does() {
        let (k, _d) = keys(false);
        let sig = k.sign("oss", b"payload").expect("a key");
        assert_eq!(k.verify("oss", b"payload", Some(sig.as_bytes())), Ok(()));
        assert_eq!(
            k.verify("oss", b"payloaD", Some(sig.as_bytes())),
            Err(SignatureRefused::Bad)
        );
        assert_eq!(
            k.verify("oss", b"payload", None),
            Err(SignatureRefused::Bad)
        );
        assert_eq!(
            k.verify("oss", b"payload", Some(b"zz")),
            Err(SignatureRefused::Bad)
        );
        assert_eq!(
            k.verify("other", b"payload", None),
            Ok(()),
            "no key, not required"
        );
        let (strict, _d2) = keys(true);
        assert_eq!(
            strict.verify("other", b"payload", None),
            Err(SignatureRefused::Unsigned)
        );
        assert!(k.sign("other", b"x").is_none());
    }
}

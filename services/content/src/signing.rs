//! Signed, expiring document URLs.
//!
//! With signing keys configured, every document URL the tier hands out carries its expiry
//! (the RFC 4483 `expiration` of the NOTIFY that names it), the id of the key that signed it
//! and an HMAC-SHA256 over the canonical key, the document name and the expiry:
//!
//! ```text
//! /profiles/device/mac%3A00df1e004cd0/phone.xml?exp=1767225600&kid=3f2a9c1d&sig=<32 hex>
//! ```
//!
//! A fetch whose signature does not verify, whose expiry has passed, or that has none is
//! refused with 403. The first key signs; every key verifies, so a new key is put first
//! while the old one stays until the URLs it signed have expired (`url_lifetime`). The
//! signature covers the normalised key, so another spelling of the same path still verifies
//! and no spelling reaches another document.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uaprof_api::ProfileKey;

/// Shortest secret accepted: 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;
/// Signature bytes in a URL: 128 bits, far beyond what an online guess can reach.
const SIG_BYTES: usize = 16;

struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The signing keys, the first of which signs.
pub struct UrlSigner {
    keys: Vec<Key>,
}

/// Why a fetch URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Unsigned,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unsigned => "this URL must be signed (exp, kid and sig)",
            Self::Malformed => "malformed signature parameters",
            Self::UnknownKey => "signed with a key this tier no longer holds",
            Self::BadSignature => "signature does not match",
            Self::Expired => "this URL has expired; subscribe again for a fresh one",
        }
    }
}

impl UrlSigner {
    /// Reads the secrets from `files` (each one secret, at least [`MIN_SECRET_BYTES`] bytes
    /// after trimming a final newline). `None` when there are none: URLs go unsigned.
    pub fn load(files: &[PathBuf]) -> Result<Option<Self>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut keys: Vec<Key> = Vec::with_capacity(files.len());
        for path in files {
            let secret = read_secret(path)?;
            let id = hex::encode(&Sha256::digest(&secret)[..4]);
            if keys.iter().any(|k| k.id == id) {
                return Err(format!(
                    "{}: the same secret as another key",
                    path.display()
                ));
            }
            keys.push(Key { id, secret });
        }
        Ok(Some(Self { keys }))
    }

    fn mac(secret: &[u8], key: &ProfileKey, name: &str, exp: u64) -> Hmac<Sha256> {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in [
            key.to_string().as_bytes(),
            name.as_bytes(),
            exp.to_string().as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac
    }

    /// The query string that signs `key`/`name` until `exp` (Unix seconds).
    pub fn query(&self, key: &ProfileKey, name: &str, exp: u64) -> String {
        let Some(k) = self.keys.first() else {
            return String::new();
        };
        let sig = Self::mac(&k.secret, key, name, exp).finalize().into_bytes();
        format!(
            "exp={exp}&kid={}&sig={}",
            k.id,
            hex::encode(&sig[..SIG_BYTES])
        )
    }

    /// Checks a fetch of `key`/`name` with `query` at `now_unix`; `Ok` with the expiry.
    pub fn verify(
        &self,
        key: &ProfileKey,
        name: &str,
        query: Option<&str>,
        now_unix: u64,
    ) -> Result<u64, Refused> {
        let (mut exp, mut kid, mut sig) = (None, None, None);
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = Some(v),
                Some(("kid", v)) => kid = Some(v),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(kid), Some(sig)) = (exp, kid, sig) else {
            return Err(if exp.is_none() && kid.is_none() && sig.is_none() {
                Refused::Unsigned
            } else {
                Refused::Malformed
            });
        };
        let exp: u64 = exp.parse().map_err(|_| Refused::Malformed)?;
        let sig = hex::decode(sig).map_err(|_| Refused::Malformed)?;
        if sig.len() != SIG_BYTES {
            return Err(Refused::Malformed);
        }
        let k = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(Refused::UnknownKey)?;
        Self::mac(&k.secret, key, name, exp)
            .verify_truncated_left(&sig)
            .map_err(|_| Refused::BadSignature)?;
        // Checked after the signature, so an expiry nobody signed says nothing.
        if now_unix >= exp {
            return Err(Refused::Expired);
        }
        Ok(exp)
    }
}

/// Reads a secret of at least [`MIN_SECRET_BYTES`] from `path` (a final newline trimmed).
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path).map_err(|e| format!("secret {}: {e}", path.display()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "secret {}: {} bytes, at least {MIN_SECRET_BYTES} wanted (e.g. head -c 32 /dev/urandom | base64)",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secrets: &[&str]) -> (UrlSigner, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let files: Vec<PathBuf> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = dir.path().join(format!("k{i}"));
                std::fs::write(&p, format!("{s}\n")).expect("write");
                p
            })
            .collect();
        (UrlSigner::load(&files).expect("load").expect("keys"), dir)
    }

    const A: &str = "0123456789abcdef0123456789abcdef-a";
    const B: &str = "0123456789abcdef0123456789abcdef-b";

    #[test]
    fn a_signed_url_verifies_until_it_expires_and_nothing_else_does() {
        let (s, _d) = signer(&[A]);
        let dev = ProfileKey::device("00df1e004cd0").expect("key");
        let q = s.query(&dev, "phone.xml", 1_000);
        assert_eq!(s.verify(&dev, "phone.xml", Some(&q), 999), Ok(1_000));
        assert_eq!(
            s.verify(&dev, "phone.xml", Some(&q), 1_000),
            Err(Refused::Expired)
        );
        // Another document, another key, a later expiry: the signature does not follow.
        assert_eq!(
            s.verify(&dev, "other.xml", Some(&q), 1),
            Err(Refused::BadSignature)
        );
        let other = ProfileKey::device("00df1e004cd1").expect("key");
        assert_eq!(
            s.verify(&other, "phone.xml", Some(&q), 1),
            Err(Refused::BadSignature)
        );
        let later = q.replace("exp=1000", "exp=9000");
        assert_eq!(
            s.verify(&dev, "phone.xml", Some(&later), 1),
            Err(Refused::BadSignature)
        );
        let mut flipped = q.clone();
        let last = flipped.pop().expect("char");
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            s.verify(&dev, "phone.xml", Some(&flipped), 1),
            Err(Refused::BadSignature)
        );
        assert_eq!(s.verify(&dev, "phone.xml", None, 1), Err(Refused::Unsigned));
        assert_eq!(
            s.verify(&dev, "phone.xml", Some("exp=5"), 1),
            Err(Refused::Malformed)
        );
        let short = q.split("&sig=").next().expect("head").to_owned() + "&sig=abcd";
        assert_eq!(
            s.verify(&dev, "phone.xml", Some(&short), 1),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let (old, _d1) = signer(&[A]);
        let (rotated, _d2) = signer(&[B, A]);
        let (after, _d3) = signer(&[B]);
        let dev = ProfileKey::device("00df1e004cd0").expect("key");
        let q_old = old.query(&dev, "p.xml", 100);
        assert_eq!(rotated.verify(&dev, "p.xml", Some(&q_old), 1), Ok(100));
        let q_new = rotated.query(&dev, "p.xml", 100);
        assert_ne!(q_old, q_new);
        assert_eq!(after.verify(&dev, "p.xml", Some(&q_new), 1), Ok(100));
        assert_eq!(
            after.verify(&dev, "p.xml", Some(&q_old), 1),
            Err(Refused::UnknownKey)
        );
    }

    #[test]
    fn short_or_repeated_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").expect("write");
        assert!(UrlSigner::load(&[short]).is_err());
        let a = dir.path().join("a");
        std::fs::write(&a, A).expect("write");
        assert!(UrlSigner::load(&[a.clone(), a]).is_err());
        assert!(UrlSigner::load(&[dir.path().join("missing")]).is_err());
        assert!(UrlSigner::load(&[]).expect("none").is_none());
    }
}

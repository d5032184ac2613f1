//! Digest authentication of SUBSCRIBE (RFC 3261 §22, RFC 8760 SHA-256, `qop=auth`).
//!
//! The credentials file holds, per user, the SHA-256 of `user:realm:password` (HA1), never
//! the password. Nonces are stateless: the issue time and an HMAC of it under the tier's
//! nonce secret, so any node of a tier that shares the secret accepts them, and a phone
//! reuses one for its refreshes until it expires (then `stale=true` asks for a new one
//! without asking for the password again). Only over TLS, unless configured otherwise: over
//! a clear transport the exchange would hand an eavesdropper what it needs for an offline
//! guess of the password. MD5 is not offered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sip_core::transport::Transport;

/// The `[notifier.digest]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    pub realm: String,
    /// One `user:<hex SHA-256 of user:realm:password>` a line; `#` starts a comment.
    pub credentials_file: PathBuf,
    /// A secret (at least 32 bytes) shared by the tier's nodes, so a nonce one node issued is
    /// good at the others. Unset: a random one per process.
    pub nonce_secret_file: Option<PathBuf>,
    /// How long a nonce is good for (refreshes within it need no new challenge).
    #[serde(with = "humantime_serde", default = "default_lifetime")]
    pub nonce_lifetime: Duration,
    /// Authenticate over UDP and TCP too (labs); otherwise a SUBSCRIBE that is not over TLS
    /// gets 403.
    #[serde(default)]
    pub allow_without_tls: bool,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(3600)
}

/// What to answer a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this user.
    Pass(String),
    /// 401 with a fresh challenge (`stale`: only the nonce was old).
    Challenge { stale: bool },
    /// 403 with the reason.
    Refuse(&'static str),
}

pub struct DigestAuth {
    realm: String,
    ha1: HashMap<String, String>,
    secret: Vec<u8>,
    lifetime: Duration,
    allow_without_tls: bool,
}

impl DigestAuth {
    pub fn load(cfg: &DigestConfig) -> Result<Self, String> {
        if cfg.realm.is_empty() || cfg.realm.contains('"') {
            return Err("notifier.digest.realm must be non-empty and hold no quote".into());
        }
        if cfg.nonce_lifetime.is_zero() {
            return Err("notifier.digest.nonce_lifetime must be positive".into());
        }
        let text = std::fs::read_to_string(&cfg.credentials_file).map_err(|e| {
            format!(
                "notifier.digest.credentials_file {}: {e}",
                cfg.credentials_file.display()
            )
        })?;
        let mut ha1 = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = || {
                format!(
                    "notifier.digest.credentials_file line {}: want user:<64 hex digits of SHA-256(user:realm:password)>",
                    n + 1
                )
            };
            let (user, h) = line.rsplit_once(':').ok_or_else(bad)?;
            let hex_ok = h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit());
            if user.is_empty() || !hex_ok {
                return Err(bad());
            }
            ha1.insert(user.to_owned(), h.to_ascii_lowercase());
        }
        let secret = match &cfg.nonce_secret_file {
            Some(f) => std::fs::read(f)
                .map_err(|e| format!("notifier.digest.nonce_secret_file {}: {e}", f.display()))
                .and_then(|s| {
                    if s.len() < 32 {
                        Err("notifier.digest.nonce_secret_file: at least 32 bytes".into())
                    } else {
                        Ok(s)
                    }
                })?,
            None => (0..32).map(|_| rand::random::<u8>()).collect(),
        };
        Ok(Self {
            realm: cfg.realm.clone(),
            ha1,
            secret,
            lifetime: cfg.nonce_lifetime,
            allow_without_tls: cfg.allow_without_tls,
        })
    }

    fn nonce_mac(&self, issued: u64) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&issued.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    fn nonce(&self, now_unix: u64) -> String {
        format!("{now_unix:x}-{}", self.nonce_mac(now_unix))
    }

    /// `Some(true)` for a nonce this tier issued that is still good, `Some(false)` for one
    /// it issued that has expired, `None` for one it never issued.
    fn nonce_fresh(&self, nonce: &str, now_unix: u64) -> Option<bool> {
        let (ts, mac) = nonce.split_once('-')?;
        let issued = u64::from_str_radix(ts, 16).ok()?;
        if !constant_eq(mac.as_bytes(), self.nonce_mac(issued).as_bytes()) {
            return None;
        }
        Some(issued <= now_unix && now_unix - issued < self.lifetime.as_secs())
    }

    /// The WWW-Authenticate value of a 401.
    pub fn challenge(&self, now_unix: u64, stale: bool) -> String {
        let mut v = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=SHA-256, qop=\"auth\"",
            self.realm,
            self.nonce(now_unix)
        );
        if stale {
            v.push_str(", stale=true");
        }
        v
    }

    /// Judges a request `method` that arrived over `transport` with `authorization` (the
    /// Authorization header's value).
    pub fn check(
        &self,
        method: &str,
        authorization: Option<&str>,
        transport: Transport,
        now_unix: u64,
    ) -> Verdict {
        if transport != Transport::Tls && !self.allow_without_tls {
            return Verdict::Refuse("Digest authentication needs TLS (sips:, port 5061)");
        }
        let Some(params) = authorization.and_then(parse_digest) else {
            return Verdict::Challenge { stale: false };
        };
        let get = |k: &str| params.get(k).map(String::as_str);
        let (Some(user), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return Verdict::Challenge { stale: false };
        };
        if get("realm") != Some(self.realm.as_str())
            || !get("algorithm").is_some_and(|a| a.eq_ignore_ascii_case("SHA-256"))
        {
            return Verdict::Challenge { stale: false };
        }
        let Some(ha1) = self.ha1.get(user) else {
            metrics::counter!("sip_auth_total", "result" => "unknown_user").increment(1);
            return Verdict::Challenge { stale: false };
        };
        let h = |s: String| hex::encode(Sha256::digest(s.as_bytes()));
        let ha2 = h(format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return Verdict::Challenge { stale: false };
                };
                h(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            None => h(format!("{ha1}:{nonce}:{ha2}")),
            Some(_) => return Verdict::Challenge { stale: false },
        };
        if !constant_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            metrics::counter!("sip_auth_total", "result" => "bad_response").increment(1);
            return Verdict::Challenge { stale: false };
        }
        match self.nonce_fresh(nonce, now_unix) {
            Some(true) => {
                metrics::counter!("sip_auth_total", "result" => "ok").increment(1);
                Verdict::Pass(user.to_owned())
            }
            // The password was right; only the nonce is old.
            Some(false) => Verdict::Challenge { stale: true },
            None => Verdict::Challenge { stale: false },
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parameters of a `Digest` credentials value (names lowercased, quotes removed).
fn parse_digest(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.trim();
    let rest = rest
        .strip_prefix("Digest ")
        .or_else(|| rest.strip_prefix("digest "))?;
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        let mut v = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        v.push(c);
                        escaped = false;
                    }
                }
            }
        } else {
            v = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.insert(name, v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(lifetime: u64) -> (DigestAuth, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("creds");
        let ha1 = hex::encode(Sha256::digest(b"alice:voice.example:s3cret"));
        std::fs::write(&creds, format!("# lines\nalice:{ha1}\n")).expect("write");
        let cfg = DigestConfig {
            realm: "voice.example".into(),
            credentials_file: creds,
            nonce_secret_file: None,
            nonce_lifetime: Duration::from_secs(lifetime),
            allow_without_tls: false,
        };
        (DigestAuth::load(&cfg).expect("load"), dir)
    }

    /// What a phone sends: the RFC 8760 response for `password`.
    fn answer(challenge: &str, password: &str, nc: &str) -> String {
        let p = parse_digest(challenge).expect("challenge");
        let h = |s: String| hex::encode(Sha256::digest(s.as_bytes()));
        let ha1 = h(format!("alice:{}:{password}", p["realm"]));
        let ha2 = h("SUBSCRIBE:sips:dev@voice.example".to_owned());
        let resp = h(format!("{ha1}:{}:{nc}:c0ffee:auth:{ha2}", p["nonce"]));
        format!(
            "Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"sips:dev@voice.example\", \
             response=\"{resp}\", algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"c0ffee\"",
            p["realm"], p["nonce"]
        )
    }

    #[test]
    fn the_right_password_passes_and_the_nonce_serves_refreshes_until_it_expires() {
        let (a, _d) = auth(60);
        let tls = Transport::Tls;
        assert_eq!(
            a.check("SUBSCRIBE", None, tls, 1000),
            Verdict::Challenge { stale: false }
        );
        let c = a.challenge(1000, false);
        assert!(
            c.contains("algorithm=SHA-256") && c.contains("qop=\"auth\""),
            "{c}"
        );
        let first = answer(&c, "s3cret", "00000001");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&first), tls, 1001),
            Verdict::Pass("alice".into())
        );
        let refresh = answer(&c, "s3cret", "00000002");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&refresh), tls, 1059),
            Verdict::Pass("alice".into())
        );
        assert_eq!(
            a.check("SUBSCRIBE", Some(&refresh), tls, 1060),
            Verdict::Challenge { stale: true }
        );
        let wrong = answer(&c, "guess", "00000003");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&wrong), tls, 1002),
            Verdict::Challenge { stale: false }
        );
        // A nonce this tier never issued is no nonce.
        let forged = first.replace(&a.nonce(1000), "3e8-000000000000000000000000");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&forged), tls, 1002),
            Verdict::Challenge { stale: false }
        );
        assert!(matches!(
            a.check("SUBSCRIBE", Some(&first), Transport::Udp, 1001),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn credentials_files_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("creds");
        std::fs::write(&creds, "alice:plaintext-password\n").expect("write");
        let cfg = DigestConfig {
            realm: "r".into(),
            credentials_file: creds,
            nonce_secret_file: None,
            nonce_lifetime: Duration::from_secs(60),
            allow_without_tls: false,
        };
        assert!(DigestAuth::load(&cfg).is_err());
    }
}

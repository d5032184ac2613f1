//! Digest authentication of SUBSCRIBE (RFC 3261 §22, RFC 8760 SHA-256, `qop=auth`), on
//! [`uaprof_api::digest`]: HA1 credentials, stateless nonces that a phone reuses for its
//! refreshes until they expire. Only over TLS, unless configured otherwise: over a clear
//! transport the exchange would hand an eavesdropper what it needs for an offline guess of
//! the password. MD5 is not offered.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sip_core::transport::Transport;
use uaprof_api::digest::{DigestRealm, Failure};

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
    realm: DigestRealm,
    allow_without_tls: bool,
}

impl DigestAuth {
    pub fn load(cfg: &DigestConfig) -> Result<Self, String> {
        let realm = DigestRealm::load(
            "notifier.digest",
            &cfg.realm,
            &cfg.credentials_file,
            cfg.nonce_secret_file.as_deref(),
            cfg.nonce_lifetime,
        )?;
        Ok(Self {
            realm,
            allow_without_tls: cfg.allow_without_tls,
        })
    }

    /// The WWW-Authenticate value of a 401.
    pub fn challenge(&self, now_unix: u64, stale: bool) -> String {
        self.realm.challenge(now_unix, stale)
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
        let verdict = self.realm.check(method, authorization, now_unix);
        let result = match &verdict {
            Ok(_) => "ok",
            Err(f) => f.label(),
        };
        metrics::counter!("sip_auth_total", "result" => result).increment(1);
        match verdict {
            Ok(user) => Verdict::Pass(user),
            // The password was right; only the nonce is old.
            Err(Failure::StaleNonce) => Verdict::Challenge { stale: true },
            Err(_) => Verdict::Challenge { stale: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_is_authenticated_unless_allowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("creds");
        let line = uaprof_api::digest::credentials_line("alice", "voice.example", "s3cret");
        std::fs::write(&creds, format!("{line}\n")).expect("write");
        let mut cfg = DigestConfig {
            realm: "voice.example".into(),
            credentials_file: creds,
            nonce_secret_file: None,
            nonce_lifetime: Duration::from_secs(60),
            allow_without_tls: false,
        };
        let a = DigestAuth::load(&cfg).expect("load");
        let c = a.challenge(1000, false);
        let uri = "sips:dev@voice.example";
        let ok =
            uaprof_api::digest::answer(&c, "SUBSCRIBE", uri, "alice", "s3cret", 1).expect("answer");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&ok), Transport::Tls, 1001),
            Verdict::Pass("alice".into())
        );
        assert!(matches!(
            a.check("SUBSCRIBE", Some(&ok), Transport::Udp, 1001),
            Verdict::Refuse(_)
        ));
        assert_eq!(
            a.check("SUBSCRIBE", Some(&ok), Transport::Tls, 1060),
            Verdict::Challenge { stale: true }
        );
        cfg.allow_without_tls = true;
        let a = DigestAuth::load(&cfg).expect("load");
        let c = a.challenge(1000, false);
        let ok =
            uaprof_api::digest::answer(&c, "SUBSCRIBE", uri, "alice", "s3cret", 1).expect("answer");
        assert_eq!(
            a.check("SUBSCRIBE", Some(&ok), Transport::Udp, 1001),
            Verdict::Pass("alice".into())
        );
    }
}

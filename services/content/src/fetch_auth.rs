//! Optional client authentication of document fetches (`[content.fetch_auth]`).
//!
//! A fetch is authenticated by a verified client certificate (HTTPS or HTTP/3 with
//! `http_tls.client_ca_file`) or by HTTP Digest (RFC 7616, SHA-256, `qop=auth`, stateless
//! nonces shared by the tier). Either names a *principal*:
//!
//! * a device, when a certificate name (subject CN, or a DNS, URI or e-mail SAN) or the
//!   Digest user name is a MAC in any spelling phones use (`00:04:f2:ab:cd:ef`,
//!   `0004f2abcdef`, `SEP0004F2ABCDEF` as Cisco names its certificates);
//! * a user, when it is an AoR (`sip:alice@example.net`, `alice@example.net`);
//! * otherwise nobody in particular: a client of the tier's CA (or a shared account).
//!
//! Then a device's documents go only to that device; a user's only to that user or to a
//! device whose default user it is; class and local-network documents, which many phones
//! share, to any authenticated client.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uaprof_api::ProfileKey;
use uaprof_api::digest::{DigestRealm, Failure};

/// The `[content.fetch_auth]` table. With neither set, fetches are not authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchAuthConfig {
    /// A verified client certificate authenticates a fetch (needs
    /// `http_tls.client_ca_file`).
    pub client_certificates: bool,
    /// HTTP Digest authenticates a fetch.
    pub digest: Option<FetchDigestConfig>,
}

/// `[content.fetch_auth.digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchDigestConfig {
    pub realm: String,
    /// One `user:<hex SHA-256 of user:realm:password>` a line; the user is a MAC, an AoR, or
    /// any other name (shared documents only).
    pub credentials_file: PathBuf,
    /// A secret (at least 32 bytes) shared by the tier's nodes; unset: one per process.
    pub nonce_secret_file: Option<PathBuf>,
    #[serde(with = "humantime_serde", default = "default_lifetime")]
    pub nonce_lifetime: Duration,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(3600)
}

/// What a client certificate says of its holder: its hash (a provisioner's
/// `client_cert_sha256`) and the device or user it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub sha256: [u8; 32],
    pub names: Vec<ProfileKey>,
}

impl PeerCert {
    /// Reads a certificate the TLS layer has already verified.
    pub fn from_der(der: &[u8]) -> Self {
        let sha256 = <[u8; 32]>::from(Sha256::digest(der));
        let mut names = Vec::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            for cn in cert.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.extend(principal_of(s, true));
                }
            }
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                use x509_parser::extensions::GeneralName;
                for n in &san.value.general_names {
                    let s = match n {
                        GeneralName::DNSName(s)
                        | GeneralName::RFC822Name(s)
                        | GeneralName::URI(s) => *s,
                        _ => continue,
                    };
                    names.extend(principal_of(s, false));
                }
            }
        }
        names.dedup();
        Self { sha256, names }
    }
}

/// The device or user a certificate name or Digest user name stands for. `cn`: a subject
/// common name, where Cisco's `SEP<mac>` (after a model prefix) names the device too.
fn principal_of(name: &str, cn: bool) -> Option<ProfileKey> {
    if let Ok(k) = ProfileKey::device(name) {
        return Some(k);
    }
    if cn {
        let tail = name.rsplit_once("SEP").map(|(_, t)| t);
        if let Some(k) = tail.and_then(|t| ProfileKey::device(t).ok()) {
            return Some(k);
        }
    }
    let aor = name.strip_prefix("mailto:").unwrap_or(name);
    if aor.contains('@') {
        return ProfileKey::user(aor).ok();
    }
    None
}

/// Who a fetch is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The device or user named.
    Named(ProfileKey),
    /// An authenticated client that names no device or user.
    Anonymous,
}

/// A fetch that did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthenticated {
    /// 401 with this `WWW-Authenticate` value.
    Challenge(String, Failure),
    /// 403: only a certificate would do, and there is none.
    CertificateRequired,
}

pub struct FetchAuth {
    certificates: bool,
    digest: Option<DigestRealm>,
}

impl FetchAuth {
    /// `None` when fetches are not authenticated.
    pub fn load(cfg: &FetchAuthConfig) -> Result<Option<Self>, String> {
        let digest = match &cfg.digest {
            None => None,
            Some(d) => Some(DigestRealm::load(
                "content.fetch_auth.digest",
                &d.realm,
                &d.credentials_file,
                d.nonce_secret_file.as_deref(),
                d.nonce_lifetime,
            )?),
        };
        if !cfg.client_certificates && digest.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            certificates: cfg.client_certificates,
            digest,
        }))
    }

    /// Who a verified client certificate says the client is, when certificates
    /// authenticate fetches (`None` otherwise, or without one).
    pub fn certificate_principals(&self, cert: Option<&PeerCert>) -> Option<Vec<Principal>> {
        let c = cert.filter(|_| self.certificates)?;
        if c.names.is_empty() {
            return Some(vec![Principal::Anonymous]);
        }
        Some(c.names.iter().cloned().map(Principal::Named).collect())
    }

    /// Who a request's Digest credentials say the client is (`authorization`, for `method`
    /// on `uri`, the request target). A certificate that does not cover the request leaves
    /// the client this way too.
    pub fn digest_principals(
        &self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        now_unix: u64,
    ) -> Result<Vec<Principal>, Unauthenticated> {
        let Some(realm) = &self.digest else {
            return Err(Unauthenticated::CertificateRequired);
        };
        let challenge = |f: Failure| {
            Unauthenticated::Challenge(realm.challenge(now_unix, f == Failure::StaleNonce), f)
        };
        // The credentials are for this request's target, not replayed from another URL.
        let for_uri = authorization
            .and_then(uaprof_api::digest::parse_digest)
            .and_then(|p| p.get("uri").cloned());
        if authorization.is_some() && for_uri.as_deref() != Some(uri) {
            return Err(challenge(Failure::NoCredentials));
        }
        let user = realm
            .check(method, authorization, now_unix)
            .map_err(challenge)?;
        Ok(vec![
            principal_of(&user, false).map_or(Principal::Anonymous, Principal::Named),
        ])
    }
}

/// Whether `principals` may read the documents of `key`; `default_user` is the user of a
/// named device, looked up by the caller only when `key` is a user.
pub fn may_read(
    principals: &[Principal],
    key: &ProfileKey,
    default_user: impl Fn(&ProfileKey) -> Option<String>,
) -> bool {
    match key {
        ProfileKey::Class { .. } | ProfileKey::LocalNetwork(_) => !principals.is_empty(),
        ProfileKey::Device(_) => principals.contains(&Principal::Named(key.clone())),
        ProfileKey::User(aor) => principals.iter().any(|p| match p {
            Principal::Named(k @ ProfileKey::User(_)) => k == key,
            Principal::Named(d @ ProfileKey::Device(_)) => {
                default_user(d).is_some_and(|u| &u == aor)
            }
            _ => false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_become_principals() {
        let dev = ProfileKey::device("0004f2abcdef").expect("key");
        assert_eq!(principal_of("00:04:F2:AB:CD:EF", false), Some(dev.clone()));
        assert_eq!(principal_of("CP-7945G-SEP0004F2ABCDEF", true), Some(dev));
        assert_eq!(principal_of("CP-7945G-SEP0004F2ABCDEF", false), None);
        assert_eq!(
            principal_of("sip:alice@Example.NET", false),
            ProfileKey::user("alice@example.net").ok()
        );
        assert_eq!(principal_of("phones.example.net", false), None);
    }

    #[test]
    fn a_device_reads_its_own_its_users_and_shared_documents() {
        let dev = ProfileKey::device("0004f2abcdef").expect("key");
        let other = ProfileKey::device("0004f2000000").expect("key");
        let alice = ProfileKey::user("alice@example.net").expect("key");
        let bob = ProfileKey::user("bob@example.net").expect("key");
        let class = ProfileKey::class("acme", "x1").expect("key");
        let users = |d: &ProfileKey| {
            (d.to_string().contains("abcdef")).then(|| "alice@example.net".to_owned())
        };
        let p = [Principal::Named(dev.clone())];
        assert!(may_read(&p, &dev, users));
        assert!(!may_read(&p, &other, users));
        assert!(may_read(&p, &alice, users));
        assert!(!may_read(&p, &bob, users));
        assert!(may_read(&p, &class, users));
        let anon = [Principal::Anonymous];
        assert!(may_read(&anon, &class, users));
        assert!(!may_read(&anon, &dev, users));
        assert!(!may_read(&anon, &alice, users));
        assert!(may_read(&[Principal::Named(alice.clone())], &alice, users));
        assert!(!may_read(&[], &class, users));
    }
}

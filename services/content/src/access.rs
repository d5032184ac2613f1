//! Who may use the provisioning API, and for which keys.
//!
//! A provisioner presents a bearer token (`Authorization: Bearer <token>`). The
//! configuration holds only each token's SHA-256, never the token, with the provisioner's
//! name and the keys it may touch, as patterns over the canonical key (`device/mac:00df1e*`,
//! `class/acme:*`, `user/*@tenant.example`): `*` stands for any run of characters, anything
//! else must match exactly. A key is matched after normalisation, so another spelling of a
//! MAC or an AoR reaches the same rule.
//!
//! Without tokens the API is open to whoever reaches its listener; the server then refuses
//! to bind that listener beyond loopback unless `allow_open` says so.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uaprof_api::ProfileKey;

/// The `[provisioning]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// The provisioners. Empty: no authentication (loopback only, unless `allow_open`).
    pub tokens: Vec<TokenConfig>,
    /// Serve an unauthenticated API on a non-loopback listener (a lab, or a network only the
    /// OSS can reach). Off: the server refuses to start that way.
    pub allow_open: bool,
}

/// One provisioner's credentials and rights.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The provisioner, as the audit log and the metrics name it.
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`). Empty when
    /// the provisioner authenticates by client certificate only.
    pub sha256: String,
    /// Lowercase hex SHA-256 of the DER client certificate that identifies this provisioner
    /// over mutual TLS (`openssl x509 -in cert.pem -outform DER | sha256sum`), verified
    /// against `provision_tls.client_ca_file`.
    pub client_cert_sha256: String,
    /// Key patterns this provisioner may read and write (see the module docs).
    pub allow: Vec<String>,
    /// Reads only (GET of a key's listing); every write is refused.
    pub read_only: bool,
}

impl ProvisioningConfig {
    /// Checks what serde cannot: names, digests and patterns.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for t in &self.tokens {
            let name_ok = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !name_ok {
                return Err(format!(
                    "provisioning token name {:?} must be 1-64 of A-Z a-z 0-9 - _ . @",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!(
                    "provisioning token name {:?} appears twice",
                    t.name
                ));
            }
            let hex_ok = |h: &str| {
                h.len() == 64
                    && h.chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            };
            if t.sha256.is_empty() && t.client_cert_sha256.is_empty() {
                return Err(format!(
                    "provisioning token {:?} has neither sha256 (a bearer token) nor client_cert_sha256",
                    t.name
                ));
            }
            for (what, h) in [
                ("sha256", &t.sha256),
                ("client_cert_sha256", &t.client_cert_sha256),
            ] {
                if !h.is_empty() && !hex_ok(h) {
                    return Err(format!(
                        "provisioning token {:?}: {what} must be 64 lowercase hex digits",
                        t.name
                    ));
                }
            }
            let repeated = (!t.sha256.is_empty() && !digests.insert(t.sha256.as_str()))
                || (!t.client_cert_sha256.is_empty()
                    && !digests.insert(t.client_cert_sha256.as_str()));
            if repeated {
                return Err(format!(
                    "provisioning token {:?} has the digest of another token",
                    t.name
                ));
            }
            if t.allow.is_empty() {
                return Err(format!(
                    "provisioning token {:?} allows no keys (allow = [\"device/*\", ...])",
                    t.name
                ));
            }
            if let Some(p) = t.allow.iter().find(|p| p.is_empty() || p.contains(' ')) {
                return Err(format!(
                    "provisioning token {:?}: pattern {p:?} is empty or holds a space",
                    t.name
                ));
            }
        }
        Ok(())
    }
}

/// What a request wants to do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Read,
    Write,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials nobody holds: 401.
    Unauthenticated(&'static str),
    /// A known provisioner outside its rights: 403.
    Forbidden { who: String, reason: String },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden { .. } => 403,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Self::Unauthenticated(r) => (*r).to_owned(),
            Self::Forbidden { reason, .. } => reason.clone(),
        }
    }
}

struct Provisioner {
    name: String,
    /// The token's digest, when it has a token.
    digest: Option<[u8; 32]>,
    /// Its client certificate's digest, when it has one.
    cert: Option<[u8; 32]>,
    allow: Vec<String>,
    read_only: bool,
}

/// The provisioning API's access policy, built from [`ProvisioningConfig`].
pub struct Access {
    provisioners: Vec<Provisioner>,
}

/// The name the audit log gives requests on an API without tokens.
pub const ANONYMOUS: &str = "anonymous";

impl Access {
    pub fn new(config: &ProvisioningConfig) -> Result<Self, String> {
        config.validate()?;
        let provisioners = config
            .tokens
            .iter()
            .map(|t| {
                let decode = |h: &str| -> Result<Option<[u8; 32]>, String> {
                    if h.is_empty() {
                        return Ok(None);
                    }
                    let mut d = [0u8; 32];
                    hex::decode_to_slice(h, &mut d)
                        .map_err(|e| format!("provisioning token {:?}: {e}", t.name))?;
                    Ok(Some(d))
                };
                Ok(Provisioner {
                    name: t.name.clone(),
                    digest: decode(&t.sha256)?,
                    cert: decode(&t.client_cert_sha256)?,
                    allow: t.allow.clone(),
                    read_only: t.read_only,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { provisioners })
    }

    /// Whether requests need a token at all.
    pub fn is_open(&self) -> bool {
        self.provisioners.is_empty()
    }

    /// Who presents `authorization` (the header's value, if any) over a connection whose
    /// verified client certificate, if any, has the SHA-256 `client_cert`. A certificate that
    /// names a provisioner is enough; otherwise the bearer token decides.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        client_cert: Option<&[u8; 32]>,
    ) -> Result<&str, Refusal> {
        if self.is_open() {
            return Ok(ANONYMOUS);
        }
        if let Some(fp) = client_cert
            && let Some(p) = self
                .provisioners
                .iter()
                .find(|p| p.cert.as_ref() == Some(fp))
        {
            return Ok(p.name.as_str());
        }
        let Some(value) = authorization else {
            return Err(Refusal::Unauthenticated("a bearer token is required"));
        };
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated(
                "the Authorization header must be \"Bearer <token>\"",
            ))?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Every digest is compared in full, so the time taken says nothing about which one
        // came close.
        let mut found = None;
        for p in &self.provisioners {
            let Some(known) = &p.digest else { continue };
            let diff = known
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(p.name.as_str());
            }
        }
        found.ok_or(Refusal::Unauthenticated("unknown token"))
    }

    /// Whether `who` (from [`Access::authenticate`]) may do `intent` to `key`.
    pub fn authorize(&self, who: &str, key: &ProfileKey, intent: Intent) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let Some(p) = self.provisioners.iter().find(|p| p.name == who) else {
            return Err(Refusal::Unauthenticated("unknown token"));
        };
        let forbidden = |reason: String| Refusal::Forbidden {
            who: who.to_owned(),
            reason,
        };
        if intent == Intent::Write && p.read_only {
            return Err(forbidden(format!("{who} may only read")));
        }
        let canonical = key.to_string();
        if p.allow.iter().any(|pat| glob(pat, &canonical)) {
            Ok(())
        } else {
            Err(forbidden(format!("{who} may not change {canonical}")))
        }
    }
}

impl Access {
    /// Whether `name` is one of the configured provisioners.
    pub fn is_provisioner(&self, name: &str) -> bool {
        self.provisioners.iter().any(|p| p.name == name)
    }

    /// The same policy for a change from the change topic: a producer that is a configured
    /// provisioner may change only its keys; any other producer is left to
    /// `kafka.allowed_producers`.
    pub fn authorize_producer(
        &self,
        producer: &str,
        key: &ProfileKey,
        intent: Intent,
    ) -> Result<(), Refusal> {
        if self.is_provisioner(producer) {
            self.authorize(producer, key, intent)
        } else {
            Ok(())
        }
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, between)) = middle.split_last() else {
        // No `*`: the whole text must have been the prefix.
        return rest.is_empty();
    };
    for piece in between {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn access() -> Access {
        Access::new(&ProvisioningConfig {
            tokens: vec![
                TokenConfig {
                    name: "oss-east".into(),
                    sha256: sha("s3cret-east"),
                    allow: vec!["device/mac:00df1e*".into(), "user/*@east.example".into()],
                    read_only: false,
                    ..TokenConfig::default()
                },
                TokenConfig {
                    name: "auditor".into(),
                    sha256: sha("s3cret-audit"),
                    allow: vec!["*".into()],
                    read_only: true,
                    ..TokenConfig::default()
                },
                TokenConfig {
                    name: "robot".into(),
                    client_cert_sha256: sha("robot-cert"),
                    allow: vec!["class/*".into()],
                    ..TokenConfig::default()
                },
            ],
            allow_open: false,
        })
        .expect("valid")
    }

    #[test]
    fn globs() {
        assert!(glob("class/acme:*", "class/acme:Z100"));
        assert!(!glob("class/acme:*", "class/acmex:Z100"));
        assert!(glob("user/*@east.example", "user/alice@east.example"));
        assert!(!glob("user/*@east.example", "user/alice@east.example.evil"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "a-b-c") && glob("a*b*c", "abc") && !glob("a*b*c", "acb"));
        assert!(!glob("ab*ba", "aba"), "the two ends may not overlap");
        assert!(glob("device/mac:00df1e004cd0", "device/mac:00df1e004cd0"));
        assert!(!glob("device/mac:00df1e004cd0", "device/mac:00df1e004cd01"));
    }

    #[test]
    fn tokens_authenticate_by_digest_and_rights_follow_the_name() {
        let a = access();
        assert_eq!(
            a.authenticate(Some(b"Bearer s3cret-east"), None),
            Ok("oss-east")
        );
        assert!(matches!(
            a.authenticate(None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            a.authenticate(Some(b"Bearer s3cret-wrong"), None),
            Err(Refusal::Unauthenticated("unknown token"))
        ));
        assert!(matches!(
            a.authenticate(Some(b"Basic b3NzOnB3"), None),
            Err(Refusal::Unauthenticated(_))
        ));
        // A MAC in another spelling normalises into the same range.
        let dev = ProfileKey::device("00:DF:1E:00:4C:D0").expect("key");
        let other = ProfileKey::device("00:11:22:33:44:55").expect("key");
        let user = ProfileKey::user("sip:bob@east.example").expect("key");
        assert_eq!(a.authorize("oss-east", &dev, Intent::Write), Ok(()));
        assert_eq!(a.authorize("oss-east", &user, Intent::Write), Ok(()));
        let refused = a.authorize("oss-east", &other, Intent::Write);
        assert!(
            matches!(&refused, Err(Refusal::Forbidden { reason, .. }) if reason.contains("device/mac:001122334455")),
            "{refused:?}"
        );
        assert_eq!(a.authorize("auditor", &other, Intent::Read), Ok(()));
        assert!(matches!(
            a.authorize("auditor", &other, Intent::Write),
            Err(Refusal::Forbidden { .. })
        ));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let token = |name: &str, digest: String, allow: &[&str]| TokenConfig {
            name: name.into(),
            sha256: digest,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            read_only: false,
            ..TokenConfig::default()
        };
        let check = |tokens| {
            ProvisioningConfig {
                tokens,
                allow_open: false,
            }
            .validate()
        };
        assert!(check(vec![token("a", sha("x"), &["*"])]).is_ok());
        assert!(check(vec![token("", sha("x"), &["*"])]).is_err());
        assert!(check(vec![token("a b", sha("x"), &["*"])]).is_err());
        assert!(check(vec![token("a", "ABC".into(), &["*"])]).is_err());
        assert!(check(vec![token("a", sha("x").to_uppercase(), &["*"])]).is_err());
        assert!(check(vec![token("a", sha("x"), &[])]).is_err());
        assert!(check(vec![token("a", sha("x"), &[""])]).is_err());
        assert!(
            check(vec![
                token("a", sha("x"), &["*"]),
                token("a", sha("y"), &["*"])
            ])
            .is_err()
        );
        assert!(
            check(vec![
                token("a", sha("x"), &["*"]),
                token("b", sha("x"), &["*"])
            ])
            .is_err()
        );
    }

    #[test]
    fn a_client_certificate_names_its_provisioner_without_a_token() {
        let a = access();
        let robot: [u8; 32] = Sha256::digest(b"robot-cert").into();
        let stranger: [u8; 32] = Sha256::digest(b"other-cert").into();
        assert_eq!(a.authenticate(None, Some(&robot)), Ok("robot"));
        // A verified certificate nobody is named by leaves the token to decide.
        assert!(a.authenticate(None, Some(&stranger)).is_err());
        assert_eq!(
            a.authenticate(Some(b"Bearer s3cret-east"), Some(&stranger)),
            Ok("oss-east")
        );
        // A provisioner without a token cannot be reached by guessing an empty one.
        assert!(a.authenticate(Some(b"Bearer "), None).is_err());
        let class = ProfileKey::class("acme", "Z100").expect("key");
        assert_eq!(a.authorize("robot", &class, Intent::Write), Ok(()));
        let check = |t: TokenConfig| {
            ProvisioningConfig {
                tokens: vec![t],
                allow_open: false,
            }
            .validate()
        };
        let neither = TokenConfig {
            name: "x".into(),
            allow: vec!["*".into()],
            ..TokenConfig::default()
        };
        assert!(
            check(neither.clone()).is_err(),
            "neither a token nor a certificate"
        );
        assert!(
            check(TokenConfig {
                client_cert_sha256: "zz".into(),
                ..neither
            })
            .is_err()
        );
    }

    #[test]
    fn a_producer_named_in_the_policy_keeps_to_its_keys() {
        let a = access();
        let dev = ProfileKey::device("00:DF:1E:00:4C:D0").expect("key");
        let class = ProfileKey::class("acme", "Z100").expect("key");
        assert!(a.is_provisioner("oss-east") && !a.is_provisioner("oss-west"));
        assert_eq!(
            a.authorize_producer("oss-east", &dev, Intent::Write),
            Ok(())
        );
        assert!(matches!(
            a.authorize_producer("oss-east", &class, Intent::Write),
            Err(Refusal::Forbidden { .. })
        ));
        assert!(
            a.authorize_producer("auditor", &dev, Intent::Write)
                .is_err()
        );
        // Producers the policy does not name are kafka.allowed_producers' to judge.
        assert_eq!(
            a.authorize_producer("oss-west", &class, Intent::Write),
            Ok(())
        );
    }

    #[test]
    fn an_api_without_tokens_is_open() {
        let a = Access::new(&ProvisioningConfig::default()).expect("valid");
        assert!(a.is_open());
        assert_eq!(a.authenticate(None, None), Ok(ANONYMOUS));
        let dev = ProfileKey::device("00:DF:1E:00:4C:D0").expect("key");
        assert_eq!(a.authorize(ANONYMOUS, &dev, Intent::Write), Ok(()));
    }
}

//! Digest access authentication, server side, for SIP (RFC 3261 §22, RFC 8760) and HTTP
//! (RFC 7616) alike: SHA-256 only, `qop=auth`.
//!
//! A credentials file holds, per user, the SHA-256 of `user:realm:password` (HA1), never the
//! password. Nonces are stateless: the issue time and an HMAC of it under the tier's nonce
//! secret, so any node of a tier that shares the secret accepts them, and a client reuses
//! one until it expires (then `stale=true` asks for a new one without asking for the
//! password again). MD5 is not offered.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

/// Why a request's credentials did not authenticate it; every one is answered with a new
/// challenge (the caller counts them by [`Failure::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `Digest` credentials, or ones missing a parameter, for another realm or algorithm.
    NoCredentials,
    UnknownUser,
    /// The response does not match the user's HA1: a wrong password.
    BadResponse,
    /// Right password, but a nonce this tier issued has expired.
    StaleNonce,
    /// A nonce this tier never issued.
    UnknownNonce,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::UnknownUser => "unknown_user",
            Self::BadResponse => "bad_response",
            Self::StaleNonce => "stale_nonce",
            Self::UnknownNonce => "unknown_nonce",
        }
    }
}

/// One realm's users and nonces.
pub struct DigestRealm {
    realm: String,
    ha1: HashMap<String, String>,
    secret: Vec<u8>,
    lifetime: Duration,
}

impl DigestRealm {
    /// Loads the credentials file (one `user:<hex SHA-256 of user:realm:password>` a line,
    /// `#` starts a comment) and the nonce secret (at least 32 bytes; unset: a random one per
    /// process). Errors name the setting: `what` is the configuration table (`notifier.digest`).
    pub fn load(
        what: &str,
        realm: &str,
        credentials_file: &Path,
        nonce_secret_file: Option<&Path>,
        nonce_lifetime: Duration,
    ) -> Result<Self, String> {
        if realm.is_empty() || realm.contains('"') {
            return Err(format!("{what}.realm must be non-empty and hold no quote"));
        }
        if nonce_lifetime.is_zero() {
            return Err(format!("{what}.nonce_lifetime must be positive"));
        }
        let text = std::fs::read_to_string(credentials_file).map_err(|e| {
            format!(
                "{what}.credentials_file {}: {e}",
                credentials_file.display()
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
                    "{what}.credentials_file line {}: want user:<64 hex digits of SHA-256(user:realm:password)>",
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
        let secret = match nonce_secret_file {
            Some(f) => {
                let s = std::fs::read(f)
                    .map_err(|e| format!("{what}.nonce_secret_file {}: {e}", f.display()))?;
                if s.len() < 32 {
                    return Err(format!("{what}.nonce_secret_file: at least 32 bytes"));
                }
                s
            }
            None => (0..32).map(|_| rand::random::<u8>()).collect(),
        };
        Ok(Self {
            realm: realm.to_owned(),
            ha1,
            secret,
            lifetime: nonce_lifetime,
        })
    }

    /// The users the credentials file names.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.ha1.keys().map(String::as_str)
    }

    fn nonce_mac(&self, issued: u64) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&issued.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    /// A nonce issued at `now_unix`.
    pub fn nonce(&self, now_unix: u64) -> String {
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

    /// The `WWW-Authenticate` value of a 401.
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

    /// The user a request `method` with `authorization` (the Authorization header's value)
    /// authenticates, or why it does not.
    pub fn check(
        &self,
        method: &str,
        authorization: Option<&str>,
        now_unix: u64,
    ) -> Result<String, Failure> {
        let params = authorization
            .and_then(parse_digest)
            .ok_or(Failure::NoCredentials)?;
        let get = |k: &str| params.get(k).map(String::as_str);
        let (Some(user), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return Err(Failure::NoCredentials);
        };
        if get("realm") != Some(self.realm.as_str())
            || !get("algorithm").is_some_and(|a| a.eq_ignore_ascii_case("SHA-256"))
        {
            return Err(Failure::NoCredentials);
        }
        let ha1 = self.ha1.get(user).ok_or(Failure::UnknownUser)?;
        let h = |s: String| hex::encode(Sha256::digest(s.as_bytes()));
        let ha2 = h(format!("{method}:{uri}"));
        // The challenge offers `qop="auth"` only; an answer without it (RFC 2069) would
        // skip the client nonce and count.
        if get("qop") != Some("auth") {
            return Err(Failure::NoCredentials);
        }
        let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
            return Err(Failure::NoCredentials);
        };
        let expected = h(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        if !constant_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(Failure::BadResponse);
        }
        match self.nonce_fresh(nonce, now_unix) {
            Some(true) => Ok(user.to_owned()),
            Some(false) => Err(Failure::StaleNonce),
            None => Err(Failure::UnknownNonce),
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parameters of a `Digest` credentials value (names lowercased, quotes removed).
pub fn parse_digest(value: &str) -> Option<HashMap<String, String>> {
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

/// What a client sends: the RFC 7616 / RFC 8760 answer to `challenge` (`qop=auth`).
/// For tests and the load generator.
pub fn answer(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    nc: u32,
) -> Option<String> {
    answer_challenge(challenge, method, uri, user, password, nc).ok()
}

/// The answer to a server's (or a phone's) Digest `challenge` (RFC 7616, RFC 3261 §22):
/// `algorithm` MD5 (the default) or SHA-256, `qop=auth` when offered, the RFC 2069 form
/// when no qop is; `opaque` is echoed. `auth-int` alone and other algorithms are refused
/// with the reason.
pub fn answer_challenge(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    nc: u32,
) -> Result<String, &'static str> {
    let cnonce = format!("{:016x}", rand::random::<u64>());
    answer_with_cnonce(challenge, method, uri, user, password, nc, &cnonce)
}

fn answer_with_cnonce(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    nc: u32,
    cnonce: &str,
) -> Result<String, &'static str> {
    let p = parse_digest(challenge).ok_or("not a Digest challenge")?;
    let realm = p.get("realm").ok_or("challenge without realm")?;
    let nonce = p.get("nonce").ok_or("challenge without nonce")?;
    let algorithm = p.get("algorithm").map_or("MD5", String::as_str);
    let h: fn(&str) -> String = if algorithm.eq_ignore_ascii_case("MD5") {
        |s| hex::encode(<md5::Md5 as md5::Digest>::digest(s.as_bytes()))
    } else if algorithm.eq_ignore_ascii_case("SHA-256") {
        |s| hex::encode(Sha256::digest(s.as_bytes()))
    } else {
        return Err("unsupported digest algorithm");
    };
    let qop = match p.get("qop") {
        None => None,
        Some(q) if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) => Some("auth"),
        Some(_) => return Err("challenge offers no qop=auth"),
    };
    let ha1 = h(&format!("{user}:{realm}:{password}"));
    let ha2 = h(&format!("{method}:{uri}"));
    let mut out =
        format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\"");
    match qop {
        Some(qop) => {
            let resp = h(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}"));
            out.push_str(&format!(
                ", response=\"{resp}\", algorithm={algorithm}, qop={qop}, nc={nc:08x}, \
                 cnonce=\"{cnonce}\""
            ));
        }
        None => {
            let resp = h(&format!("{ha1}:{nonce}:{ha2}"));
            out.push_str(&format!(", response=\"{resp}\", algorithm={algorithm}"));
        }
    }
    if let Some(opaque) = p.get("opaque") {
        out.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Ok(out)
}

/// A credentials file line for `user` with `password` in `realm`.
pub fn credentials_line(user: &str, realm: &str, password: &str) -> String {
    let ha1 = hex::encode(Sha256::digest(
        format!("{user}:{realm}:{password}").as_bytes(),
    ));
    format!("{user}:{ha1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(answer: &str) -> String {
        parse_digest(answer).expect("digest")["response"].clone()
    }

    #[test]
    fn answers_match_the_rfc_examples() {
        // RFC 2617 §3.5 (MD5, qop=auth).
        let c = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
                 opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let a = answer_with_cnonce(
            c,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            1,
            "0a4f113b",
        )
        .expect("answer");
        assert_eq!(response_of(&a), "6629fae49393a05397450978507c4ef1");
        assert!(
            a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""),
            "{a}"
        );
        assert!(a.contains("qop=auth,") && a.contains("nc=00000001"), "{a}");
        // RFC 7616 §3.9.1 (SHA-256).
        let c = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
                 algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let a = answer_with_cnonce(
            c,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        .expect("answer");
        assert_eq!(
            response_of(&a),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn challenges_without_qop_or_with_unusable_ones() {
        // RFC 2069 form: H(HA1:nonce:HA2), no cnonce.
        let c = "Digest realm=\"r\", nonce=\"n\"";
        let a = answer_challenge(c, "NOTIFY", "sip:p@h", "u", "pw", 1).expect("answer");
        let h = |s: &str| hex::encode(<md5::Md5 as md5::Digest>::digest(s.as_bytes()));
        let want = h(&format!("{}:n:{}", h("u:r:pw"), h("NOTIFY:sip:p@h")));
        assert_eq!(response_of(&a), want);
        assert!(!a.contains("cnonce"), "{a}");
        let only_int = "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"";
        assert!(answer_challenge(only_int, "NOTIFY", "sip:p@h", "u", "pw", 1).is_err());
        let sha512 = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256";
        assert!(answer_challenge(sha512, "NOTIFY", "sip:p@h", "u", "pw", 1).is_err());
        assert!(answer_challenge("Basic realm=x", "NOTIFY", "sip:p@h", "u", "pw", 1).is_err());
    }

    fn realm(lifetime: u64) -> (DigestRealm, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("creds");
        let line = credentials_line("alice", "voice.example", "s3cret");
        std::fs::write(&creds, format!("# lines\n{line}\n")).expect("write");
        let r = DigestRealm::load(
            "t",
            "voice.example",
            &creds,
            None,
            Duration::from_secs(lifetime),
        )
        .expect("load");
        (r, dir)
    }

    const URI: &str = "sips:dev@voice.example";

    #[test]
    fn the_right_password_passes_and_the_nonce_serves_until_it_expires() {
        let (r, _d) = realm(60);
        assert_eq!(
            r.check("SUBSCRIBE", None, 1000),
            Err(Failure::NoCredentials)
        );
        let c = r.challenge(1000, false);
        assert!(
            c.contains("algorithm=SHA-256") && c.contains("qop=\"auth\""),
            "{c}"
        );
        let first = answer(&c, "SUBSCRIBE", URI, "alice", "s3cret", 1).expect("answer");
        assert_eq!(r.check("SUBSCRIBE", Some(&first), 1001), Ok("alice".into()));
        let refresh = answer(&c, "SUBSCRIBE", URI, "alice", "s3cret", 2).expect("answer");
        assert_eq!(
            r.check("SUBSCRIBE", Some(&refresh), 1059),
            Ok("alice".into())
        );
        assert_eq!(
            r.check("SUBSCRIBE", Some(&refresh), 1060),
            Err(Failure::StaleNonce)
        );
        // Signed for another method: not this request's answer.
        assert_eq!(
            r.check("GET", Some(&first), 1001),
            Err(Failure::BadResponse)
        );
        let wrong = answer(&c, "SUBSCRIBE", URI, "alice", "guess", 3).expect("answer");
        assert_eq!(
            r.check("SUBSCRIBE", Some(&wrong), 1002),
            Err(Failure::BadResponse)
        );
        // RFC 2069 style, without qop: not an answer to this challenge.
        let no_qop = first.replace(", qop=auth", "");
        assert_eq!(
            r.check("SUBSCRIBE", Some(&no_qop), 1001),
            Err(Failure::NoCredentials)
        );
        let bob = answer(&c, "SUBSCRIBE", URI, "bob", "s3cret", 1).expect("answer");
        assert_eq!(
            r.check("SUBSCRIBE", Some(&bob), 1002),
            Err(Failure::UnknownUser)
        );
        // A nonce this tier never issued is no nonce (the response is computed over it).
        let forged_challenge = c.replace(&r.nonce(1000), "3e8-000000000000000000000000");
        let forged =
            answer(&forged_challenge, "SUBSCRIBE", URI, "alice", "s3cret", 1).expect("answer");
        assert_eq!(
            r.check("SUBSCRIBE", Some(&forged), 1002),
            Err(Failure::UnknownNonce)
        );
    }

    #[test]
    fn credentials_files_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("creds");
        std::fs::write(&creds, "alice:plaintext-password\n").expect("write");
        let err = DigestRealm::load("x.digest", "r", &creds, None, Duration::from_secs(60))
            .err()
            .expect("refused");
        assert!(err.contains("x.digest.credentials_file line 1"), "{err}");
    }
}

//! Certificates made at test time: a CA, a server certificate for `localhost` it issued, and
//! client certificates with the names a test needs, each written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, DER (for its SHA-256).
    pub der: Vec<u8>,
}

pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): what clients trust and what verifies client certificates.
    pub ca: PathBuf,
    /// `localhost` (and 127.0.0.1), issued by the CA.
    pub server: CertFiles,
}

impl Pki {
    /// A new CA named `name` with its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca, cert.pem()).expect("write CA");
        let issuer = Issuer::new(params, key);
        let mut pki = Self {
            dir: dir.to_owned(),
            issuer,
            ca,
            server: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                der: Vec::new(),
            },
        };
        pki.server = pki.issue(
            &format!("{name}-server"),
            "localhost",
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
        );
        pki
    }

    /// A certificate with subject CN `cn` and these subject alternative names (DNS names,
    /// IP addresses, `sip:`/`https:` URIs and e-mail addresses by their form).
    pub fn issue(&self, file_stem: &str, cn: &str, sans: &[String]) -> CertFiles {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for s in sans {
            let san = if let Ok(ip) = s.parse() {
                SanType::IpAddress(ip)
            } else if s.contains("://") || s.starts_with("sip:") || s.starts_with("sips:") {
                SanType::URI(s.as_str().try_into().expect("URI"))
            } else if s.contains('@') {
                SanType::Rfc822Name(s.as_str().try_into().expect("e-mail"))
            } else {
                SanType::DnsName(s.as_str().try_into().expect("DNS name"))
            };
            params.subject_alt_names.push(san);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

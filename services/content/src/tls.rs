//! TLS for the content tier's listeners: rustls (ring); HTTP/2 and HTTP/1.1 by ALPN over
//! TCP, HTTP/3 over QUIC.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// A listener's certificate and key (`[http_tls]`, `[provision_tls]`), PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) client certificates are verified against. Set: a client may
    /// present a certificate, and one that does not verify ends the handshake; a
    /// provisioner's `client_cert_sha256` then names it without a token. Unset: no client
    /// certificates.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Reads the files and builds the rustls configuration of an HTTPS listener (HTTP/2 and
    /// HTTP/1.1 by ALPN); the error names the file.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let mut config = self.build(rustls::DEFAULT_VERSIONS)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The same certificate for HTTP/3: TLS 1.3 only (QUIC has no other), ALPN `h3`.
    pub fn quic_server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let mut config = self.build(&[&rustls::version::TLS13])?;
        config.alpn_protocols = vec![b"h3".to_vec()];
        // QUIC carries 0-RTT itself; early data stays off (a replayed GET is harmless, but
        // nothing gains from it either).
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }

    fn build(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<ServerConfig, String> {
        let certs = read_certs(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| format!("tls key_file {}: {e}", self.key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls: {e}"))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("tls client_ca_file {}: {e}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                // A token still authenticates a client without a certificate.
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls client_ca_file {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "tls cert_file {} and key_file {}: {e}",
                self.cert_file.display(),
                self.key_file.display()
            )
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls cert_file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls cert_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls cert_file {}: no certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

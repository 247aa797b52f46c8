//! TLS served directly: `server.tls_cert` and `server.tls_key` (PEM) make
//! the accept loop serve HTTPS and WSS with rustls. The certificate is read
//! through a resolver that each handshake asks, so a reload (SIGHUP, after
//! the files were renewed) changes what new connections are shown and
//! leaves every open connection and socket as it is. A reload that fails
//! (a half-written file, a key that does not match) keeps the certificate
//! in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

/// The server's certificate, its files, and the acceptor that shows it.
pub struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCertificate>,
    acceptor: TlsAcceptor,
}

/// The certificate every new handshake is shown.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Reads the certificate chain and key; the error names the file and the problem.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, String> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let certified = read_certificate(cert_path, key_path, &provider)?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified))));
        // TLS 1.2 and 1.3; HTTP/1.1 only, which WebSocket upgrades need.
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|error| format!("TLS settings: {error}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; new handshakes get the new certificate, open
    /// connections keep theirs. On an error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let certified = read_certificate(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

fn read_certificate(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let cert_file = cert_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("server.tls_cert {cert_file}: {error}"))?;
    if chain.is_empty() {
        return Err(format!("server.tls_cert {cert_file}: no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|error| format!("server.tls_key {}: {error}", key_path.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| {
        format!("server.tls_cert and server.tls_key do not make a usable pair: {error}")
    })
}

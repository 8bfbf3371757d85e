//! TLS from a certificate chain and a private key in PEM files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why a certificate and key do not make a TLS configuration. The key's
/// contents never appear in a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file {path} holds no PEM certificate (\"BEGIN CERTIFICATE\")")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file is not valid, or the key file holds no key.
    #[error("the TLS {what} {path} is not valid PEM: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (from the PEM parser; it never quotes the contents).
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate,
    /// an unsupported key type).
    #[error(
        "the TLS certificate {certificate} and key {key} do not make a TLS configuration: {source}"
    )]
    Config {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// A server's TLS configuration.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads a certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files. TLS 1.2 and 1.3, no client
    /// certificates.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<Tls, Error> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| Error::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        fn pem_error(
            what: &'static str,
            path: &Path,
        ) -> impl FnOnce(rustls_pki_types::pem::Error) -> Error + use<> {
            let path = path.to_path_buf();
            move |e| Error::Pem {
                what,
                path,
                reason: e.to_string(),
            }
        }
        let chain = CertificateDer::pem_slice_iter(&read("certificate", certificate)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("certificate", certificate))?;
        if chain.is_empty() {
            return Err(Error::NoCertificate {
                path: certificate.to_path_buf(),
            });
        }
        let private =
            PrivateKeyDer::from_pem_slice(&read("key", key)?).map_err(pem_error("key", key))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_error = |source| Error::Config {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            source,
        };
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(config_error)?;
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// The same configuration offering these application protocols (ALPN):
    /// `h2` for gRPC, `h2` and `http/1.1` for HTTP.
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Tls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Tls {
            config: Arc::new(config),
        }
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

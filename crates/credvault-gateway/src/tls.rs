//! TLS: rustls with the ring provider, TLS 1.3 only unless 1.2 is asked for, a certificate
//! read from PEM files and read again on [`ReloadingCert::reload`] (`credvault serve` calls it
//! on SIGHUP) without dropping a connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path}: {reason}")]
pub struct TlsError {
    /// `certificate` or `key`.
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The certificates of a PEM file (certificate authorities to trust for upstream TLS:
/// `credvault serve --upstream-ca`).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError {
        what: "certificate",
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The server certificate and key, from two PEM files, replaceable while serving.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let err = |what, path: &Path, reason: String| TlsError {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "certificate",
            cert,
            "no certificate in the file".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| err("key", key, e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, private, &provider).map_err(|e| {
        err(
            "key",
            key,
            format!("does not go with the certificate or is not supported: {e}"),
        )
    })
}

impl ReloadingCert {
    /// Reads the two files.
    ///
    /// # Errors
    /// A file is missing or unreadable, holds no certificate or key, or the key does not match
    /// the certificate.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let current = RwLock::new(Arc::new(load(&cert, &key)?));
        Ok(Arc::new(Self { cert, key, current }))
    }

    /// Reads the files again; on any error the certificate in use stays.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = Arc::new(load(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// The certificate chain in use (DER), leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// A rustls server configuration over `cert`: ring, TLS 1.3 (and 1.2 when `allow_tls12`),
/// ALPN `h2` then `http/1.1`.
///
/// # Errors
/// Only if the provider refused the protocol versions (it supports both).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    allow_tls12: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| TlsError {
        what: "configuration",
        path: String::new(),
        reason: e.to_string(),
    })?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

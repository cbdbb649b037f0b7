//! Certificates from files (`--tls-cert`/`--tls-key`): a PEM chain, leaf
//! first, and its PEM private key (PKCS#8, PKCS#1 or SEC1), as ACME clients
//! and load balancers' tooling write them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// One certificate chain and its key, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What identifies a version of the files: a renewal replaces them (a new
/// inode, as `mv` and ACME clients do) or rewrites them (a new mtime).
pub(crate) type Stamp = Vec<Option<(SystemTime, u64)>>;

impl CertFiles {
    /// The chain and key, checked to belong together.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key_bytes = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|source| TlsError::Pem {
            path: self.key.clone(),
            source,
        })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
            TlsError::UnusableKey {
                path: self.key.clone(),
                source,
            }
        })?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|_| TlsError::KeyMismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
        })?;
        Ok(Arc::new(certified))
    }

    pub(crate) fn stamp(&self) -> Stamp {
        [&self.cert, &self.key]
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((
                    meta.modified().ok()?,
                    std::os::unix::fs::MetadataExt::ino(&meta),
                ))
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

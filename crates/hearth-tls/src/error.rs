//! What can go wrong with certificates, naming the file or step.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no private key of a kind this server can sign with: {source}")]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate in {cert} is not for the key in {key}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the local CA's key in {path} cannot be read: {source}")]
    CaKey { path: PathBuf, source: rcgen::Error },
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("no certificate was given")]
    NoCertificates,
    #[error("setting up TLS: {0}")]
    Config(#[from] rustls::Error),
}

//! TLS for hearth's API and sandbox proxy: the certificates it serves and
//! the rustls settings around them.
//!
//! Certificates come from files (`cert_files.rs`, reloaded when they
//! change) or from a local CA that hearth makes on first start
//! (`local_ca.rs`), which is what `hearth up` serves unless told otherwise:
//! clients trust that CA once and every sandbox host name is covered. The
//! certificate for a handshake is chosen by its SNI name (`store.rs`).

mod cert_files;
mod error;
mod local_ca;
mod refresh;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;

pub use cert_files::CertFiles;
pub use error::TlsError;
pub use local_ca::LocalCa;
pub use refresh::{Refreshed, Refresher};
pub use store::CertStore;

/// Where the served certificates come from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// A CA of hearth's own in `dir`, issuing one certificate for `names`
    /// (host names, `*.` wildcards and IP addresses).
    LocalCa { dir: PathBuf, names: Vec<String> },
    /// Certificate and key files; for each handshake the first whose
    /// certificate covers the SNI name, else the first.
    Files(Vec<CertFiles>),
}

/// The server side of TLS: rustls settings whose certificates stay current
/// while `refresh` runs.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    store: Arc<CertStore>,
    source: CertSource,
    ca: Option<LocalCa>,
    /// The files' versions when they were loaded here.
    loaded: refresh::Stamp,
}

impl ServerTls {
    /// Loads (or, for a local CA, makes) the certificates.
    pub fn new(source: CertSource) -> Result<Self, TlsError> {
        // Taken first: files that change while loading are loaded again.
        let loaded = refresh::stamp(&source);
        let (ca, keys) = match &source {
            CertSource::LocalCa { dir, names } => {
                let ca = LocalCa::load_or_create(dir)?;
                let key = ca.issue(names)?;
                (Some(ca), vec![key])
            }
            CertSource::Files(files) => {
                if files.is_empty() {
                    return Err(TlsError::NoCertificates);
                }
                let keys = files
                    .iter()
                    .map(CertFiles::load)
                    .collect::<Result<_, _>>()?;
                (None, keys)
            }
        };
        let store = Arc::new(CertStore::new(keys));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        // HTTP/2 where the client offers it (the Python SDK does), else 1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            store,
            source,
            ca,
            loaded,
        })
    }

    /// The settings for a TLS acceptor.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The local CA's certificate, for clients to trust; `None` when the
    /// certificates come from files.
    pub fn ca(&self) -> Option<&LocalCa> {
        self.ca.as_ref()
    }
}

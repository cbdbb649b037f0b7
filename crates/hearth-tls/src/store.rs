//! The certificates being served, and which one a handshake gets: the
//! first whose leaf covers the client's SNI name (wildcards as browsers
//! read them), else the first. Replaced whole when files change or a leaf
//! is re-issued; handshakes in flight keep the one they took.

use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

#[derive(Debug)]
pub struct CertStore {
    keys: RwLock<Vec<Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new(keys: Vec<Arc<CertifiedKey>>) -> Self {
        Self {
            keys: RwLock::new(keys),
        }
    }

    /// Serves `keys` from the next handshake on.
    pub fn replace(&self, keys: Vec<Arc<CertifiedKey>>) {
        match self.keys.write() {
            Ok(mut held) => *held = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The certificate for a client that asked for `name` (`None`: it sent
    /// no SNI, as clients connecting to an IP address do).
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let keys = match self.keys.read() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        name.and_then(|name| keys.iter().find(|key| covers(key, name)))
            .or_else(|| keys.first())
            .cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// Whether `key`'s leaf certificate is valid for the host `name`.
pub fn covers(key: &CertifiedKey, name: &str) -> bool {
    let Ok(leaf) = key.end_entity_cert() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

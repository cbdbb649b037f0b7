//! hearth's own certificate authority, made on first start in the data
//! directory: `ca.key` (0600, never leaves the host) and `ca.pem` (what
//! clients trust). It issues the certificate hearth serves, covering the
//! sandbox domain's wildcard, so `https://<port>-<id>.<domain>` works on
//! this host as soon as a client trusts `ca.pem`, with no ACME and no
//! public DNS. A new leaf is issued at every start.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::TlsError;

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.pem";
const CA_BUNDLE: &str = "ca-bundle.pem";
/// The CA outlives many hearth versions: clients trust it once.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves are re-issued at each start and before they run out
/// (`refresh.rs`); 397 days is the most browsers accept of any leaf.
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// Clocks of clients a little behind the host's still accept a new leaf.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The local CA: its key signs leaves, its certificate is what clients
/// trust.
#[derive(Debug)]
pub struct LocalCa {
    dir: PathBuf,
    issuer: Arc<Issuer<'static, KeyPair>>,
}

impl LocalCa {
    /// The CA in `dir`, made (directory 0700, key 0600) when it has none.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        make_private_dir(dir)?;
        let key_path = dir.join(CA_KEY);
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => {
                restrict(&key_path, 0o600)?;
                KeyPair::from_pem(&pem).map_err(|source| TlsError::CaKey {
                    path: key_path.clone(),
                    source,
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                key
            }
            Err(source) => {
                return Err(TlsError::Read {
                    path: key_path,
                    source,
                });
            }
        };
        // The CA's name and settings follow from its key, so the issuer can
        // be made again at every start without parsing `ca.pem`.
        let params = ca_params(&key)?;
        let cert_path = dir.join(CA_CERT);
        if !cert_path.exists() {
            let cert = params.self_signed(&key)?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            issuer: Arc::new(Issuer::new(params, key)),
        })
    }

    /// `ca.pem`: the certificate clients add to what they trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// A new key and certificate for `names` (host names, `*.` wildcards,
    /// IP addresses), signed by the CA.
    pub fn issue(&self, names: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("hearth", String::as_str),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        Ok(Arc::new(CertifiedKey::new(chain, signer)))
    }

    /// `ca-bundle.pem`: the certificates in `system_bundle` (this host's
    /// trusted CAs) followed by the local CA's, for clients that take one
    /// file of all they trust (`SSL_CERT_FILE`). Written anew each time,
    /// since the system's bundle changes with its updates.
    pub fn write_bundle(&self, system_bundle: Option<&Path>) -> Result<PathBuf, TlsError> {
        let mut text = match system_bundle {
            Some(path) => std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let cert_path = self.cert_path();
        let ca = std::fs::read_to_string(&cert_path).map_err(|source| TlsError::Read {
            path: cert_path,
            source,
        })?;
        text.push_str(&ca);
        let path = self.dir.join(CA_BUNDLE);
        let staged = self.dir.join(format!("{CA_BUNDLE}.new"));
        let _ = std::fs::remove_file(&staged);
        write_new(&staged, text.as_bytes(), 0o644)?;
        std::fs::rename(&staged, &path).map_err(|source| TlsError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// The CA's settings, the same at every start for the same key.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own per CA: browsers tell trusted CAs apart by name.
    let id = Sha256::digest(key.public_key_raw());
    let short: String = id.iter().take(4).map(|b| format!("{b:02x}")).collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("hearth local CA {short}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hearth");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    Ok(params)
}

fn make_private_dir(dir: &Path) -> Result<(), TlsError> {
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    made.map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    restrict(dir, 0o700)
}

fn restrict(path: &Path, mode: u32) -> Result<(), TlsError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        TlsError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Creates `path` with `mode` from the start (never readable by others
/// for a moment), refusing to follow or replace what is there.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}

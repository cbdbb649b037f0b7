//! One registry conversation: the oci-client client set up for a reference
//! (scheme, credentials, TLS) and the translation of its errors into the
//! [`OciError`]s users see.

use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::OciError;
use crate::{Credentials, reference};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A registry that stops sending for this long has gone away, however long
/// the whole pull may still take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request fetched: a 404 means "no such image" only for manifests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    Manifest,
    Blob,
    Push,
}

pub(crate) struct Remote {
    client: Client,
    auth: RegistryAuth,
    pub(crate) image: Reference,
    /// Normalised reference, for messages.
    pub(crate) reference: String,
    /// Registry as written in the reference, for messages.
    pub(crate) registry: String,
}

impl Remote {
    pub(crate) fn new(
        image: Reference,
        credentials: Option<&Credentials>,
        insecure_registries: &[String],
    ) -> Result<Self, OciError> {
        install_crypto_provider();
        let registry = image.registry().to_owned();
        // oci-client compares against the host it connects to, which is
        // index.docker.io for docker.io.
        let plain_http = reference::uses_plain_http(&registry, insecure_registries)
            || reference::uses_plain_http(image.resolve_registry(), insecure_registries);
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::HttpsExcept(vec![image.resolve_registry().to_owned()])
            } else {
                ClientProtocol::Https
            },
            // Indexes are resolved by `pull`, which reports what they offer.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|source| OciError::Registry {
            registry: registry.clone(),
            source,
        })?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self {
            client,
            auth,
            reference: image.to_string(),
            image,
            registry,
        })
    }

    /// The manifest `image` names (a tag or a digest of this repository) and
    /// its digest, verified when `image` is by digest.
    pub(crate) async fn manifest(
        &self,
        image: &Reference,
    ) -> Result<(OciManifest, String), OciError> {
        self.client
            .pull_manifest(image, &self.auth)
            .await
            .map_err(|err| self.error(err, Fetch::Manifest))
    }

    /// The blob's bytes as they arrive.
    pub(crate) async fn blob(
        &self,
        descriptor: &OciDescriptor,
    ) -> Result<impl Stream<Item = Result<Bytes, OciError>> + Unpin + use<'_>, OciError> {
        let stream = self
            .client
            .pull_blob_stream(&self.image, descriptor)
            .await
            .map_err(|err| self.error(err, Fetch::Blob))?;
        Ok(stream.map(|chunk| chunk.map_err(|err| self.stream_error(err))))
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// Sorts a client error into what the user can act on.
    pub(crate) fn error(&self, err: OciDistributionError, fetch: Fetch) -> OciError {
        let not_found = || OciError::NotFound {
            reference: self.reference.clone(),
        };
        match &err {
            OciDistributionError::RequestError(request)
                if request.is_connect() || request.is_timeout() =>
            {
                self.unreachable(request)
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => self.auth_error(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let has = |code: OciErrorCode| envelope.errors.iter().any(|e| e.code == code);
                if has(OciErrorCode::Unauthorized) || has(OciErrorCode::Denied) {
                    self.auth_error()
                } else if fetch == Fetch::Manifest
                    && (has(OciErrorCode::ManifestUnknown)
                        || has(OciErrorCode::NameUnknown)
                        || has(OciErrorCode::NotFound))
                {
                    not_found()
                } else {
                    self.registry_error(err)
                }
            }
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => self.auth_error(),
            OciDistributionError::ServerError { code: 404, .. } if fetch == Fetch::Manifest => {
                not_found()
            }
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => OciError::DigestMismatch {
                reference: self.reference.clone(),
                digest: expected.clone(),
                actual: actual.clone(),
            },
            _ => self.registry_error(err),
        }
    }

    /// An error in the middle of a blob: the connection broke, or oci-client's
    /// own digest check failed at the end.
    fn stream_error(&self, err: std::io::Error) -> OciError {
        let inner = err.get_ref();
        if let Some(DigestError::VerificationError { expected, actual }) =
            inner.and_then(|e| e.downcast_ref::<DigestError>())
        {
            return OciError::DigestMismatch {
                reference: self.reference.clone(),
                digest: expected.clone(),
                actual: actual.clone(),
            };
        }
        if let Some(request) = inner.and_then(|e| e.downcast_ref::<reqwest::Error>()) {
            return self.unreachable(request);
        }
        self.registry_error(OciDistributionError::IoError(err))
    }

    fn unreachable(&self, err: &(dyn std::error::Error + 'static)) -> OciError {
        OciError::Unreachable {
            registry: self.registry.clone(),
            reason: root_cause(err),
        }
    }

    fn auth_error(&self) -> OciError {
        match self.auth {
            RegistryAuth::Anonymous => OciError::AuthRequired {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
            },
            _ => OciError::AuthRefused {
                registry: self.registry.clone(),
            },
        }
    }

    fn registry_error(&self, source: OciDistributionError) -> OciError {
        OciError::Registry {
            registry: self.registry.clone(),
            source,
        }
    }
}

/// The innermost error: for a refused connection "Connection refused (os
/// error 111)" says more than reqwest's "error sending request".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// reqwest is built without a bundled crypto provider (which would compile
/// aws-lc); rustls then uses the process default, which we set to ring once.
/// Another part of the process may have installed one first: that one is
/// as good.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

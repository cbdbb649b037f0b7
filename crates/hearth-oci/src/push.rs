//! Publishing a directory as a single-layer linux image, and multi-platform
//! indexes of such images: what tests (and the `push_image` example) need
//! to put images into a registry without Docker.

use std::io::Write;
use std::path::Path;

use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex,
    OciImageManifest, Platform,
};
use sha2::{Digest, Sha256};

use crate::error::OciError;
use crate::registry::{Fetch, Remote};
use crate::store::hex_string;
use crate::{Compression, Credentials, ImageConfig, config, media, reference};

/// Where to push and what.
pub struct PushRequest<'a> {
    /// `host:port/name:tag`, e.g. `127.0.0.1:5000/app:1`.
    pub reference: &'a str,
    /// The directory that becomes the image's `/`.
    pub rootfs: &'a Path,
    pub compression: Compression,
    pub config: &'a ImageConfig,
    /// GOARCH name: `amd64`, `arm64`, ….
    pub architecture: &'a str,
    pub credentials: Option<&'a Credentials>,
    /// As in [`crate::PullOptions`]; loopback registries are plain HTTP anyway.
    pub insecure_registries: &'a [String],
}

/// A manifest that is now in the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Normalised reference it was pushed as.
    pub reference: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub architecture: String,
    /// Digest of the one layer blob.
    pub layer_digest: String,
}

/// Packs `request.rootfs` (symlinks as symlinks, owners, modes and mtimes as
/// on disk; hard links become copies) into one layer and pushes it with a
/// config for linux/`architecture`.
pub async fn push_rootfs(request: &PushRequest<'_>) -> Result<Pushed, OciError> {
    let remote = connect(
        request.reference,
        request.credentials,
        request.insecure_registries,
    )?;
    let rootfs = request.rootfs.to_owned();
    let compression = request.compression;
    let (tar, blob) = tokio::task::spawn_blocking(move || layer_from_dir(&rootfs, compression))
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))
        .and_then(|built| built)
        .map_err(OciError::store("pack the root filesystem", request.rootfs))?;
    let diff_id = format!("sha256:{}", hex_string(&Sha256::digest(&tar)));
    let layer = ImageLayer::new(blob, media::layer_media_type(compression).to_owned(), None);
    let config = Config::new(
        config::render(request.config, request.architecture, &diff_id),
        media::OCI_CONFIG.to_owned(),
        None,
    );
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_owned());
    let layer_digest = manifest.layers[0].digest.clone();

    let client = remote.client();
    client
        .store_auth_if_needed(remote.image.resolve_registry(), remote.auth())
        .await;
    let push_error = |err| remote.error(err, Fetch::Push);
    client
        .push_blob(&remote.image, layer.data.clone(), &layer_digest)
        .await
        .map_err(push_error)?;
    client
        .push_blob(&remote.image, config.data.clone(), &manifest.config.digest)
        .await
        .map_err(push_error)?;
    let body = serde_json::to_vec(&manifest).map_err(|err| push_error(err.into()))?;
    let (manifest_digest, manifest_size) =
        push_manifest(&remote, body, OCI_IMAGE_MEDIA_TYPE).await?;
    Ok(Pushed {
        reference: remote.reference.clone(),
        manifest_digest,
        manifest_size,
        architecture: request.architecture.to_owned(),
        layer_digest,
    })
}

/// Pushes an OCI index of already pushed linux images (same repository) as
/// `reference`; returns its digest.
pub async fn push_index(
    reference: &str,
    images: &[Pushed],
    credentials: Option<&Credentials>,
    insecure_registries: &[String],
) -> Result<String, OciError> {
    let remote = connect(reference, credentials, insecure_registries)?;
    let manifests = images
        .iter()
        .map(|image| {
            let platform: Platform = serde_json::from_value(serde_json::json!({
                "os": "linux",
                "architecture": image.architecture,
            }))
            .map_err(|err| remote.error(err.into(), Fetch::Push))?;
            Ok(ImageIndexEntry {
                media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
                digest: image.manifest_digest.clone(),
                size: i64::try_from(image.manifest_size).unwrap_or(i64::MAX),
                platform: Some(platform),
                annotations: None,
                artifact_type: None,
            })
        })
        .collect::<Result<Vec<_>, OciError>>()?;
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()),
        manifests,
        artifact_type: None,
        annotations: None,
    };
    let body = serde_json::to_vec(&index).map_err(|err| remote.error(err.into(), Fetch::Push))?;
    remote
        .client()
        .store_auth_if_needed(remote.image.resolve_registry(), remote.auth())
        .await;
    let (digest, _size) = push_manifest(&remote, body, OCI_IMAGE_INDEX_MEDIA_TYPE).await?;
    Ok(digest)
}

fn connect(
    reference: &str,
    credentials: Option<&Credentials>,
    insecure_registries: &[String],
) -> Result<Remote, OciError> {
    Remote::new(
        reference::parse(reference)?,
        credentials,
        insecure_registries,
    )
}

/// Pushes manifest bytes we serialised ourselves, so that the digest and
/// size an index refers to are those of exactly these bytes.
async fn push_manifest(
    remote: &Remote,
    body: Vec<u8>,
    media_type: &'static str,
) -> Result<(String, u64), OciError> {
    let digest = format!("sha256:{}", hex_string(&Sha256::digest(&body)));
    let size = body.len() as u64;
    remote
        .client()
        .push_manifest_raw(
            &remote.image,
            body,
            http::HeaderValue::from_static(media_type),
        )
        .await
        .map_err(|err| remote.error(err, Fetch::Push))?;
    Ok((digest, size))
}

/// The directory as a tar (entries relative to it, no `./` prefix), and that
/// tar compressed.
pub fn layer_from_dir(
    rootfs: &Path,
    compression: Compression,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all("", rootfs)?;
    let tar = builder.into_inner()?;
    let blob = match compression {
        Compression::None => tar.clone(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&tar)?;
            encoder.finish()?
        }
        Compression::Zstd => zstd::encode_all(&tar[..], 3)?,
    };
    Ok((tar, blob))
}

//! `ImageStore::pull`: reference → platform manifest → config → layers in
//! the blob cache.

use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciManifest};

use crate::error::OciError;
use crate::registry::Remote;
use crate::store::{ImageStore, Sha256Hex, short_digest};
use crate::{Credentials, Layer, PullOptions, PulledImage, config, media, reference};

/// Layers downloaded at once: enough to fill a link, few enough to be kind
/// to registries.
const CONCURRENT_DOWNLOADS: usize = 3;
/// Configs are a few KiB; anything this big is not a config.
const MAX_CONFIG_BYTES: u64 = 8 << 20;

impl ImageStore {
    /// Resolves the reference (Docker Hub by default: "python:3.12" =
    /// docker.io/library/python:3.12; manifest lists / OCI indexes resolved to
    /// linux/amd64), fetches manifest and config, downloads missing layers
    /// (verified against their digest), and returns what was pulled.
    ///
    /// `log` receives human-readable progress lines.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
        options: &PullOptions,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        let image = reference::parse(reference)?;
        let normalised = image.to_string();
        let remote = Remote::new(image, credentials, &options.insecure_registries)?;
        tokio::time::timeout(options.timeout, self.pull_from(&remote, options, log))
            .await
            .unwrap_or(Err(OciError::Timeout {
                reference: normalised,
                after: options.timeout,
            }))
    }

    async fn pull_from(
        &self,
        remote: &Remote,
        options: &PullOptions,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        log(format!("resolving {}", remote.reference));
        let (manifest, manifest_digest) = match remote.manifest(&remote.image).await? {
            (OciManifest::Image(manifest), digest) => (manifest, digest),
            (OciManifest::ImageIndex(index), _) => {
                let entry = amd64_entry(&remote.reference, &index)?;
                let platform_image = remote.image.clone_with_digest(entry.digest.clone());
                match remote.manifest(&platform_image).await? {
                    (OciManifest::Image(manifest), digest) => (manifest, digest),
                    (OciManifest::ImageIndex(_), _) => {
                        return Err(unsupported(remote, "manifest", &entry.media_type));
                    }
                }
            }
        };

        if !media::is_config(&manifest.config.media_type) {
            return Err(unsupported(remote, "config", &manifest.config.media_type));
        }
        let mut planned = Vec::with_capacity(manifest.layers.len());
        let mut total = 0u64;
        for descriptor in &manifest.layers {
            let compression = media::layer_compression(&descriptor.media_type)
                .ok_or_else(|| unsupported(remote, "layer", &descriptor.media_type))?;
            let (hex, size) = checked(remote, descriptor)?;
            total = total.saturating_add(size);
            // Owned: a stream over borrowed descriptors makes the pull future
            // fail rustc's `Send` check where callers spawn it.
            planned.push((descriptor.clone(), hex, size, compression));
        }
        if total > options.max_image_bytes {
            return Err(OciError::TooLarge {
                reference: remote.reference.clone(),
                what: "compressed layers",
                size: total,
                limit: options.max_image_bytes,
            });
        }

        let (config_hex, config_size) = checked(remote, &manifest.config)?;
        if config_size > MAX_CONFIG_BYTES {
            return Err(OciError::TooLarge {
                reference: remote.reference.clone(),
                what: "config",
                size: config_size,
                limit: MAX_CONFIG_BYTES,
            });
        }
        let config_path = self
            .fetch(remote, &manifest.config, &config_hex, config_size)
            .await?;
        let config_blob = std::fs::read(&config_path)
            .map_err(OciError::store("read an image config", &config_path))?;
        let config = config::parse(&remote.reference, &config_blob)?;

        let count = planned.len();
        log(format!(
            "{} ({}): {count} layer{}, {}",
            remote.reference,
            short_digest(&manifest_digest),
            if count == 1 { "" } else { "s" },
            human_size(total)
        ));
        // `buffered` keeps the layers in manifest order while downloading
        // several at once.
        let layers = futures::stream::iter(planned)
            .map(|(descriptor, hex, size, compression)| async move {
                let short = short_digest(&descriptor.digest);
                let path = match self.cached(&hex, size) {
                    Some(path) => {
                        log(format!("layer {short} cached"));
                        path
                    }
                    None => {
                        log(format!("pulling layer {short} ({})", human_size(size)));
                        self.fetch(remote, &descriptor, &hex, size).await?
                    }
                };
                Ok::<_, OciError>(Layer {
                    digest: descriptor.digest.clone(),
                    media_type: descriptor.media_type.clone(),
                    size,
                    path,
                    compression,
                })
            })
            .buffered(CONCURRENT_DOWNLOADS)
            .try_collect()
            .await?;

        Ok(PulledImage {
            reference: remote.reference.clone(),
            manifest_digest,
            layers,
            config,
        })
    }

    /// The blob from the cache, or else from the registry into the cache.
    async fn fetch(
        &self,
        remote: &Remote,
        descriptor: &OciDescriptor,
        hex: &Sha256Hex,
        size: u64,
    ) -> Result<std::path::PathBuf, OciError> {
        if let Some(path) = self.cached(hex, size) {
            return Ok(path);
        }
        let chunks = remote.blob(descriptor).await?;
        self.write(&remote.reference, hex, size, chunks).await
    }
}

/// The linux/amd64 entry of an index; attestation manifests (platform
/// unknown/unknown) are not images and are not offered as alternatives.
fn amd64_entry<'a>(
    reference: &str,
    index: &'a OciImageIndex,
) -> Result<&'a ImageIndexEntry, OciError> {
    let platform = |entry: &ImageIndexEntry| {
        entry.platform.as_ref().map(|p| {
            (
                p.os.to_string(),
                p.architecture.to_string(),
                p.variant.clone(),
            )
        })
    };
    if let Some(entry) = index
        .manifests
        .iter()
        .find(|entry| platform(entry).is_some_and(|(os, arch, _)| os == "linux" && arch == "amd64"))
    {
        return Ok(entry);
    }
    let available = index
        .manifests
        .iter()
        .filter_map(platform)
        .filter(|(os, _, _)| os != "unknown")
        .map(|(os, arch, variant)| match variant {
            Some(variant) => format!("{os}/{arch}/{variant}"),
            None => format!("{os}/{arch}"),
        })
        .collect();
    Err(OciError::NoAmd64 {
        reference: reference.to_owned(),
        available,
    })
}

/// The descriptor's digest as a cache name, and its size.
fn checked(remote: &Remote, descriptor: &OciDescriptor) -> Result<(Sha256Hex, u64), OciError> {
    let hex = Sha256Hex::parse(&descriptor.digest).ok_or_else(|| OciError::UnsupportedDigest {
        reference: remote.reference.clone(),
        digest: descriptor.digest.clone(),
    })?;
    // A negative size is a broken manifest; zero would then fail the size
    // check on download with a message naming the blob.
    let size = u64::try_from(descriptor.size).unwrap_or(0);
    Ok((hex, size))
}

fn unsupported(remote: &Remote, what: &'static str, media_type: &str) -> OciError {
    OciError::UnsupportedMediaType {
        reference: remote.reference.clone(),
        what,
        media_type: media_type.to_owned(),
    }
}

/// "12.3 MiB".
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::Platform;

    fn entry(os: &str, arch: &str, digest: &str) -> ImageIndexEntry {
        let platform: Platform =
            serde_json::from_value(serde_json::json!({"os": os, "architecture": arch}))
                .expect("platform");
        ImageIndexEntry {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 1,
            platform: Some(platform),
            annotations: None,
            artifact_type: None,
        }
    }

    fn index(entries: Vec<ImageIndexEntry>) -> OciImageIndex {
        OciImageIndex {
            schema_version: 2,
            media_type: None,
            manifests: entries,
            artifact_type: None,
            annotations: None,
        }
    }

    #[test]
    fn picks_linux_amd64_from_an_index() {
        let index = index(vec![
            entry("linux", "arm64", "sha256:arm"),
            entry("unknown", "unknown", "sha256:attestation"),
            entry("linux", "amd64", "sha256:amd"),
        ]);
        assert_eq!(
            amd64_entry("img", &index).expect("found").digest,
            "sha256:amd"
        );
    }

    #[test]
    fn an_index_without_amd64_lists_what_it_has() {
        let index = index(vec![
            entry("linux", "arm64", "sha256:arm"),
            entry("unknown", "unknown", "sha256:attestation"),
            entry("windows", "amd64", "sha256:win"),
        ]);
        match amd64_entry("img", &index) {
            Err(err @ OciError::NoAmd64 { .. }) => assert_eq!(
                err.to_string(),
                "img has no linux/amd64 image (it has: linux/arm64, windows/amd64)"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12_897_485), "12.3 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}

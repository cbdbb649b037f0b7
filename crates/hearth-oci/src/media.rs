//! The media types hearth accepts for image configs and layers.

use crate::Compression;

pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub(crate) fn is_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// How a layer of this media type is compressed: `None` if it is not a
/// filesystem layer at all, `Some(None)` if the type does not say reliably.
pub(crate) fn layer_compression(media_type: &str) -> Option<Option<Compression>> {
    match media_type {
        OCI_LAYER_TAR | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(Some(Compression::None))
        }
        OCI_LAYER_GZIP | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
            Some(Some(Compression::Gzip))
        }
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Some(Compression::Zstd))
        }
        // Docker's layer types all claim gzip (or nothing), but tools have
        // pushed other encodings under them: the bytes decide.
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(None),
        _ => None,
    }
}

pub(crate) fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => OCI_LAYER_TAR,
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
    }
}

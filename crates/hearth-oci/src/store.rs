//! The blob cache: `<root>/blobs/sha256/<hex>`, shared by every image that
//! has the blob. A blob is written to a temporary file beside its final
//! place, checked against its digest and size, and renamed into place, so a
//! file under its digest's name is always complete and correct.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::OciError;

/// Blobs of pulled images, cached by digest.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob with this hex digest lives (whether or not it exists).
    pub(crate) fn blob_path(&self, hex: &Sha256Hex) -> PathBuf {
        self.blob_dir().join(&hex.0)
    }

    /// The cached blob, if one of the expected size is there. Its content
    /// was verified before it got its name.
    /// A hit counts as a use for [`ImageStore::prune`].
    pub(crate) fn cached(&self, hex: &Sha256Hex, size: u64) -> Option<PathBuf> {
        let path = self.blob_path(hex);
        let file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !(meta.is_file() && meta.len() == size) {
            return None;
        }
        // A blob that cannot be touched is still good.
        let _ = file.set_modified(std::time::SystemTime::now());
        Some(path)
    }

    /// Removes the least recently used blobs until the cache takes at most
    /// `max_bytes`; returns how many went. The caller makes sure no pull
    /// runs meanwhile (a pull re-fetches what is missing anyway).
    pub fn prune(&self, max_bytes: u64) -> usize {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(self.blob_dir()) else {
            return 0;
        };
        let mut blobs: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().ok()?, e.path(), meta.blocks() * 512))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|(_, _, size)| size).sum();
        blobs.sort_by_key(|(used, _, _)| *used);
        let mut removed = 0;
        for (_, path, size) in blobs {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
                removed += 1;
            }
        }
        removed
    }

    /// Writes a blob from `chunks`, refusing it unless it has exactly `size`
    /// bytes and the digest `hex`; returns its path.
    pub(crate) async fn write<S>(
        &self,
        reference: &str,
        hex: &Sha256Hex,
        size: u64,
        mut chunks: S,
    ) -> Result<PathBuf, OciError>
    where
        S: Stream<Item = Result<Bytes, OciError>> + Unpin,
    {
        let dir = self.blob_dir();
        std::fs::create_dir_all(&dir)
            .map_err(OciError::store("create the blob directory", &dir))?;
        // Dropping `temp` (on error, or when the pull is cancelled) removes it.
        let temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .map_err(OciError::store("create a blob file", &dir))?;
        let std_file = temp
            .as_file()
            .try_clone()
            .map_err(OciError::store("create a blob file", temp.path()))?;
        let mut file =
            tokio::io::BufWriter::with_capacity(256 << 10, tokio::fs::File::from_std(std_file));
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let size_mismatch = || OciError::SizeMismatch {
            reference: reference.to_owned(),
            digest: hex.digest(),
            expected: size,
        };
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            // Stop a registry that sends more than declared before it fills
            // the disk; the digest check would only catch it at the end.
            if written > size {
                return Err(size_mismatch());
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(OciError::store("write a blob", temp.path()))?;
        }
        if written != size {
            return Err(size_mismatch());
        }
        let actual = hex_string(&hasher.finalize());
        if actual != hex.0 {
            return Err(OciError::DigestMismatch {
                reference: reference.to_owned(),
                digest: hex.digest(),
                actual: format!("sha256:{actual}"),
            });
        }
        file.flush()
            .await
            .map_err(OciError::store("write a blob", temp.path()))?;
        // On disk before it is named: a crash must not leave a short file
        // under a digest that the next pull trusts.
        file.get_ref()
            .sync_all()
            .await
            .map_err(OciError::store("write a blob", temp.path()))?;
        let path = self.blob_path(hex);
        temp.persist(&path)
            .map_err(|err| OciError::store("store a blob", &path)(err.error))?;
        Ok(path)
    }
}

/// The hex part of a `sha256:` digest, checked to be exactly 64 lowercase
/// hex digits: digests come from registries and become file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sha256Hex(String);

impl Sha256Hex {
    pub(crate) fn parse(digest: &str) -> Option<Self> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(hex.to_owned()))
    }

    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", self.0)
    }
}

pub(crate) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:` and the first 12 hex digits, for progress lines.
pub(crate) fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Sha256Hex {
        Sha256Hex(hex_string(&Sha256::digest(data)))
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, OciError>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn leftovers(store: &ImageStore) -> Vec<String> {
        std::fs::read_dir(store.blob_dir())
            .expect("blob dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(Sha256Hex::parse(&good).is_some());
        for bad in [
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../{}", "a".repeat(61)),
            "sha256:".to_owned(),
        ] {
            assert!(Sha256Hex::parse(&bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn stores_verified_blobs_under_their_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path());
        let hex = sha256(b"hello world");
        let path = store
            .write("img", &hex, 11, chunks(&[b"hello ", b"world"]))
            .await
            .expect("stored");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello world");
        assert_eq!(store.cached(&hex, 11), Some(path));
        assert_eq!(store.cached(&hex, 12), None);
        assert_eq!(leftovers(&store), vec![hex.0.clone()]);
    }

    #[tokio::test]
    async fn refuses_wrong_content_and_sizes_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path());
        let hex = sha256(b"hello world");
        let wrong = store
            .write("img", &hex, 11, chunks(&[b"hello WORLD"]))
            .await;
        assert!(
            matches!(wrong, Err(OciError::DigestMismatch { .. })),
            "{wrong:?}"
        );
        let long = store.write("img", &hex, 5, chunks(&[b"hello world"])).await;
        assert!(
            matches!(long, Err(OciError::SizeMismatch { .. })),
            "{long:?}"
        );
        let short = store
            .write("img", &hex, 20, chunks(&[b"hello world"]))
            .await;
        assert!(
            matches!(short, Err(OciError::SizeMismatch { .. })),
            "{short:?}"
        );
        assert!(leftovers(&store).is_empty());
        assert_eq!(store.cached(&hex, 11), None);
    }

    #[tokio::test]
    async fn pruning_keeps_the_most_recently_used_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path());
        let blob: Vec<u8> = vec![3u8; 64 << 10];
        let mut stored = Vec::new();
        for (n, seconds_ago) in [(1u8, 300u64), (2, 200), (3, 100)] {
            let mut data = blob.clone();
            data[0] = n;
            let hex = sha256(&data);
            let path = store
                .write(
                    "img",
                    &hex,
                    data.len() as u64,
                    futures::stream::iter([Ok(Bytes::from(data.clone()))]),
                )
                .await
                .expect("stored");
            let then = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds_ago);
            std::fs::File::open(&path)
                .expect("open")
                .set_modified(then)
                .expect("age");
            stored.push((hex, data.len() as u64, path));
        }
        // A hit makes the oldest the newest.
        assert!(store.cached(&stored[0].0, stored[0].1).is_some());
        // Room for two: the least recently used (the second) goes.
        assert_eq!(store.prune(150 << 10), 1);
        assert!(stored[0].2.exists() && !stored[1].2.exists() && stored[2].2.exists());
        assert_eq!(store.prune(1 << 30), 0);
    }
}

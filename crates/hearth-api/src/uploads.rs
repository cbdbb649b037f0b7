//! Build-context archives the SDKs upload for COPY steps. Each is stored
//! content-addressed under its template, `<dir>/<templateID>/<hash>`, so one
//! team can never plant content another team's build reads. Uploads go to
//! URLs signed with a key only this process holds: the SDKs send no API key
//! with them, as they would to a presigned object-store URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

/// How many leading bytes tell a tar from anything else: the `ustar` magic
/// sits at offset 257.
const SNIFF_LEN: usize = 262;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the body is longer than its Content-Length of {0} bytes")]
    TooLong(u64),
    #[error("the body ended after {got} of its {expected} bytes")]
    TooShort { got: u64, expected: u64 },
    #[error("the upload is neither a gzip nor a tar archive")]
    NotAnArchive,
    #[error("no upload place for template '{0}' and hash '{1}'")]
    NoPlace(String, String),
    #[error("the upload did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("storing the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// How long an upload is kept after its last use, whatever the cache's size.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(2 * 3600);

/// Where uploads live and the key their URLs are signed with.
pub struct Uploads {
    dir: PathBuf,
    key: Vec<u8>,
    /// Shared by presence checks, exclusive to a prune: an upload found
    /// present (and touched) is not removed by a prune that looked before.
    pruning: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A files hash as the SDKs compute it: hex SHA-256.
pub fn is_hash(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A template ID that is safe as a directory name.
fn is_safe_component(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Uploads {
    /// Uploads under `dir` (made absolute: nodes read them by path), with
    /// URLs signed by `key`.
    pub fn new(dir: impl Into<PathBuf>, key: Vec<u8>) -> Self {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self {
            dir,
            key,
            pruning: tokio::sync::RwLock::new(()),
        }
    }

    /// Uploads under `dir` with a fresh random key: URLs handed out by an
    /// earlier process stop working, which only makes a client upload again.
    pub fn with_random_key(dir: impl Into<PathBuf>) -> Result<Self, getrandom::Error> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::new(dir, key))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of a template's uploads; `None` for an ID that is no
    /// safe directory name (hearth's IDs always are).
    pub fn template_dir(&self, template_id: &str) -> Option<PathBuf> {
        is_safe_component(template_id).then(|| self.dir.join(template_id))
    }

    /// Where the upload with `hash` of a template is kept.
    pub fn path(&self, template_id: &str, hash: &str) -> Option<PathBuf> {
        if !is_hash(hash) {
            return None;
        }
        Some(self.template_dir(template_id)?.join(hash))
    }

    /// Whether the upload is stored. Asking counts as a use: pruning keeps
    /// what was asked for lately (a build is about to read it).
    pub async fn present(&self, template_id: &str, hash: &str) -> bool {
        let Some(path) = self.path(template_id, hash) else {
            return false;
        };
        let _not_pruning = self.pruning.read().await;
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).ok()?;
            file.metadata().ok().filter(|m| m.is_file())?;
            if let Err(error) = file.set_modified(std::time::SystemTime::now()) {
                tracing::warn!(path = %path.display(), %error, "cannot mark an upload as used");
            }
            Some(())
        })
        .await
        .is_ok_and(|found| found.is_some())
    }

    /// Removes the least recently used uploads until all of them take at
    /// most `max_bytes`, but none of a template in `busy` (a build of it is
    /// running or queued) and none used within [`UPLOAD_GRACE`]. Returns
    /// how many went.
    pub async fn prune(&self, max_bytes: u64, busy: std::collections::HashSet<String>) -> usize {
        let _alone = self.pruning.write().await;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || prune_uploads(&dir, max_bytes, UPLOAD_GRACE, &busy))
            .await
            .unwrap_or(0)
    }

    /// The URL a node reads the upload from (it shares the host for now).
    pub fn file_url(&self, template_id: &str, hash: &str) -> Option<String> {
        Some(format!(
            "file://{}",
            self.path(template_id, hash)?.display()
        ))
    }

    fn mac(&self, template_id: &str, hash: &str, expires: i64) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(format!("PUT\n{template_id}\n{hash}\n{expires}").as_bytes());
        Some(mac)
    }

    /// The signature of an upload URL valid until `expires` (Unix seconds).
    pub fn sign(&self, template_id: &str, hash: &str, expires: i64) -> String {
        self.mac(template_id, hash, expires)
            .map(|mac| hex(&mac.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether `signature` is ours for these parameters (compared in
    /// constant time).
    pub fn verify(&self, template_id: &str, hash: &str, expires: i64, signature: &str) -> bool {
        let (Some(mac), Some(given)) = (self.mac(template_id, hash, expires), unhex(signature))
        else {
            return false;
        };
        mac.verify_slice(&given).is_ok()
    }

    /// Stores the body of an upload: streamed to a temporary file beside
    /// the target (never held in memory), checked for its length and for
    /// being an archive, then renamed into place, so a reader sees the old
    /// file or the whole new one. `deadline` bounds the whole exchange.
    pub async fn receive<S, E>(
        &self,
        template_id: &str,
        hash: &str,
        length: u64,
        body: S,
        deadline: Duration,
    ) -> Result<(), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (Some(dir), Some(target)) =
            (self.template_dir(template_id), self.path(template_id, hash))
        else {
            return Err(UploadError::NotAnArchive);
        };
        private_dirs(&self.dir, &dir).await?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
        let temp = dir.join(format!(".{hash}.{}.part", hex(&suffix)));
        let written = tokio::time::timeout(deadline, write(&temp, length, body)).await;
        let result = match written {
            Ok(Ok(())) => tokio::fs::rename(&temp, &target)
                .await
                .map_err(UploadError::from),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(UploadError::TimedOut(deadline)),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// Removes every upload of a template.
    pub async fn remove_template(&self, template_id: &str) -> std::io::Result<()> {
        let Some(dir) = self.template_dir(template_id) else {
            return Ok(());
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Walks `<dir>/<template>/<hash>` and removes the oldest uploads (by last
/// use, the modification time) beyond `max_bytes` and older than `grace`.
fn prune_uploads(
    dir: &Path,
    max_bytes: u64,
    grace: Duration,
    busy: &std::collections::HashSet<String>,
) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut uploads: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
    let Ok(templates) = std::fs::read_dir(dir) else {
        return 0;
    };
    for template in templates.filter_map(|e| e.ok()) {
        if busy.contains(template.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(template.path()) else {
            continue;
        };
        for file in files.filter_map(|e| e.ok()) {
            if file.file_name().to_string_lossy().starts_with('.') {
                continue; // an upload in progress
            }
            if let Ok(meta) = file.metadata()
                && meta.is_file()
                && let Ok(used) = meta.modified()
            {
                uploads.push((used, file.path(), meta.blocks() * 512));
            }
        }
    }
    let mut total: u64 = uploads.iter().map(|(_, _, size)| size).sum();
    uploads.sort_by_key(|(used, _, _)| *used);
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for (used, path, size) in uploads {
        if total <= max_bytes {
            break;
        }
        if now.duration_since(used).unwrap_or_default() < grace {
            break; // everything after it is younger still
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            // Gone already: its bytes are free all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => continue,
        }
        total = total.saturating_sub(size);
    }
    removed
}

fn is_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || head.get(257..262) == Some(b"ustar".as_slice())
}

/// The uploads directory and a template's directory in it, readable by
/// root only (0700; an older hearth made them 0755): uploads are a team's
/// build context.
async fn private_dirs(root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await?;
    for dir in [root, dir] {
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
    }
    Ok(())
}

async fn write<S, E>(temp: &Path, length: u64, mut body: S) -> Result<(), UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // A new file (never one planted at the name), readable by root only.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .await?;
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut got: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        got += chunk.len() as u64;
        if got > length {
            return Err(UploadError::TooLong(length));
        }
        if head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == SNIFF_LEN && !is_archive(&head) {
                return Err(UploadError::NotAnArchive);
            }
        }
        file.write_all(&chunk).await?;
    }
    if got < length {
        return Err(UploadError::TooShort {
            got,
            expected: length,
        });
    }
    if !is_archive(&head) {
        return Err(UploadError::NotAnArchive);
    }
    file.sync_all().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_parameter() {
        let uploads = Uploads::new("/tmp/u", b"key".to_vec());
        let hash = "a".repeat(64);
        let sig = uploads.sign("t1", &hash, 100);
        assert!(uploads.verify("t1", &hash, 100, &sig));
        assert!(!uploads.verify("t2", &hash, 100, &sig));
        assert!(!uploads.verify("t1", &"b".repeat(64), 100, &sig));
        assert!(!uploads.verify("t1", &hash, 101, &sig));
        assert!(!uploads.verify("t1", &hash, 100, "zz"));
        assert!(!uploads.verify("t1", &hash, 100, ""));
        let other = Uploads::new("/tmp/u", b"other".to_vec());
        assert!(!other.verify("t1", &hash, 100, &sig));
    }

    #[test]
    fn paths_stay_inside_the_directory() {
        let uploads = Uploads::new("/tmp/u", vec![1]);
        let hash = "0".repeat(64);
        assert_eq!(
            uploads.path("abc", &hash),
            Some(PathBuf::from(format!("/tmp/u/abc/{hash}")))
        );
        assert_eq!(uploads.path("../x", &hash), None);
        assert_eq!(uploads.path("abc", "../../etc/passwd"), None);
        assert_eq!(uploads.path("abc", &"G".repeat(64)), None);
        assert!(is_hash(&"f".repeat(64)) && !is_hash(&"F".repeat(64)) && !is_hash("ab"));
    }

    #[test]
    fn archives_are_recognised_by_their_magic() {
        assert!(is_archive(&[0x1f, 0x8b, 8]));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(is_archive(&tar));
        assert!(!is_archive(b"PK\x03\x04"));
        assert!(!is_archive(&[0u8; 512]));
    }

    #[tokio::test]
    async fn uploads_are_readable_by_root_only() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("uploads");
        // As an older hearth left it.
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        let uploads = Uploads::new(&root, b"key".to_vec());
        let hash = "a".repeat(64);
        let gzip = bytes::Bytes::from_static(&[0x1f, 0x8b, 8, 0]);
        let body = futures::stream::iter([Ok::<_, std::io::Error>(gzip.clone())]);
        uploads
            .receive("t1", &hash, gzip.len() as u64, body, Duration::from_secs(5))
            .await?;
        let mode = |path: &Path| std::fs::metadata(path).map(|m| m.mode() & 0o777);
        assert_eq!(mode(&root)?, 0o700);
        assert_eq!(mode(&root.join("t1"))?, 0o700);
        assert_eq!(mode(&root.join("t1").join(&hash))?, 0o600);
        Ok(())
    }

    #[test]
    fn pruning_removes_the_least_recently_used_past_their_grace()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let hour = Duration::from_secs(3600);
        let now = std::time::SystemTime::now();
        let put = |template: &str, hash: &str, age: Duration| -> std::io::Result<PathBuf> {
            let path = dir.path().join(template).join(hash);
            std::fs::create_dir_all(dir.path().join(template))?;
            std::fs::write(&path, vec![1u8; 64 << 10])?;
            std::fs::File::open(&path)?.set_modified(now - age)?;
            Ok(path)
        };
        let oldest = put("t1", "a", 5 * hour)?;
        let older = put("t2", "b", 4 * hour)?;
        let recent = put("t1", "c", Duration::from_secs(60))?;
        let partial = put("t1", ".d.part", 9 * hour)?;
        // Room for two: the oldest goes; uploads in progress never count.
        let none = std::collections::HashSet::new();
        assert_eq!(prune_uploads(dir.path(), 150 << 10, hour, &none), 1);
        assert!(!oldest.exists() && older.exists() && recent.exists() && partial.exists());
        // A template with a build in flight keeps its uploads.
        let busy: std::collections::HashSet<String> = ["t2".to_owned()].into();
        assert_eq!(prune_uploads(dir.path(), 0, hour, &busy), 0);
        assert!(older.exists());
        // Room for none: what was used within the grace stays.
        assert_eq!(prune_uploads(dir.path(), 0, hour, &none), 1);
        assert!(!older.exists() && recent.exists());
        Ok(())
    }

    #[tokio::test]
    async fn asking_whether_an_upload_is_present_counts_as_a_use()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let uploads = Uploads::new(dir.path(), b"key".to_vec());
        let hash = "ab".repeat(32);
        let path = uploads.path("tpl", &hash).ok_or("no path")?;
        std::fs::create_dir_all(dir.path().join("tpl"))?;
        std::fs::write(&path, b"x")?;
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(86400);
        std::fs::File::open(&path)?.set_modified(long_ago)?;
        assert!(uploads.present("tpl", &hash).await);
        assert!(std::fs::metadata(&path)?.modified()? > long_ago);
        assert_eq!(uploads.prune(0, Default::default()).await, 0);
        assert!(path.exists());
        Ok(())
    }
}

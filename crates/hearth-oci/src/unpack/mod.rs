//! [`unpack`]: an image's layers applied in order to a directory, as root.

mod entry;
mod root;
mod whiteout;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{OciError, UnpackError};
use crate::pull::human_size;
use crate::store::short_digest;
use crate::{Compression, Layer, PulledImage};
use root::{Root, normalise};
use whiteout::LayerPaths;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// zstd's largest window (`--long=31`); the decoder's default refuses
/// frames with windows above 128 MiB.
const ZSTD_MAX_WINDOW_LOG: u32 = 31;
const COPY_BUFFER: usize = 128 << 10;

/// Applies the layers in order into `dest` (created if missing; should be
/// empty), as root: ownership (numeric uid/gid from the tar headers), modes,
/// mtimes, symlinks, hard links, xattrs where the filesystem allows, device
/// nodes and fifos where the kernel allows (skipped with a log line
/// otherwise), and whiteouts as the OCI image spec defines them. Never writes
/// outside `dest`: entries with `..` are refused, and symlinks met on the way
/// resolve inside `dest`, absolute ones included.
///
/// Blocking: call it from `spawn_blocking`.
pub fn unpack(image: &PulledImage, dest: &Path, log: &dyn Fn(String)) -> Result<(), OciError> {
    std::fs::create_dir_all(dest).map_err(|source| OciError::Destination { source })?;
    let root = Root::open(dest).map_err(|source| OciError::Destination { source })?;
    let mut unpacker = Unpacker {
        root,
        log,
        dir_times: HashMap::new(),
        xattr_failures: 0,
        buffer: vec![0; COPY_BUFFER],
    };
    let count = image.layers.len();
    for (index, layer) in image.layers.iter().enumerate() {
        log(format!(
            "unpacking layer {}/{count} {} ({})",
            index + 1,
            short_digest(&layer.digest),
            human_size(layer.size)
        ));
        unpacker.layer(layer)?;
    }
    unpacker.restore_dir_times();
    Ok(())
}

pub(crate) struct Unpacker<'a> {
    root: Root,
    log: &'a dyn Fn(String),
    /// Directory mtimes from the headers, applied once every layer is in.
    dir_times: HashMap<PathBuf, i64>,
    xattr_failures: u32,
    /// File contents pass through here; one buffer for every file.
    buffer: Vec<u8>,
}

impl Unpacker<'_> {
    fn layer(&mut self, layer: &Layer) -> Result<(), OciError> {
        let unreadable = |source| OciError::LayerRead {
            layer: layer.digest.clone(),
            source,
        };
        let file = File::open(&layer.path).map_err(unreadable)?;
        let reader = decompress(BufReader::new(file), layer.compression).map_err(unreadable)?;
        let mut archive = tar::Archive::new(reader);
        let mut paths = LayerPaths::default();
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let raw_path = entry.path().map_err(unreadable)?.into_owned();
            self.apply(&mut entry, &raw_path, &mut paths)
                .map_err(|source| OciError::Unpack {
                    layer: layer.digest.clone(),
                    entry: raw_path.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_path: &Path,
        paths: &mut LayerPaths,
    ) -> Result<(), UnpackError> {
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let rel = normalise(raw_path).ok_or(UnpackError::EscapesRoot)?;
        let Some(name) = rel.file_name() else {
            return self.apply_root(entry);
        };
        if let Some(whiteout) = whiteout::classify(name) {
            let dir = rel.parent().unwrap_or(Path::new(""));
            return whiteout::apply(&self.root, dir, whiteout, paths)
                .map_err(UnpackError::io("apply the whiteout"));
        }
        self.apply_entry(entry, &rel)?;
        paths.insert(&rel);
        Ok(())
    }

    /// Deepest first, so that setting a directory's time does not disturb its
    /// parent's. Directories that later layers removed are skipped.
    fn restore_dir_times(&self) {
        let mut dirs: Vec<_> = self.dir_times.iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, &mtime) in dirs {
            let time = TimeSpec::new(mtime, 0);
            let result = match (rel.parent(), rel.file_name()) {
                (Some(parent), Some(name)) => match self.root.existing_dir(parent) {
                    Ok(Some(dir)) => {
                        utimensat(&dir, name, &time, &time, UtimensatFlags::NoFollowSymlink)
                    }
                    _ => continue,
                },
                _ => utimensat(
                    self.root.fd(),
                    ".",
                    &time,
                    &time,
                    UtimensatFlags::NoFollowSymlink,
                ),
            };
            // ENOENT: a directory a later layer removed, nothing to date.
            if let Err(err) = result
                && err != nix::errno::Errno::ENOENT
            {
                (self.log)(format!("cannot set the time of {}: {err}", rel.display()));
            }
        }
    }
}

/// The layer's tar stream. When the media type does not say how it is
/// compressed, the first bytes do; anything not gzip or zstd is plain tar.
fn decompress<'a>(
    mut reader: BufReader<File>,
    declared: Option<Compression>,
) -> io::Result<Box<dyn Read + 'a>> {
    let compression = match declared {
        Some(compression) => compression,
        None => sniff(reader.fill_buf()?),
    };
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(reader)?;
            decoder.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
            Box::new(decoder)
        }
    })
}

pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

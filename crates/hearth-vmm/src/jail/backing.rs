//! The files under a qcow2 disk: a jailed QEMU sees only the files it is
//! given, so the whole backing chain has to be found and given to it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, VmmError};

/// "QFI\xfb"
const QCOW2_MAGIC: [u8; 4] = [0x51, 0x46, 0x49, 0xfb];
/// Backing names longer than this are refused (QEMU's own limit is 1023).
const MAX_BACKING_NAME: u32 = 4096;
/// Deeper chains are refused: a loop in the chain cannot run forever.
const MAX_CHAIN: usize = 256;

/// The backing file named in a qcow2 header, resolved against the image's
/// directory as QEMU does; `None` for an image without one (or not qcow2:
/// a raw image has no backing file).
pub fn backing_file(image: &Path) -> Result<Option<PathBuf>> {
    let mut file = std::fs::File::open(image).map_err(VmmError::io("opening", image))?;
    let mut header = [0u8; 20];
    if file.read_exact(&mut header).is_err() || header[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let length = u32::from_be_bytes(header[16..20].try_into().unwrap_or_default());
    if offset == 0 || length == 0 {
        return Ok(None);
    }
    if length > MAX_BACKING_NAME {
        return Err(VmmError::Invalid(format!(
            "{}: backing file name of {length} bytes",
            image.display()
        )));
    }
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))
        .map_err(VmmError::io("reading", image))?;
    let mut name = vec![0u8; length as usize];
    file.read_exact(&mut name)
        .map_err(VmmError::io("reading", image))?;
    let name: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(name);
    let name = PathBuf::from(name);
    let dir = image.parent().unwrap_or(Path::new("/"));
    Ok(Some(dir.join(name)))
}

/// Every image under `top`, nearest first (without `top` itself).
pub fn backing_chain(top: &Path) -> Result<Vec<PathBuf>> {
    let mut chain = Vec::new();
    let mut current = top.to_owned();
    while let Some(below) = backing_file(&current)? {
        if chain.len() >= MAX_CHAIN {
            return Err(VmmError::Invalid(format!(
                "{}: a backing chain deeper than {MAX_CHAIN}",
                top.display()
            )));
        }
        chain.push(below.clone());
        current = below;
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    async fn qemu_img(args: &[&std::ffi::OsStr]) -> TestResult {
        let status = tokio::process::Command::new("qemu-img")
            .args(args)
            .status()
            .await?;
        assert!(status.success(), "qemu-img {args:?}");
        Ok(())
    }

    #[tokio::test]
    async fn relative_and_absolute_backing_names_are_followed() -> TestResult {
        let dir = tempfile::tempdir()?;
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20])?;
        let mid = dir.path().join("mid.qcow2");
        let top = dir.path().join("top.qcow2");
        let create = ["create", "-q", "-f", "qcow2", "-F"].map(std::ffi::OsStr::new);
        let mut args = create.to_vec();
        args.extend(["raw", "-b", "base.raw"].map(std::ffi::OsStr::new));
        args.push(mid.as_os_str());
        qemu_img(&args).await?;
        let mut args = create.to_vec();
        args.extend(["qcow2", "-b"].map(std::ffi::OsStr::new));
        args.extend([mid.as_os_str(), top.as_os_str()]);
        qemu_img(&args).await?;
        assert_eq!(backing_chain(&top)?, vec![mid, base.clone()]);
        assert_eq!(backing_chain(&base)?, Vec::<PathBuf>::new());
        Ok(())
    }
}

//! Whiteouts, as the OCI image spec (layer.md) defines them: an entry
//! `.wh.<name>` removes `<name>` that lower layers made, and an entry
//! `.wh..wh..opq` makes its directory opaque, removing everything lower layers
//! put in it. Neither touches what its own layer adds, wherever in the
//! layer's tar that comes (before or after the whiteout), so the paths each
//! layer has unpacked so far are tracked in [`LayerPaths`].

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::root::{self, Root};

const PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not whiteouts.
const META_PREFIX: &[u8] = b".wh..wh.";

/// What a whiteout entry asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Remove lower layers' contents of the entry's directory.
    Opaque,
    /// Remove this name of the entry's directory from lower layers.
    Remove(&'a OsStr),
    /// A whiteout name that removes nothing (AUFS metadata, `.wh.`, `.wh..`).
    Ignore,
}

/// `None` if `name` is an ordinary file name.
pub(crate) fn classify(name: &OsStr) -> Option<Whiteout<'_>> {
    let bytes = name.as_bytes();
    let hidden = bytes.strip_prefix(PREFIX)?;
    Some(if bytes == OPAQUE {
        Whiteout::Opaque
    } else if bytes.starts_with(META_PREFIX) || matches!(hidden, b"" | b"." | b"..") {
        Whiteout::Ignore
    } else {
        Whiteout::Remove(OsStr::from_bytes(hidden))
    })
}

/// The paths one layer has created or written into so far: each entry's path
/// and its ancestors.
#[derive(Default)]
pub(crate) struct LayerPaths(HashSet<PathBuf>);

impl LayerPaths {
    pub(crate) fn insert(&mut self, rel: &Path) {
        for ancestor in rel.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.0.insert(ancestor.to_owned()) {
                // The rest of the ancestors went in with an earlier entry.
                break;
            }
        }
    }

    fn contains(&self, rel: &Path) -> bool {
        self.0.contains(rel)
    }
}

/// Applies a whiteout found in directory `dir_rel`.
pub(crate) fn apply(
    root: &Root,
    dir_rel: &Path,
    whiteout: Whiteout<'_>,
    layer: &LayerPaths,
) -> io::Result<()> {
    // No directory: nothing below to hide.
    let Some(dir) = root.existing_dir(dir_rel)? else {
        return Ok(());
    };
    match whiteout {
        Whiteout::Opaque => {
            for name in root::list(&dir)? {
                remove_lower(&dir, &name, &dir_rel.join(&name), layer)?;
            }
            Ok(())
        }
        Whiteout::Remove(name) => remove_lower(&dir, name, &dir_rel.join(name), layer),
        Whiteout::Ignore => Ok(()),
    }
}

/// Removes `name` in `dir` (at image path `rel`) as far as lower layers made
/// it: entirely if this layer has not touched it, else what lies beneath it
/// that this layer did not add.
fn remove_lower(dir: impl AsFd, name: &OsStr, rel: &Path, layer: &LayerPaths) -> io::Result<()> {
    if !layer.contains(rel) {
        return root::remove_all(dir, name);
    }
    match root::lstat(dir.as_fd(), name)? {
        Some(stat) if root::is_dir(&stat) => {
            let child = root::child_dir(dir, name)?;
            for grandchild in root::list(&child)? {
                remove_lower(&child, &grandchild, &rel.join(&grandchild), layer)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        fn classify(name: &str) -> Option<Whiteout<'_>> {
            super::classify(OsStr::new(name))
        }
        assert_eq!(classify("file"), None);
        assert_eq!(classify(".whatever"), None);
        assert_eq!(
            classify(".wh.file"),
            Some(Whiteout::Remove(OsStr::new("file")))
        );
        assert_eq!(
            classify(".wh..hidden"),
            Some(Whiteout::Remove(OsStr::new(".hidden")))
        );
        assert_eq!(classify(".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(classify(".wh..wh.plnk"), Some(Whiteout::Ignore));
        assert_eq!(classify(".wh."), Some(Whiteout::Ignore));
        assert_eq!(classify(".wh.."), Some(Whiteout::Ignore));
        assert_eq!(classify(".wh..."), Some(Whiteout::Ignore));
    }

    #[test]
    fn layer_paths_hold_ancestors() {
        let mut paths = LayerPaths::default();
        paths.insert(Path::new("a/b/c"));
        paths.insert(Path::new("a/d"));
        for rel in ["a", "a/b", "a/b/c", "a/d"] {
            assert!(paths.contains(Path::new(rel)), "{rel}");
        }
        assert!(!paths.contains(Path::new("a/e")));
    }
}

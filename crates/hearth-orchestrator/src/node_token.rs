//! The file that holds a node's token (see [`hearth_proto::auth`]): made
//! once with a random token, mode 0600, and read by the node and by a
//! control plane on the same host; or written by the operator, who gives
//! the same token to a remote control plane.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hearth_proto::auth::InvalidNodeToken;
pub use hearth_proto::auth::NodeToken;

use crate::private_files::{create_private_file, random_hex};

/// Random bytes in a token this module makes (as hex: twice as many characters).
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum NodeTokenError {
    #[error("reading the node token {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making the node token {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the node token {} may be read by other users (mode {mode:o}); make it 0600",
        .path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the node token {}: {source}", .path.display())]
    Invalid {
        path: PathBuf,
        source: InvalidNodeToken,
    },
}

/// The token in `path`: the file's content without surrounding whitespace.
/// A file that others may read is refused, as ssh refuses such a key.
pub fn read(path: &Path) -> Result<NodeToken, NodeTokenError> {
    let read_error = |source| NodeTokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(NodeTokenError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    NodeToken::new(text.trim()).map_err(|source| NodeTokenError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// The token in `path`, made first when the file is missing. Returns
/// whether it was made now.
pub fn read_or_create(path: &Path) -> Result<(NodeToken, bool), NodeTokenError> {
    let create_error = |source| NodeTokenError::Create {
        path: path.to_path_buf(),
        source,
    };
    let token = random_hex(TOKEN_BYTES).map_err(create_error)?;
    let created =
        create_private_file(path, format!("{token}\n").as_bytes()).map_err(create_error)?;
    Ok((read(path)?, created))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_token_is_made_once_private_and_then_read() -> TestResult {
        let dir = std::env::temp_dir().join(format!("hearth-token-{}", random_hex(8)?));
        std::fs::create_dir(&dir)?;
        let path = dir.join("node-token");
        let (_, created) = read_or_create(&path)?;
        assert!(created);
        assert_eq!(std::fs::metadata(&path)?.mode() & 0o777, 0o600);
        let made = std::fs::read_to_string(&path)?;
        assert_eq!(made.trim().len(), 2 * TOKEN_BYTES);
        let (_, created) = read_or_create(&path)?;
        assert!(!created);
        assert_eq!(std::fs::read_to_string(&path)?, made, "kept, not replaced");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        assert!(matches!(
            read(&path),
            Err(NodeTokenError::TooOpen { mode: 0o644, .. })
        ));
        std::fs::write(&path, "short\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert!(matches!(read(&path), Err(NodeTokenError::Invalid { .. })));
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}

//! Which token the node's gRPC API requires. Its calls create VMs as root,
//! so it never serves without one: `--node-token-file` (made when missing,
//! for the operator to give the control plane), else the data directory's
//! own `node-token`, which a control plane on the same host reads. The
//! latter is only for a node on loopback: a node that listens beyond it
//! has a remote control plane, which needs a token handed to it on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hearth_orchestrator::DataDir;
use hearth_orchestrator::node_token::{self, NodeToken};

/// A node's token and where it came from.
#[derive(Debug)]
pub struct TokenSource {
    pub token: NodeToken,
    pub path: PathBuf,
    /// Made by this start (a new random token).
    pub created: bool,
}

/// The token for a node listening on `listen`; see the module documentation.
pub fn node_token(
    data: &DataDir,
    listen: SocketAddr,
    file: Option<&Path>,
) -> anyhow::Result<TokenSource> {
    let path = match file {
        Some(file) => file.to_path_buf(),
        None if !listen.ip().is_loopback() => bail!(
            "refusing to serve the node's API on {listen} without a token: anyone who reaches it \
             could run VMs on this host. Pass --node-token-file FILE (a new random token is \
             written there when FILE is missing) and give the control plane the same token, \
             or listen on a loopback address"
        ),
        None => {
            data.ensure_private()
                .with_context(|| format!("making {} private", data.root().display()))?;
            data.node_token()
        }
    };
    let (token, created) = node_token::read_or_create(&path)?;
    Ok(TokenSource {
        token,
        path,
        created,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use hearth_orchestrator::private_files::random_hex;

    use super::*;

    fn scratch() -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("hearth-node-auth-{}", random_hex(8)?));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    #[test]
    fn beyond_loopback_a_token_file_is_required() -> anyhow::Result<()> {
        let root = scratch()?;
        let data = DataDir::new(root.join("data"));
        let Err(refused) = node_token(&data, "0.0.0.0:5008".parse()?, None) else {
            bail!("a node on 0.0.0.0 served without a token");
        };
        assert!(
            refused.to_string().contains("--node-token-file"),
            "{refused}"
        );
        assert!(!root.join("data").exists(), "nothing made on a refusal");

        let file = root.join("token");
        let given = node_token(&data, "0.0.0.0:5008".parse()?, Some(&file))?;
        assert!(given.created && given.path == file);
        assert_eq!(std::fs::metadata(&file)?.mode() & 0o777, 0o600);
        let again = node_token(&data, "[::]:5008".parse()?, Some(&file))?;
        assert!(!again.created);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }

    #[test]
    fn on_loopback_the_data_directory_holds_the_token() -> anyhow::Result<()> {
        let root = scratch()?;
        let data = DataDir::new(root.join("data"));
        let made = node_token(&data, "127.0.0.1:5008".parse()?, None)?;
        assert!(made.created);
        assert_eq!(made.path, data.node_token());
        assert_eq!(std::fs::metadata(data.root())?.mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&made.path)?.mode() & 0o777, 0o600);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }
}

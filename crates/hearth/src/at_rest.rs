//! What `hearth up` keeps on disk, kept from other users: the data
//! directory is 0700, the SQLite database (with its `-wal` and `-shm`
//! files) and `sdk.env` are 0600.

use std::path::Path;

use anyhow::Context;
use hearth_orchestrator::DataDir;

use crate::sandbox_urls::TrustFiles;
use hearth_orchestrator::private_files::{
    ensure_private_dir, ensure_private_file, restrict_if_present, write_private_file,
};

/// The SQLite database in the data directory, made private before SQLite
/// opens it: SQLite gives its `-wal` and `-shm` files the database's mode.
/// Those of an older hearth, made under a laxer umask, are fixed too.
pub fn private_sqlite(data: &DataDir) -> anyhow::Result<String> {
    data.ensure_private()
        .with_context(|| format!("making {} private", data.root().display()))?;
    let db = data.root().join("hearth.db");
    ensure_private_file(&db).with_context(|| format!("making {} private", db.display()))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = data.root().join(format!("hearth.db{suffix}"));
        restrict_if_present(&side).with_context(|| format!("making {} private", side.display()))?;
    }
    Ok(format!("sqlite://{}?mode=rwc", db.display()))
}

/// What `sdk.env` tells the SDKs: the API, the domain of sandbox hosts
/// (reached as `https://<port>-<id>.<domain>`, as against E2B's cloud),
/// the key, and where the local CA's certificates are.
#[derive(Debug)]
pub struct SdkEnv<'a> {
    pub api_url: &'a str,
    pub domain: &'a str,
    pub key: &'a str,
    pub trust: Option<&'a TrustFiles>,
}

impl SdkEnv<'_> {
    fn text(&self, path: &Path) -> String {
        let mut text = format!(
            "# hearth: settings for the E2B SDKs and CLI. Use: source {}\n\
             export E2B_API_URL={}\n\
             export E2B_DOMAIN={}\n\
             export E2B_API_KEY={}\n",
            path.display(),
            self.api_url,
            self.domain,
            self.key
        );
        if let Some(trust) = self.trust {
            text.push_str(&format!(
                "# hearth's local CA: Python (httpx, the SDK) trusts the bundle, Node the CA\n\
                 export SSL_CERT_FILE={}\n\
                 export NODE_EXTRA_CA_CERTS={}\n",
                trust.bundle.display(),
                trust.ca.display()
            ));
        }
        text
    }
}

/// `sdk.env`: lines a shell can source, readable by root only (it holds a
/// key), written so that a symlink planted at its path is not followed.
/// Its directory is made if missing (0700: only the data directory's
/// default place exists already).
pub fn write_sdk_env(path: &Path, settings: &SdkEnv<'_>) -> anyhow::Result<()> {
    let text = settings.text(path);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.is_dir()
    {
        ensure_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private_file(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    use hearth_orchestrator::node_token;
    use hearth_orchestrator::private_files::random_hex;

    use super::*;

    fn mode(path: &Path) -> anyhow::Result<u32> {
        Ok(std::fs::symlink_metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .mode()
            & 0o7777)
    }

    fn settings<'a>(key: &'a str, trust: Option<&'a TrustFiles>) -> SdkEnv<'a> {
        SdkEnv {
            api_url: "http://127.0.0.1:3000",
            domain: "hearth.localhost:3000",
            key,
            trust,
        }
    }

    #[test]
    fn sdk_env_routes_by_host_and_names_the_ca() {
        let trust = TrustFiles {
            ca: "/d/tls/ca.pem".into(),
            bundle: "/d/tls/ca-bundle.pem".into(),
        };
        let text = settings("e2b_k", Some(&trust)).text(Path::new("/d/sdk.env"));
        for line in [
            "export E2B_API_URL=http://127.0.0.1:3000\n",
            "export E2B_DOMAIN=hearth.localhost:3000\n",
            "export E2B_API_KEY=e2b_k\n",
            "export SSL_CERT_FILE=/d/tls/ca-bundle.pem\n",
            "export NODE_EXTRA_CA_CERTS=/d/tls/ca.pem\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // Header routing would send envd traffic past the host names.
        assert!(!text.contains("E2B_SANDBOX_URL"), "{text}");
    }

    /// A data directory that an older hearth left readable by everyone.
    fn old_data_dir() -> anyhow::Result<PathBuf> {
        let root = std::env::temp_dir().join(format!("hearth-at-rest-{}", random_hex(8)?));
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        Ok(root)
    }

    /// What `hearth up` writes at a start, then every mode.
    #[tokio::test]
    async fn a_start_leaves_only_private_files() -> anyhow::Result<()> {
        let root = old_data_dir()?;
        let data = DataDir::new(&root);
        let url = private_sqlite(&data)?;
        let store = hearth_api::Store::open(&url).await?;
        // A write, so SQLite has made its -wal and -shm files.
        store.create_team("modes", 1).await?;
        let (token, created) = node_token::read_or_create(&data.node_token())?;
        assert!(created);
        let sdk_env = root.join("sdk.env");
        write_sdk_env(&sdk_env, &settings("e2b_key", None))?;

        assert_eq!(mode(&root)?, 0o700, "the data directory");
        for name in [
            "hearth.db",
            "hearth.db-wal",
            "hearth.db-shm",
            "node-token",
            "sdk.env",
        ] {
            assert_eq!(mode(&root.join(name))?, 0o600, "{name}");
        }
        store.close().await;
        drop(token);

        // A second start fixes files an older hearth left open (closing the
        // last connection may have removed the -wal; an unclean stop leaves it).
        std::fs::set_permissions(
            root.join("hearth.db"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("hearth.db-wal"))?;
        std::fs::set_permissions(
            root.join("hearth.db-wal"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        private_sqlite(&data)?;
        assert_eq!(mode(&root)?, 0o700);
        assert_eq!(mode(&root.join("hearth.db"))?, 0o600);
        assert_eq!(mode(&root.join("hearth.db-wal"))?, 0o600);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }

    #[test]
    fn sdk_env_does_not_follow_a_planted_symlink() -> anyhow::Result<()> {
        let root = old_data_dir()?;
        let victim = root.join("victim");
        std::fs::write(&victim, "keep")?;
        let sdk_env = root.join("elsewhere/sdk.env");
        std::fs::create_dir(root.join("elsewhere"))?;
        std::os::unix::fs::symlink(&victim, &sdk_env)?;
        write_sdk_env(&sdk_env, &settings("e2b_key", None))?;
        assert_eq!(std::fs::read_to_string(&victim)?, "keep");
        assert_eq!(mode(&sdk_env)?, 0o600);
        let text = std::fs::read_to_string(&sdk_env)?;
        assert!(text.contains("export E2B_API_KEY=e2b_key\n"), "{text}");

        let fresh = root.join("new-dir/sdk.env");
        write_sdk_env(&fresh, &settings("k", None))?;
        assert_eq!(mode(&root.join("new-dir"))?, 0o700);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }
}

//! The command-line settings of a node's template builder, shared by
//! `hearth node` and `hearth up`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hearth_orchestrator::build::BuildSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Extra CA certificates (PEM) to trust in every build VM and built
    /// template (for a TLS-intercepting proxy or a private registry).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Build image NAME from REF instead (`hearth:base` is hearth's own base
    /// image; `e2bdev/base` maps to it by default). Repeatable.
    #[arg(long, value_name = "NAME=REF")]
    pub image_alias: Vec<String>,
    /// A registry (host[:port]) reached over plain HTTP. Loopback registries
    /// always are. Repeatable.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// A build VM's disk, in MiB, unless the build names one.
    #[arg(long, default_value_t = 10 * 1024)]
    pub build_disk_mib: u64,
    /// Template builds at once; more wait their turn.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_builds: usize,
    /// The size (MiB) of cached build layers beyond which the least recently
    /// used are removed.
    #[arg(long, default_value_t = 20 * 1024)]
    pub layer_cache_mib: u64,
    /// The size (MiB) of cached image blobs (pulled layers) beyond which the
    /// least recently used are removed.
    #[arg(long, default_value_t = 10 * 1024)]
    pub image_cache_mib: u64,
    /// The size (MiB) of stored build-context uploads beyond which the least
    /// recently used are removed (`hearth up`'s control plane).
    #[arg(long, default_value_t = 10 * 1024)]
    pub upload_cache_mib: u64,
}

impl BuildArgs {
    pub fn settings(&self) -> anyhow::Result<BuildSettings> {
        let mut settings = BuildSettings {
            default_disk_mib: self.build_disk_mib,
            max_concurrent: self.max_concurrent_builds,
            layer_cache_bytes: self.layer_cache_mib << 20,
            image_cache_bytes: self.image_cache_mib << 20,
            ..BuildSettings::default()
        };
        if let Some(path) = &self.ca_bundle {
            let bundle = std::fs::read(path)
                .with_context(|| format!("reading the CA bundle {}", path.display()))?;
            if !String::from_utf8_lossy(&bundle).contains("-----BEGIN CERTIFICATE-----") {
                bail!("{} holds no PEM certificate", path.display());
            }
            settings.ca_bundle = Some(bundle);
        }
        for alias in &self.image_alias {
            let Some((name, target)) = alias.split_once('=') else {
                bail!("--image-alias takes NAME=REF, not '{alias}'");
            };
            settings
                .image_aliases
                .insert(name.trim().to_owned(), target.trim().to_owned());
        }
        settings.pull.insecure_registries = self.insecure_registry.clone();
        Ok(settings)
    }
}

//! A build's first layer: the disk it starts from, made or found in the
//! layer store. From an OCI image (pulled, unpacked, made bootable, as
//! ext4), from hearth's own base rootfs (what `e2bdev/base` resolves to by
//! default), or from another template's disk.

use std::path::Path;

use hearth_vmm::template::{DISK, ROOTFS};
use hearth_vmm::{GuestDefaults, Template};

use super::image_rootfs::{self, SANDBOX_USER};
use super::layers::LayerMeta;
use super::steps::hash_parts;
use super::{BuildFailure, BuildLog, TemplateBuilder, layer_file_name, uuid_like};
use crate::error::NodeError;

/// What `image_aliases` maps an image name to for hearth's own base rootfs.
pub const HEARTH_BASE: &str = "hearth:base";
const BASE_STEP: &str = "base";

fn key(parts: &[&str]) -> String {
    hash_parts(parts.iter().copied())
}

fn fail(message: impl Into<String>) -> BuildFailure {
    BuildFailure::new(BASE_STEP, message)
}

fn internal(error: impl std::fmt::Display) -> BuildFailure {
    BuildFailure::internal(BASE_STEP, "preparing the base layer", error)
}

fn size_mib(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() >> 20)
}

fn base_context() -> GuestDefaults {
    GuestDefaults {
        user: Some(SANDBOX_USER.into()),
        ..GuestDefaults::default()
    }
}

async fn run_tool(command: &mut tokio::process::Command, what: &str) -> Result<(), BuildFailure> {
    let output = command
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| internal(format!("{what}: {e}")))?;
    if !output.status.success() {
        return Err(internal(format!(
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

impl TemplateBuilder {
    /// The layer hearth's base rootfs makes (the extra CA certificates are
    /// in it already: the node's rootfs artifact has them).
    pub(super) async fn base_rootfs_layer(&self) -> Result<(String, LayerMeta), BuildFailure> {
        let rootfs = &self.guest.rootfs;
        let key = key(&["rootfs", &rootfs.key]);
        if let Some(meta) = self.layers.get(&key) {
            return Ok((key, meta));
        }
        let work = self.scratch_dir(&key).map_err(internal)?;
        let name = layer_file_name(&key, "ext4");
        let image = work.path().join(&name);
        let linked = hearth_vmm::template::link_or_copy(&rootfs.image, &image).map_err(internal);
        let result = linked.and_then(|()| {
            let meta = LayerMeta {
                chain: vec![name],
                context: base_context(),
                disk_size_mib: size_mib(&image),
                init: None,
            };
            self.layers.publish(&key, &image, &meta).map_err(internal)?;
            Ok((key.clone(), meta))
        });
        drop(work);
        result
    }

    /// The layer another template's disk makes.
    pub(super) async fn template_layer(
        &self,
        template: &Template,
    ) -> Result<(String, LayerMeta), BuildFailure> {
        let key = key(&["template", &template.meta.name, &template.meta.build_id]);
        if let Some(meta) = self.layers.get(&key) {
            return Ok((key, meta));
        }
        let work = self.scratch_dir(&key).map_err(internal)?;
        self.template_layer_in(template, &key, work.path()).await
    }

    async fn template_layer_in(
        &self,
        template: &Template,
        key: &str,
        work: &Path,
    ) -> Result<(String, LayerMeta), BuildFailure> {
        let mut chain = template.meta.disk_chain.clone();
        let mut rebase = None;
        if chain.is_empty() {
            // A node-built template's disk sits on its own rootfs.ext4:
            // put that in the store under a name of its own.
            let name = format!("rootfs-{}.ext4", template.meta.rootfs_key);
            let stored = self.layers.file(&name);
            if !stored.is_file() {
                std::fs::create_dir_all(self.layers.root()).map_err(internal)?;
                hearth_vmm::template::link_or_copy(&template.dir.join(ROOTFS), &stored)
                    .map_err(internal)?;
            }
            rebase = Some(name.clone());
            chain.push(name);
        } else {
            // The store may have pruned them; the template holds its own
            // links to its chain under the same names.
            for name in &chain {
                let stored = self.layers.file(name);
                if stored.is_file() {
                    continue;
                }
                let own = template.dir.join(name);
                if !own.is_file() {
                    return Err(fail(format!(
                        "the layers of template '{}' are no longer on this node ({name}); rebuild it",
                        template.meta.name
                    )));
                }
                // Under a temporary name first: a concurrent build never
                // sees a half-copied image under the store's name.
                std::fs::create_dir_all(self.layers.root()).map_err(internal)?;
                let temporary = self.layers.root().join(format!(".{name}.{}", uuid_like()));
                hearth_vmm::template::link_or_copy(&own, &temporary).map_err(internal)?;
                std::fs::rename(&temporary, &stored).map_err(internal)?;
            }
        }
        let name = layer_file_name(key, "qcow2");
        let image = work.join(&name);
        std::fs::copy(template.dir.join(DISK), &image).map_err(internal)?;
        if let Some(backing) = rebase {
            run_tool(
                tokio::process::Command::new("qemu-img")
                    .args(["rebase", "-u", "-F", "raw", "-b", &backing])
                    .arg(&image),
                "rebasing the template's disk",
            )
            .await?;
        }
        chain.push(name);
        let mut context = template.meta.defaults.clone();
        context.user.get_or_insert_with(|| SANDBOX_USER.into());
        let init = template
            .meta
            .cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("hearth.init="))
            .map(str::to_owned);
        let meta = LayerMeta {
            chain,
            context,
            disk_size_mib: template.disk_size() >> 20,
            init,
        };
        self.layers.publish(key, &image, &meta).map_err(internal)?;
        Ok((key.to_owned(), meta))
    }

    /// The layer an OCI image makes: pulled (layers cached by digest),
    /// unpacked, made bootable, as an ext4 image of `disk_mib`.
    pub(super) async fn image_layer(
        &self,
        reference: &str,
        credentials: Option<&hearth_oci::Credentials>,
        disk_mib: u64,
        log: &BuildLog,
    ) -> Result<(String, LayerMeta), BuildFailure> {
        log.info(Some(BASE_STEP), format!("pulling image {reference}"));
        let sink = log.clone();
        let progress = move |line: String| sink.debug(Some(BASE_STEP), line);
        // Boxed as a `Send` future: rustc's Send check of the spawned build
        // cannot see through the pull's per-layer closures otherwise.
        let pull: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> = Box::pin(
            self.images
                .pull(reference, credentials, &self.settings.pull, &progress),
        );
        let pulled = pull.await.map_err(|e| fail(e.to_string()))?;
        let key = key(&[
            image_rootfs::RECIPE,
            &pulled.manifest_digest,
            &self.tools_hash,
            &self.ca_hash,
            &disk_mib.to_string(),
        ]);
        let mut context = base_context();
        for pair in &pulled.config.env {
            if let Some((name, value)) = pair.split_once('=') {
                context.env.insert(name.to_owned(), value.to_owned());
            }
        }
        if let Some(meta) = self.layers.get(&key) {
            log.info(
                Some(BASE_STEP),
                "the image's root filesystem is cached".into(),
            );
            return Ok((key, meta));
        }
        // The unpack goes on in its blocking task if this future is
        // dropped (a cancelled build): the task holds the scratch directory
        // too, and the last of the two to finish removes it.
        let work = std::sync::Arc::new(self.scratch_dir(&key).map_err(internal)?);
        let work_for_task = work.clone();
        let tree = work.path().join("tree");
        let name = layer_file_name(&key, "ext4");
        let image = work.path().join(&name);
        let tools = self.tools.clone();
        let bundle = self.settings.ca_bundle.clone();
        let sink = log.clone();
        let (tree_for_task, image_for_task) = (tree.clone(), image.clone());
        log.info(
            Some(BASE_STEP),
            "unpacking the image into a root filesystem".into(),
        );
        let made = tokio::task::spawn_blocking(move || -> Result<(), BuildFailure> {
            let _work = work_for_task;
            std::fs::create_dir_all(&tree_for_task).map_err(internal)?;
            hearth_oci::unpack(&pulled, &tree_for_task, &|line: String| {
                sink.debug(Some(BASE_STEP), line);
            })
            .map_err(|e| fail(e.to_string()))?;
            image_rootfs::prepare(&tree_for_task, &tools, bundle.as_deref()).map_err(
                |e| match e {
                    NodeError::Invalid(message) => fail(message),
                    other => internal(other),
                },
            )?;
            image_rootfs::make_ext4(&tree_for_task, &image_for_task, disk_mib).map_err(
                |e| match e {
                    NodeError::Invalid(message) => fail(message),
                    other => internal(other),
                },
            )
        })
        .await
        .map_err(internal)
        .and_then(|r| r);
        let _ = std::fs::remove_dir_all(&tree);
        let result = made.and_then(|()| {
            let meta = LayerMeta {
                chain: vec![name],
                context,
                disk_size_mib: disk_mib,
                init: Some(image_rootfs::IMAGE_INIT_PATH.to_owned()),
            };
            self.layers.publish(&key, &image, &meta).map_err(internal)?;
            Ok((key.clone(), meta))
        });
        drop(work);
        result
    }
}

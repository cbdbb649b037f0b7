//! The initramfs: busybox, the virtio driver modules (with their
//! dependencies, in load order) and hearth's `/init`, which configures the
//! network and switches to the root disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{Cache, KeyHasher};
use crate::command::run;
use crate::debian::fetch_and_unpack;
use crate::error::{GuestError, Result};
use crate::kernel::Kernel;
use crate::pins;

const RECIPE: &str = "initramfs-1";
/// The initramfs's `/init`.
pub const INIT_SCRIPT: &str = include_str!("../../../guest/initramfs-init");

/// An initramfs artifact in the cache.
#[derive(Debug, Clone)]
pub struct Initramfs {
    pub key: String,
    pub image: PathBuf,
}

pub fn key(kernel: &Kernel) -> String {
    let mut hasher = KeyHasher::new("initramfs");
    hasher
        .text("recipe", RECIPE)
        .text("kernel", &kernel.key)
        .text("busybox", &pins::BUSYBOX.spec())
        .text("init", INIT_SCRIPT);
    for module in pins::INITRAMFS_MODULES {
        hasher.text("module", module);
    }
    hasher.finish()
}

/// Returns the cached initramfs for `kernel`, building it when missing.
pub fn ensure(cache: &Cache, kernel: &Kernel) -> Result<Initramfs> {
    let key = key(kernel);
    let entry = cache.get_or_build("initramfs", &key, |dir| build(dir, kernel))?;
    Ok(Initramfs {
        key,
        image: entry.join("initramfs.img"),
    })
}

fn build(dir: &Path, kernel: &Kernel) -> Result<()> {
    let busybox = fetch_and_unpack(&pins::BUSYBOX, dir)?;
    let tree = dir.join("tree");
    let module_dir = tree.join("lib/modules");
    for sub in ["bin", "lib/modules"] {
        let path = tree.join(sub);
        std::fs::create_dir_all(&path).map_err(GuestError::io("creating", &path))?;
    }
    copy_executable(&busybox.join("bin/busybox"), &tree.join("bin/busybox"))?;
    write_executable(&tree.join("init"), INIT_SCRIPT)?;

    let order = module_load_order(&kernel.modules, pins::INITRAMFS_MODULES)?;
    let mut names = Vec::with_capacity(order.len());
    for module in &order {
        let name = format!("{}.ko", module_name(module));
        let output = run(
            "decompressing a kernel module",
            Command::new("xz").arg("-dc").arg(module),
        )?;
        let target = module_dir.join(&name);
        std::fs::write(&target, output.stdout).map_err(GuestError::io("writing", &target))?;
        names.push(name);
    }
    let order_file = module_dir.join("load-order");
    std::fs::write(&order_file, names.join("\n") + "\n")
        .map_err(GuestError::io("writing", &order_file))?;

    // Sorted names and owner 0 make the archive depend only on its contents.
    run(
        "packing the initramfs",
        Command::new("sh")
            .arg("-c")
            .arg(r#"cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 -n > "$2""#)
            .arg("sh")
            .arg(&tree)
            .arg(dir.join("initramfs.img")),
    )?;
    std::fs::remove_dir_all(&tree).map_err(GuestError::io("removing", &tree))?;
    std::fs::remove_dir_all(&busybox).map_err(GuestError::io("removing", &busybox))
}

/// Module paths under `modules`, dependencies before dependents, for the
/// `wanted` ones (paths relative to `modules`).
pub fn module_load_order(modules: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let index = index_modules(modules)?;
    let mut order = Vec::new();
    for relative in wanted {
        let path = modules.join(relative);
        if !path.is_file() {
            return Err(GuestError::Invalid(format!(
                "kernel module {} is missing from the kernel package",
                path.display()
            )));
        }
        visit(&path, &index, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    path: &Path,
    index: &HashMap<String, PathBuf>,
    order: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|p| p == path) {
        return Ok(());
    }
    if depth > 32 {
        return Err(GuestError::Invalid(format!(
            "module dependencies of {} are too deep or circular",
            path.display()
        )));
    }
    for dependency in module_dependencies(path)? {
        let found = index.get(&normalise(&dependency)).ok_or_else(|| {
            GuestError::Invalid(format!(
                "{} depends on {dependency}, which the kernel package lacks",
                path.display()
            ))
        })?;
        visit(found, index, order, depth + 1)?;
    }
    order.push(path.to_owned());
    Ok(())
}

/// The `depends=` field of a compressed module's `.modinfo`.
fn module_dependencies(path: &Path) -> Result<Vec<String>> {
    let output = run(
        "reading a kernel module",
        Command::new("xz").arg("-dc").arg(path),
    )?;
    Ok(parse_depends(&output.stdout))
}

/// Finds `\0depends=a,b\0` in a module's bytes.
pub fn parse_depends(module: &[u8]) -> Vec<String> {
    const FIELD: &[u8] = b"depends=";
    module
        .split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(FIELD))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn index_modules(root: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut index = HashMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(GuestError::io("listing", &dir))? {
            let path = entry.map_err(GuestError::io("listing", &dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(".ko.xz") {
                index.insert(normalise(&module_name(&path)), path);
            }
        }
    }
    Ok(index)
}

fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    file.trim_end_matches(".xz")
        .trim_end_matches(".ko")
        .to_owned()
}

/// The kernel treats `-` and `_` in module names alike.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map_err(GuestError::io("copying", from))?;
    set_mode(to, 0o755)
}

fn write_executable(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(GuestError::io("writing", path))?;
    set_mode(path, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(GuestError::io("setting the mode of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_field_is_parsed() {
        let bytes = b"junk\0license=GPL\0depends=net_failover,virtio\0vermagic=6\0";
        assert_eq!(parse_depends(bytes), ["net_failover", "virtio"]);
        assert!(parse_depends(b"\0depends=\0").is_empty());
        assert!(parse_depends(b"nothing here").is_empty());
    }
}

//! Turns an unpacked OCI image into a sandbox's root filesystem: hearth's
//! static envd, busybox, tini and init under `/usr/lib/hearth`, the `user`
//! account (E2B's templates run commands as `user`), names and DNS, extra
//! CA certificates; then an ext4 image of it, made without a mount.
//!
//! The tree is untrusted: an image may make any path a symlink, so every
//! path written here is resolved inside the tree as a chroot would.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::error::{NodeError, Result};

/// PID 1 of an image-built guest (see the script).
pub const IMAGE_INIT: &str = include_str!("../../../../guest/hearth-image-init");
/// Where the initramfs finds it (`hearth.init=`).
pub const IMAGE_INIT_PATH: &str = "/usr/lib/hearth/init";
/// The account sandboxes run commands as.
pub const SANDBOX_USER: &str = "user";
/// Where the extra CA certificates go, besides the system bundle.
pub const EXTRA_CA_PATH: &str = "/usr/local/share/ca-certificates/hearth-extra.crt";
pub const SYSTEM_CA_BUNDLE: &str = crate::runtime::GUEST_CA_BUNDLE;
/// Bumped when what `prepare` writes changes.
pub const RECIPE: &str = "image-rootfs-2";
/// `/bin/bash` for images without bash: the SDKs' commands need the name.
const BASH_SHIM: &str = "#!/usr/lib/hearth/busybox sh\n\
# hearth: this image has no bash; commands run by the SDKs use its sh.\n\
if [ -x /bin/sh ]; then exec /bin/sh \"$@\"; fi\n\
exec /usr/lib/hearth/busybox sh \"$@\"\n";

/// The host binaries every image gets.
#[derive(Debug, Clone)]
pub struct GuestTools {
    pub envd: PathBuf,
    pub busybox: PathBuf,
    pub tini: PathBuf,
}

impl GuestTools {
    /// The host's static busybox and tini (Debian's busybox-static and tini).
    pub fn from_host(envd: &Path) -> Self {
        Self {
            envd: envd.to_owned(),
            busybox: PathBuf::from("/bin/busybox"),
            tini: PathBuf::from("/usr/bin/tini-static"),
        }
    }
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

/// `path` (absolute, as the guest sees it) inside `tree`, with symlinks on
/// the way resolved against `tree` as the root. The last component is not
/// followed when `follow_last` is false.
pub fn resolve(tree: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved
            .iter()
            .fold(tree.to_owned(), |p, c| p.join(c))
            .join(&name);
        let is_last = pending.is_empty();
        let link = std::fs::symlink_metadata(&candidate)
            .ok()
            .filter(|m| m.file_type().is_symlink());
        if link.is_some() && (follow_last || !is_last) {
            links += 1;
            if links > 40 {
                return Err(NodeError::Invalid(format!(
                    "too many symbolic links resolving {path} in the image"
                )));
            }
            let target = std::fs::read_link(&candidate).map_err(io("reading", &candidate))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                resolved.clear();
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
            continue;
        }
        resolved.push(name);
    }
    Ok(resolved.iter().fold(tree.to_owned(), |p, c| p.join(c)))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

/// Creates directory `path` of the guest (and its parents), root-owned.
fn make_dir(tree: &Path, path: &str) -> Result<PathBuf> {
    let dir = resolve(tree, path, true)?;
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    Ok(dir)
}

/// Writes a guest file (replacing a symlink there rather than following it).
fn write_file(tree: &Path, path: &str, contents: &[u8], mode: u32) -> Result<()> {
    let parent = Path::new(path)
        .parent()
        .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
    make_dir(tree, &parent)?;
    let target = resolve(tree, path, false)?;
    if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
        let _ = std::fs::remove_file(&target);
    }
    std::fs::write(&target, contents).map_err(io("writing", &target))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", &target))?;
    chown(&target, Some(0), Some(0)).map_err(io("setting the owner of", &target))
}

fn read_guest(tree: &Path, path: &str) -> Result<String> {
    let file = resolve(tree, path, true)?;
    match std::fs::read(&file) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io("reading", &file)(e)),
    }
}

fn exists(tree: &Path, path: &str) -> bool {
    resolve(tree, path, true).is_ok_and(|p| p.exists())
}

/// Ids used in an `/etc/passwd` or `/etc/group` text (third field).
fn used_ids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| line.split(':').nth(2)?.parse().ok())
        .collect()
}

fn has_entry(text: &str, name: &str) -> bool {
    text.lines()
        .any(|line| line.split(':').next() == Some(name))
}

fn append_line(tree: &Path, path: &str, existing: &str, line: &str, mode: u32) -> Result<()> {
    let mut text = existing.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    write_file(tree, path, text.as_bytes(), mode)
}

/// Adds `user` (home, shell, passwordless sudo where sudo exists) unless the
/// image has one.
fn ensure_user(tree: &Path) -> Result<()> {
    let passwd = read_guest(tree, "/etc/passwd")?;
    if has_entry(&passwd, SANDBOX_USER) {
        return Ok(());
    }
    let group = read_guest(tree, "/etc/group")?;
    let taken_uids = used_ids(&passwd);
    let taken_gids = used_ids(&group);
    let id = (1000..60000)
        .find(|id| !taken_uids.contains(id) && !taken_gids.contains(id))
        .unwrap_or(1000);
    let shell = if exists(tree, "/bin/bash") {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let home = format!("/home/{SANDBOX_USER}");
    append_line(
        tree,
        "/etc/passwd",
        &passwd,
        &format!("{SANDBOX_USER}:x:{id}:{id}::{home}:{shell}"),
        0o644,
    )?;
    if !has_entry(&group, SANDBOX_USER) {
        append_line(
            tree,
            "/etc/group",
            &group,
            &format!("{SANDBOX_USER}:x:{id}:"),
            0o644,
        )?;
    }
    let shadow = read_guest(tree, "/etc/shadow")?;
    if !shadow.is_empty() && !has_entry(&shadow, SANDBOX_USER) {
        append_line(
            tree,
            "/etc/shadow",
            &shadow,
            &format!("{SANDBOX_USER}:*:19000:0:99999:7:::"),
            0o640,
        )?;
    }
    let home_dir = make_dir(tree, &home)?;
    chown(&home_dir, Some(id), Some(id)).map_err(io("setting the owner of", &home_dir))?;
    std::fs::set_permissions(&home_dir, std::fs::Permissions::from_mode(0o750))
        .map_err(io("setting the mode of", &home_dir))?;
    if exists(tree, "/etc/sudoers.d") {
        write_file(
            tree,
            &format!("/etc/sudoers.d/{SANDBOX_USER}"),
            format!("{SANDBOX_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n").as_bytes(),
            0o440,
        )?;
    }
    Ok(())
}

/// Adds `bundle` to the guest's trust: the system bundle (which curl,
/// OpenSSL and Python read), a file `update-ca-certificates` keeps when a
/// later step reinstalls ca-certificates, and pip's configuration.
pub fn install_ca_bundle(tree: &Path, bundle: &[u8]) -> Result<()> {
    write_file(tree, EXTRA_CA_PATH, bundle, 0o644)?;
    let mut system = read_guest(tree, SYSTEM_CA_BUNDLE)?.into_bytes();
    if !system.is_empty() && !system.ends_with(b"\n") {
        system.push(b'\n');
    }
    system.extend_from_slice(bundle);
    write_file(tree, SYSTEM_CA_BUNDLE, &system, 0o644)?;
    if !exists(tree, "/etc/pip.conf") {
        write_file(
            tree,
            "/etc/pip.conf",
            format!("[global]\ncert = {SYSTEM_CA_BUNDLE}\n").as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

fn copy_tool(tree: &Path, source: &Path, target: &str) -> Result<()> {
    let bytes = std::fs::read(source).map_err(io("reading", source))?;
    write_file(tree, target, &bytes, 0o755)
}

/// Makes the unpacked image in `tree` bootable as a hearth guest.
pub fn prepare(tree: &Path, tools: &GuestTools, ca_bundle: Option<&[u8]>) -> Result<()> {
    copy_tool(tree, &tools.envd, "/usr/lib/hearth/envd")?;
    copy_tool(tree, &tools.busybox, "/usr/lib/hearth/busybox")?;
    copy_tool(tree, &tools.tini, "/usr/lib/hearth/tini")?;
    write_file(tree, IMAGE_INIT_PATH, IMAGE_INIT.as_bytes(), 0o755)?;
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root"] {
        make_dir(tree, dir)?;
    }
    let tmp = resolve(tree, "/tmp", true)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(io("setting the mode of", &tmp))?;
    if read_guest(tree, "/etc/passwd")?.is_empty() {
        write_file(
            tree,
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n",
            0o644,
        )?;
        write_file(tree, "/etc/group", b"root:x:0:\n", 0o644)?;
    }
    ensure_user(tree)?;
    if !exists(tree, "/bin/bash") {
        // The SDKs run every command as `/bin/bash -l -c …`; an image
        // without bash gets its own sh (or hearth's busybox) under that name.
        write_file(tree, "/bin/bash", BASH_SHIM.as_bytes(), 0o755)?;
    }
    write_file(tree, "/etc/hostname", b"hearth\n", 0o644)?;
    if read_guest(tree, "/etc/hosts")?.is_empty() {
        write_file(
            tree,
            "/etc/hosts",
            b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
            0o644,
        )?;
    }
    // Images often link resolv.conf to a resolver that does not run here.
    write_file(tree, "/etc/resolv.conf", b"nameserver 8.8.8.8\n", 0o644)?;
    if let Some(bundle) = ca_bundle {
        install_ca_bundle(tree, bundle)?;
    }
    Ok(())
}

/// `mkfs.ext4 -d`: the tree as an ext4 image of `size_mib` (sparse).
pub fn make_ext4(tree: &Path, image: &Path, size_mib: u64) -> Result<()> {
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "hearth-root", "-d"])
        .arg(tree)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(io("running mkfs.ext4 for", image))?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr).into_owned();
        message.truncate(2000);
        return Err(NodeError::Invalid(format!(
            "making the root filesystem failed (is the disk large enough for the image?): {}",
            message.trim()
        )));
    }
    // Written back now, not while the build VM boots from it: a burst of
    // host writeback then can stall a TCG guest's early boot.
    std::fs::File::open(image)
        .and_then(|file| file.sync_all())
        .map_err(io("syncing", image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hearth-image-rootfs-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    #[test]
    fn paths_resolve_inside_the_tree() -> Result<()> {
        let root = tree();
        std::fs::create_dir_all(root.join("usr/lib")).map_err(io("creating", &root))?;
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).map_err(io("linking", &root))?;
        std::os::unix::fs::symlink("/", root.join("escape")).map_err(io("linking", &root))?;
        std::os::unix::fs::symlink("../../..", root.join("usr/lib/up"))
            .map_err(io("linking", &root))?;
        assert_eq!(resolve(&root, "/lib/x", true)?, root.join("usr/lib/x"));
        assert_eq!(
            resolve(&root, "/escape/etc/passwd", true)?,
            root.join("etc/passwd")
        );
        assert_eq!(resolve(&root, "/lib/up/etc", true)?, root.join("etc"));
        assert_eq!(resolve(&root, "/escape", false)?, root.join("escape"));
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }

    #[test]
    fn a_bare_image_gets_user_tools_and_names() -> Result<()> {
        let root = tree();
        std::fs::create_dir_all(root.join("etc")).map_err(io("creating", &root))?;
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
        )
        .map_err(io("writing", &root))?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnode:x:1000:\n")
            .map_err(io("writing", &root))?;
        // A resolv.conf that points out of the tree is replaced, not followed.
        std::os::unix::fs::symlink("/etc/hostname", root.join("etc/resolv.conf"))
            .map_err(io("linking", &root))?;
        let binary = root.join("tool");
        std::fs::write(&binary, b"#!/bin/sh\n").map_err(io("writing", &root))?;
        let tools = GuestTools {
            envd: binary.clone(),
            busybox: binary.clone(),
            tini: binary,
        };
        prepare(&root, &tools, Some(b"-----BEGIN CERTIFICATE-----\nx\n"))?;
        let passwd =
            std::fs::read_to_string(root.join("etc/passwd")).map_err(io("reading", &root))?;
        assert!(
            passwd.contains("user:x:1001:1001::/home/user:/bin/sh"),
            "{passwd}"
        );
        assert!(root.join("home/user").is_dir());
        assert!(root.join("usr/lib/hearth/envd").is_file());
        assert!(root.join("usr/lib/hearth/init").is_file());
        let bash = std::fs::read_to_string(root.join("bin/bash")).map_err(io("reading", &root))?;
        assert!(bash.contains("exec /bin/sh \"$@\""), "{bash}");
        let resolv =
            std::fs::read_to_string(root.join("etc/resolv.conf")).map_err(io("reading", &root))?;
        assert_eq!(resolv, "nameserver 8.8.8.8\n");
        let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt"))
            .map_err(io("reading", &root))?;
        assert!(bundle.contains("BEGIN CERTIFICATE"));
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}

//! The base template's root disk: Debian bootstrapped with debootstrap into
//! an ext4 image (cached by package list), plus envd and hearth's init written
//! into a copy of it (cached by their hashes, so an envd change costs seconds,
//! not a new bootstrap).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{Cache, KeyHasher};
use crate::command::run;
use crate::error::{GuestError, Result};
use crate::pins;
use crate::progress::Progress;

const BASE_RECIPE: &str = "rootfs-base-2";
const RECIPE: &str = "rootfs-1";
/// PID 1 of the guest, started by the initramfs.
pub const HEARTH_INIT: &str = include_str!("../../../guest/hearth-init");
/// Where the init lives in the guest (`/sbin` is a link to `/usr/sbin`).
pub const HEARTH_INIT_PATH: &str = "/usr/sbin/hearth-init";
pub const ENVD_PATH: &str = "/usr/local/bin/envd";
/// Size of the root disk; the image is sparse.
const DISK_SIZE: &str = "4G";
/// The unprivileged account SDK commands run as, like E2B's base image.
const USER: &str = "user";
const USER_UID: &str = "1000";

/// A root disk in the cache.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub key: String,
    /// The ext4 image.
    pub image: PathBuf,
    /// `dpkg-query` list of what the image holds.
    pub packages: PathBuf,
}

pub fn base_key() -> String {
    let mut hasher = KeyHasher::new("rootfs-base");
    hasher
        .text("recipe", BASE_RECIPE)
        .text("suite", pins::ROOTFS_SUITE)
        .text("size", DISK_SIZE)
        .text("user", USER)
        .text("uid", USER_UID);
    for package in pins::ROOTFS_PACKAGES {
        hasher.text("package", package);
    }
    hasher.finish()
}

pub fn key(envd: &Path, ca_bundle: Option<&[u8]>) -> Result<String> {
    let mut hasher = KeyHasher::new("rootfs");
    hasher
        .text("recipe", RECIPE)
        .text("base", &base_key())
        .file("envd", envd)?
        .text("init", HEARTH_INIT);
    // Without extra CAs the key is what it always was: caches stay valid.
    if let Some(bundle) = ca_bundle {
        hasher.text("ca-bundle", &String::from_utf8_lossy(bundle));
        // 2: the certificates also go where update-ca-certificates looks.
        hasher.text("ca-recipe", "2");
    }
    Ok(hasher.finish())
}

/// Returns the cached root disk with `envd` installed, building what is missing.
pub fn ensure(
    cache: &Cache,
    envd: &Path,
    ca_bundle: Option<&[u8]>,
    progress: &Progress,
) -> Result<Rootfs> {
    let key = key(envd, ca_bundle)?;
    if !cache.contains("rootfs", &key) {
        let base_key = base_key();
        let base = if cache.contains("rootfs-base", &base_key) {
            cache.entry("rootfs-base", &base_key)
        } else {
            progress.step(
                "bootstrapping Debian for the base rootfs (about a minute)",
                || cache.get_or_build("rootfs-base", &base_key, build_base),
            )?
        };
        progress.step("installing envd and init into the rootfs", || {
            cache.get_or_build("rootfs", &key, |dir| {
                install_hearth(&base, dir, envd, ca_bundle)
            })
        })?;
    }
    let entry = cache.entry("rootfs", &key);
    Ok(Rootfs {
        key,
        image: entry.join("rootfs.ext4"),
        packages: entry.join("packages.txt"),
    })
}

fn build_base(dir: &Path) -> Result<()> {
    let tree = dir.join("tree");
    run(
        "bootstrapping Debian",
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", pins::ROOTFS_PACKAGES.join(",")))
            .arg(pins::ROOTFS_SUITE)
            .arg(&tree)
            .arg(pins::debian_mirror()),
    )?;
    configure(&tree)?;
    let listing = run(
        "listing the rootfs's packages",
        Command::new("chroot").arg(&tree).args([
            "dpkg-query",
            "-W",
            "-f",
            "${Package}=${Version}\\n",
        ]),
    )?;
    let packages = dir.join("packages.txt");
    std::fs::write(&packages, listing.stdout).map_err(GuestError::io("writing", &packages))?;
    run(
        "making the rootfs's ext4 image",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "hearth-root", "-d"])
            .arg(&tree)
            .arg(dir.join("base.ext4"))
            .arg(DISK_SIZE),
    )?;
    std::fs::remove_dir_all(&tree).map_err(GuestError::io("removing", &tree))
}

/// Account, sudo, names and clean-up inside the bootstrapped tree.
fn configure(tree: &Path) -> Result<()> {
    run(
        "adding the sandbox user",
        Command::new("chroot").arg(tree).args([
            "useradd",
            "-m",
            "-u",
            USER_UID,
            "-s",
            "/bin/bash",
            USER,
        ]),
    )?;
    write(
        tree,
        "etc/sudoers.d/user",
        &format!("{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
        0o440,
    )?;
    write(tree, "etc/hostname", "hearth\n", 0o644)?;
    write(
        tree,
        "etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 hearth\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    write(tree, "etc/resolv.conf", "nameserver 8.8.8.8\n", 0o644)?;
    for cache_dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        empty_dir(&tree.join(cache_dir))?;
    }
    Ok(())
}

fn install_hearth(base: &Path, dir: &Path, envd: &Path, ca_bundle: Option<&[u8]>) -> Result<()> {
    let image = dir.join("rootfs.ext4");
    run(
        "copying the base rootfs",
        Command::new("cp")
            .arg("--sparse=always")
            .arg(base.join("base.ext4"))
            .arg(&image),
    )?;
    std::fs::copy(base.join("packages.txt"), dir.join("packages.txt"))
        .map_err(GuestError::io("copying", base.join("packages.txt")))?;
    let init = dir.join("hearth-init");
    std::fs::write(&init, HEARTH_INIT).map_err(GuestError::io("writing", &init))?;
    write_into_image(
        &image,
        &[(envd, ENVD_PATH, 0o755), (&init, HEARTH_INIT_PATH, 0o755)],
    )?;
    std::fs::remove_file(&init).map_err(GuestError::io("removing", &init))?;
    if let Some(bundle) = ca_bundle {
        add_ca_bundle(&image, dir, bundle)?;
    }
    Ok(())
}

/// The system's CA bundle as curl, OpenSSL and Python read it.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where `update-ca-certificates` finds local certificates: a step that
/// reinstalls ca-certificates keeps the extra ones.
const EXTRA_CA_CERTIFICATES: &str = "/usr/local/share/ca-certificates/hearth-extra.crt";

/// Appends `bundle` to the image's system CA bundle (and keeps it where
/// `update-ca-certificates` looks) and points pip at it.
fn add_ca_bundle(image: &Path, dir: &Path, bundle: &[u8]) -> Result<()> {
    let current = run(
        "reading the rootfs's CA bundle",
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {SYSTEM_CA_BUNDLE}"))
            .arg(image),
    )?;
    let mut combined = current.stdout;
    if !combined.is_empty() && !combined.ends_with(b"\n") {
        combined.push(b'\n');
    }
    combined.extend_from_slice(bundle);
    let bundle_file = dir.join("ca-certificates.crt");
    let pip_file = dir.join("pip.conf");
    let extra_file = dir.join("hearth-extra.crt");
    std::fs::write(&bundle_file, &combined).map_err(GuestError::io("writing", &bundle_file))?;
    std::fs::write(&extra_file, bundle).map_err(GuestError::io("writing", &extra_file))?;
    std::fs::write(&pip_file, format!("[global]\ncert = {SYSTEM_CA_BUNDLE}\n"))
        .map_err(GuestError::io("writing", &pip_file))?;
    write_into_image(
        image,
        &[
            (&bundle_file, SYSTEM_CA_BUNDLE, 0o644),
            (&extra_file, EXTRA_CA_CERTIFICATES, 0o644),
            (&pip_file, "/etc/pip.conf", 0o644),
        ],
    )?;
    for file in [bundle_file, extra_file, pip_file] {
        std::fs::remove_file(&file).map_err(GuestError::io("removing", &file))?;
    }
    Ok(())
}

/// Writes host files into the ext4 image, root-owned with the given modes,
/// with debugfs: no mount, no loop device.
fn write_into_image(image: &Path, files: &[(&Path, &str, u32)]) -> Result<()> {
    let mut script = String::new();
    for (source, target, mode) in files {
        let source = source
            .to_str()
            .filter(|s| !s.contains(char::is_whitespace))
            .ok_or_else(|| {
                GuestError::Invalid(format!("{} cannot be passed to debugfs", source.display()))
            })?;
        script.push_str(&format!(
            "rm {target}\nwrite {source} {target}\nsif {target} mode 0100{mode:o}\nsif {target} uid 0\nsif {target} gid 0\n"
        ));
    }
    let commands = image.with_extension("debugfs");
    std::fs::write(&commands, script).map_err(GuestError::io("writing", &commands))?;
    run(
        "writing files into the rootfs",
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(image),
    )?;
    std::fs::remove_file(&commands).map_err(GuestError::io("removing", &commands))?;
    // debugfs exits 0 even when a command fails: check each file's size.
    for (source, target, _) in files {
        let expected = std::fs::metadata(source)
            .map_err(GuestError::io("reading", *source))?
            .len();
        let stat = run(
            "checking the rootfs",
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat {target}"))
                .arg(image),
        )?;
        let text = String::from_utf8_lossy(&stat.stdout);
        if !text.contains(&format!("Size: {expected}\n"))
            && !text.contains(&format!("Size: {expected} "))
        {
            return Err(GuestError::Invalid(format!(
                "writing {target} into {} did not take ({expected} bytes expected)",
                image.display()
            )));
        }
    }
    Ok(())
}

fn write(tree: &Path, relative: &str, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = tree.join(relative);
    std::fs::write(&path, contents).map_err(GuestError::io("writing", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(GuestError::io("setting the mode of", &path))
}

fn empty_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            // apt's `partial` directories stay, empty.
            empty_dir(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(GuestError::io("removing", &path))?;
        }
    }
    Ok(())
}

//! The Debian packages hearth's guests are made of, pinned to exact versions
//! so that an artifact's cache key names its contents.

/// One Debian binary package at one version.
#[derive(Debug, Clone, Copy)]
pub struct Pin {
    pub name: &'static str,
    pub version: &'static str,
}

impl Pin {
    /// `name=version`, as apt takes it.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The guest kernel: what `linux-image-cloud-amd64` in bookworm-backports
/// depends on. Its virtio-mmio, virtio-blk and virtio-net drivers are modules.
pub const KERNEL: Pin = Pin {
    name: "linux-image-6.12.95+deb12-cloud-amd64",
    version: "6.12.95-1~bpo12+1",
};

/// The initramfs's shell and tools.
pub const BUSYBOX: Pin = Pin {
    name: "busybox-static",
    version: "1:1.35.0-4+deb12u1+b1",
};

/// Modules the initramfs loads, in the kernel's module tree; their
/// dependencies are found from each module's `depends=` field.
pub const INITRAMFS_MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio_mmio.ko.xz",
    "kernel/drivers/block/virtio_blk.ko.xz",
    "kernel/drivers/net/virtio_net.ko.xz",
];

/// The Debian release the base template's rootfs is bootstrapped from.
pub const ROOTFS_SUITE: &str = "bookworm";

/// Packages of the base template beyond debootstrap's `minbase` (like E2B's
/// base image). Versions are whatever the suite holds when first built; the
/// resolved list is kept next to the image in `packages.txt`.
pub const ROOTFS_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "python3",
    "python3-pip",
    "git",
    "curl",
    "ca-certificates",
    "sudo",
    "iproute2",
    "tini",
];

/// The Debian archive, unless `HEARTH_DEBIAN_MIRROR` names another.
pub fn debian_mirror() -> String {
    std::env::var("HEARTH_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

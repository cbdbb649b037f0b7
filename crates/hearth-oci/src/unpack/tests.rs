//! Layers made in memory, unpacked into a temporary directory. Run as root
//! (as `make test` does): ownership and device nodes need it.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;
use crate::store::hex_string;
use crate::{ImageConfig, PulledImage};

/// A layer under construction.
struct LayerTar(tar::Builder<Vec<u8>>);

impl LayerTar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut header = Self::header(EntryType::Directory, mode, 0);
        self.append(&mut header, path, &[][..]);
        self
    }

    fn file(self, path: &str, content: &str) -> Self {
        self.file_owned(path, content, 0o644, 0, 0)
    }

    fn file_owned(mut self, path: &str, content: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut header = Self::header(EntryType::Regular, mode, content.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        self.append(&mut header, path, content.as_bytes());
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut header = Self::header(EntryType::Symlink, 0o777, 0);
        header.set_link_name_literal(target).expect("link name");
        self.append(&mut header, path, &[][..]);
        self
    }

    fn hard_link(mut self, path: &str, target: &str) -> Self {
        let mut header = Self::header(EntryType::Link, 0o644, 0);
        header.set_link_name_literal(target).expect("link name");
        self.append(&mut header, path, &[][..]);
        self
    }

    fn node(mut self, path: &str, kind: EntryType, major: u32, minor: u32) -> Self {
        let mut header = Self::header(kind, 0o666, 0);
        header.set_device_major(major).expect("major");
        header.set_device_minor(minor).expect("minor");
        self.append(&mut header, path, &[][..]);
        self
    }

    /// A PAX extended header for the next entry.
    fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<length> <key>=<value>\n", where the length counts itself.
            let rest = key.len() + value.len() + 3;
            let mut length = rest + 1;
            while length != rest + length.to_string().len() {
                length = rest + length.to_string().len();
            }
            write!(data, "{length} {key}=").expect("write");
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = Self::header(EntryType::XHeader, 0o644, data.len() as u64);
        self.append(&mut header, "pax", &data[..]);
        self
    }

    /// Writes the path into the header as is, `..` included: `set_path`
    /// would refuse what these tests need to feed the unpacker.
    fn append(&mut self, header: &mut Header, path: &str, data: &[u8]) {
        let name = &mut header.as_old_mut().name;
        assert!(path.len() < name.len(), "test paths are short");
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        self.0.append(header, data).expect("append");
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("finish tar")
    }
}

/// Blobs and the image that lists them.
struct Image {
    blobs: tempfile::TempDir,
    layers: Vec<Layer>,
}

impl Image {
    fn new() -> Self {
        Self {
            blobs: tempfile::tempdir().expect("tempdir"),
            layers: Vec::new(),
        }
    }

    fn layer(self, tar: LayerTar) -> Self {
        self.layer_as(tar, Compression::Gzip, Some(Compression::Gzip))
    }

    /// Adds a layer compressed with `compression`, declared as `declared`.
    fn layer_as(
        mut self,
        tar: LayerTar,
        compression: Compression,
        declared: Option<Compression>,
    ) -> Self {
        let tar = tar.finish();
        let blob = match compression {
            Compression::None => tar,
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&tar).expect("gzip");
                encoder.finish().expect("gzip")
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 3).expect("zstd"),
        };
        let digest = format!("sha256:{}", hex_string(&Sha256::digest(&blob)));
        let path = self.blobs.path().join(self.layers.len().to_string());
        fs::write(&path, &blob).expect("write blob");
        self.layers.push(Layer {
            digest,
            media_type: "test".into(),
            size: blob.len() as u64,
            path,
            compression: declared,
        });
        self
    }

    fn pulled(&self) -> PulledImage {
        PulledImage {
            reference: "test".into(),
            manifest_digest: "sha256:test".into(),
            layers: self.layers.clone(),
            config: ImageConfig::default(),
        }
    }

    /// Unpacks into a fresh `<tmp>/root`; returns the tmp dir, the root and
    /// the log.
    fn unpack(&self) -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let (tmp, root, log, result) = self.try_unpack();
        if let Err(err) = result {
            panic!("unpack failed: {err}");
        }
        (tmp, root, log)
    }

    fn try_unpack(
        &self,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Vec<String>,
        Result<(), OciError>,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let log = RefCell::new(Vec::new());
        let result = unpack(&self.pulled(), &root, &|line| log.borrow_mut().push(line));
        (tmp, root, log.into_inner(), result)
    }
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn exists(path: impl AsRef<Path>) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn lstat(path: impl AsRef<Path>) -> fs::Metadata {
    let path = path.as_ref();
    fs::symlink_metadata(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn plain_gzip_and_zstd_layers_and_sniffed_ones() {
    let image = Image::new()
        .layer_as(
            LayerTar::new().file("plain", "p"),
            Compression::None,
            Some(Compression::None),
        )
        .layer_as(
            LayerTar::new().file("gzip", "g"),
            Compression::Gzip,
            Some(Compression::Gzip),
        )
        .layer_as(
            LayerTar::new().file("zstd", "z"),
            Compression::Zstd,
            Some(Compression::Zstd),
        )
        // Docker media types: the bytes decide.
        .layer_as(
            LayerTar::new().file("sniffed-gzip", "sg"),
            Compression::Gzip,
            None,
        )
        .layer_as(
            LayerTar::new().file("sniffed-zstd", "sz"),
            Compression::Zstd,
            None,
        )
        .layer_as(
            LayerTar::new().file("sniffed-tar", "st"),
            Compression::None,
            None,
        );
    let (_tmp, root, log) = image.unpack();
    for (name, content) in [
        ("plain", "p"),
        ("gzip", "g"),
        ("zstd", "z"),
        ("sniffed-gzip", "sg"),
        ("sniffed-zstd", "sz"),
        ("sniffed-tar", "st"),
    ] {
        assert_eq!(read(root.join(name)), content);
    }
    assert!(log[0].starts_with("unpacking layer 1/6 sha256:"), "{log:?}");
}

#[test]
fn a_corrupt_layer_names_the_layer() {
    let image = Image::new().layer_as(
        LayerTar::new().file("a", "a"),
        Compression::None,
        Some(Compression::Gzip),
    );
    let (_tmp, _root, _log, result) = image.try_unpack();
    match result {
        Err(OciError::LayerRead { layer, .. }) => assert_eq!(layer, image.layers[0].digest),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ownership_modes_and_times_are_preserved() {
    let image = Image::new().layer(
        LayerTar::new()
            .dir("./", 0o755)
            .dir("srv", 0o1777)
            .file_owned("srv/suid", "x", 0o4755, 1234, 5678)
            .file_owned("srv/private", "y", 0o600, 1000, 1000)
            .symlink("srv/link", "suid"),
    );
    let (_tmp, root, _log) = image.unpack();
    let suid = lstat(root.join("srv/suid"));
    assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(suid.mtime(), 1_600_000_000);
    let private = lstat(root.join("srv/private"));
    assert_eq!(
        (private.uid(), private.gid(), private.mode() & 0o7777),
        (1000, 1000, 0o600)
    );
    let srv = lstat(root.join("srv"));
    assert!(srv.is_dir());
    assert_eq!(srv.mode() & 0o7777, 0o1777);
    // Set after its children were created.
    assert_eq!(srv.mtime(), 1_600_000_000);
    assert_eq!(lstat(&root).mtime(), 1_600_000_000);
    assert!(lstat(root.join("srv/link")).file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("srv/link")).expect("link"),
        Path::new("suid")
    );
}

#[test]
fn missing_parents_are_created() {
    let image = Image::new().layer(LayerTar::new().file("a/b/c/file", "deep"));
    let (_tmp, root, _log) = image.unpack();
    assert_eq!(read(root.join("a/b/c/file")), "deep");
    assert_eq!(lstat(root.join("a/b")).mode() & 0o777, 0o755);
}

#[test]
fn whiteouts_remove_files_and_directories_of_lower_layers() {
    let image = Image::new()
        .layer(
            LayerTar::new()
                .dir("etc", 0o755)
                .file("etc/keep", "k")
                .file("etc/gone", "g")
                .file("etc/.hidden", "h")
                .dir("var", 0o755)
                .dir("var/cache", 0o755)
                .file("var/cache/big", "b")
                .dir("var/cache/sub", 0o755)
                .file("var/cache/sub/deeper", "d"),
        )
        .layer(
            LayerTar::new()
                .file("etc/.wh.gone", "")
                .file("etc/.wh..hidden", "")
                .file("var/.wh.cache", "")
                .file(".wh.never-existed", ""),
        );
    let (_tmp, root, _log) = image.unpack();
    assert_eq!(read(root.join("etc/keep")), "k");
    assert!(!exists(root.join("etc/gone")));
    assert!(!exists(root.join("etc/.hidden")));
    assert!(!exists(root.join("var/cache")));
    assert!(lstat(root.join("var")).is_dir());
    // Whiteout entries themselves are never materialised.
    assert!(!exists(root.join("etc/.wh.gone")));
    assert!(!exists(root.join(".wh.never-existed")));
}

#[test]
fn a_whiteout_does_not_remove_what_its_own_layer_adds() {
    let image = Image::new()
        .layer(LayerTar::new().file("dir/old", "lower"))
        .layer(
            LayerTar::new()
                .dir("dir", 0o755)
                .file("dir/new", "same layer")
                .file(".wh.dir", ""),
        );
    let (_tmp, root, _log) = image.unpack();
    assert!(!exists(root.join("dir/old")));
    assert_eq!(read(root.join("dir/new")), "same layer");
}

#[test]
fn opaque_directories_hide_lower_content_only() {
    // The marker first, as the spec recommends, and last, as some tools write it.
    for marker_last in [false, true] {
        let lower = LayerTar::new()
            .dir("opt", 0o755)
            .file("opt/old", "lower")
            .dir("opt/sub", 0o755)
            .file("opt/sub/old2", "lower")
            .file("opt/sub/replaced", "lower")
            .file("sibling", "stays");
        let mut upper = LayerTar::new().dir("opt", 0o755);
        if !marker_last {
            upper = upper.file("opt/.wh..wh..opq", "");
        }
        upper = upper
            .file("opt/new", "upper")
            .dir("opt/sub", 0o755)
            .file("opt/sub/new2", "upper")
            .file("opt/sub/replaced", "upper");
        if marker_last {
            upper = upper.file("opt/.wh..wh..opq", "");
        }
        let image = Image::new().layer(lower).layer(upper);
        let (_tmp, root, _log) = image.unpack();
        assert!(!exists(root.join("opt/old")), "marker last: {marker_last}");
        assert!(
            !exists(root.join("opt/sub/old2")),
            "marker last: {marker_last}"
        );
        assert_eq!(read(root.join("opt/new")), "upper");
        assert_eq!(read(root.join("opt/sub/new2")), "upper");
        assert_eq!(read(root.join("opt/sub/replaced")), "upper");
        assert_eq!(read(root.join("sibling")), "stays");
        assert!(!exists(root.join("opt/.wh..wh..opq")));
    }
}

#[test]
fn an_opaque_directory_may_be_empty_afterwards() {
    let image = Image::new()
        .layer(LayerTar::new().file("d/a", "a").file("d/b", "b"))
        .layer(LayerTar::new().dir("d", 0o700).file("d/.wh..wh..opq", ""));
    let (_tmp, root, _log) = image.unpack();
    let left: Vec<_> = fs::read_dir(root.join("d")).expect("read d").collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(lstat(root.join("d")).mode() & 0o777, 0o700);
}

#[test]
fn hard_links_share_the_inode() {
    let image = Image::new()
        .layer(LayerTar::new().file_owned("bin/tool", "t", 0o755, 7, 7))
        .layer(
            LayerTar::new()
                .hard_link("bin/alias", "bin/tool")
                .hard_link("/usr/alias2", "/bin/tool"),
        );
    let (_tmp, root, _log) = image.unpack();
    let tool = lstat(root.join("bin/tool"));
    let alias = lstat(root.join("bin/alias"));
    assert_eq!(tool.ino(), alias.ino());
    assert_eq!(lstat(root.join("usr/alias2")).ino(), tool.ino());
    assert_eq!(tool.nlink(), 3);
    assert_eq!(alias.uid(), 7);
}

#[test]
fn symlinks_are_never_followed_out_of_the_root() {
    let outside = tempfile::tempdir().expect("tempdir");
    let outside_path = outside.path().to_str().expect("utf-8 temp path").to_owned();
    let image = Image::new().layer(
        LayerTar::new()
            .dir("etc", 0o755)
            .symlink("etc/evil", "/")
            .file("etc/evil/x", "through absolute")
            .symlink("up", "../../../../..")
            .file("up/y", "through relative")
            // The host path exists inside the root too: the link leads there.
            .file(&format!("{outside_path}/keep"), "")
            .symlink("host", &outside_path)
            .file("host/z", "through host path")
            .dir("usr", 0o755)
            .dir("usr/lib", 0o755)
            .symlink("lib", "usr/lib")
            .file("lib/libc.so", "merged usr")
            // Replacing a symlink replaces the link, not its target.
            .symlink("target-link", "/etc/passwd")
            .file("target-link", "replaced"),
    );
    let (_tmp, root, _log) = image.unpack();
    assert_eq!(read(root.join("x")), "through absolute");
    assert_eq!(read(root.join("y")), "through relative");
    let inside = root.join(outside.path().strip_prefix("/").expect("absolute"));
    assert_eq!(read(inside.join("z")), "through host path");
    assert!(!exists(outside.path().join("z")), "wrote outside the root");
    assert_eq!(read(root.join("usr/lib/libc.so")), "merged usr");
    assert!(lstat(root.join("lib")).file_type().is_symlink());
    assert!(lstat(root.join("target-link")).is_file());
    assert!(!exists(root.join("etc/passwd")));
}

#[test]
fn a_symlink_to_a_directory_only_the_host_has_leads_nowhere() {
    let outside = tempfile::tempdir().expect("tempdir");
    let outside_path = outside.path().to_str().expect("utf-8 temp path").to_owned();
    let image = Image::new().layer(
        LayerTar::new()
            .symlink("host", &outside_path)
            .file("host/z", "must not leave the root"),
    );
    let (_tmp, _root, _log, result) = image.try_unpack();
    match result {
        Err(OciError::Unpack { entry, source, .. }) => {
            assert_eq!(entry, "host/z");
            assert!(
                matches!(&source, UnpackError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!exists(outside.path().join("z")), "wrote outside the root");
}

#[test]
fn dot_dot_entries_are_refused() {
    for path in ["../escaped", "a/../../escaped", "./../escaped"] {
        let image = Image::new().layer(LayerTar::new().file(path, "no"));
        let (tmp, _root, _log, result) = image.try_unpack();
        match result {
            Err(OciError::Unpack {
                entry,
                source: UnpackError::EscapesRoot,
                ..
            }) => assert_eq!(entry, path),
            other => panic!("{path}: {other:?}"),
        }
        assert!(!exists(tmp.path().join("escaped")), "{path}");
    }
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let image = Image::new().layer(LayerTar::new().hard_link("passwd", "../../etc/passwd"));
    let (_tmp, root, _log, result) = image.try_unpack();
    assert!(
        matches!(
            result,
            Err(OciError::Unpack {
                source: UnpackError::LinkEscapesRoot { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!exists(root.join("passwd")));
}

#[test]
fn later_layers_replace_entries_of_another_type() {
    let image = Image::new()
        .layer(
            LayerTar::new()
                .file("a/inside", "x")
                .file("b", "file")
                .symlink("c", "/a"),
        )
        .layer(
            LayerTar::new()
                .file("a", "now a file")
                .dir("b", 0o755)
                .dir("c", 0o755)
                .file("c/f", "f"),
        );
    let (_tmp, root, _log) = image.unpack();
    assert_eq!(read(root.join("a")), "now a file");
    assert!(lstat(root.join("b")).is_dir());
    assert!(lstat(root.join("c")).is_dir());
    assert_eq!(read(root.join("c/f")), "f");
    assert!(!exists(root.join("a/inside")));
}

#[test]
fn device_nodes_and_fifos_are_created_or_skipped_with_a_line() {
    let image = Image::new().layer(
        LayerTar::new()
            .node("dev/null", EntryType::Char, 1, 3)
            .node("run/fifo", EntryType::Fifo, 0, 0),
    );
    let (_tmp, root, log) = image.unpack();
    let fifo = lstat(root.join("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o777, 0o666);
    match fs::symlink_metadata(root.join("dev/null")) {
        Ok(null) => {
            assert!(null.file_type().is_char_device());
            assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        }
        Err(_) => assert!(
            log.iter().any(|line| line.contains("skipping dev/null")),
            "{log:?}"
        ),
    }
}

#[test]
fn pax_records_set_owner_and_xattrs() {
    let image = Image::new().layer(
        LayerTar::new()
            .pax(&[
                ("uid", b"3000000"),
                ("SCHILY.xattr.user.hearth", b"yes"),
                ("path", b"a-long-name-from-pax"),
            ])
            .file("short", "pax"),
    );
    let (_tmp, root, log) = image.unpack();
    let file = root.join("a-long-name-from-pax");
    assert_eq!(read(&file), "pax");
    assert_eq!(lstat(&file).uid(), 3_000_000);
    match xattr::get(&file, "user.hearth") {
        Ok(Some(value)) => assert_eq!(value, b"yes"),
        // A filesystem without user xattrs: the unpack says so.
        _ => assert!(log.iter().any(|l| l.contains("user.hearth")), "{log:?}"),
    }
}

#[test]
fn sniffing_knows_the_magic_numbers() {
    assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
    assert_eq!(sniff(b"etc/\0\0\0"), Compression::None);
    assert_eq!(sniff(b""), Compression::None);
}

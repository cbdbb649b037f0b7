//! Pulls from a real registry (docker-registry 2.8 on loopback): images the
//! tests push with `hearth_oci::push`, unpacked and checked file by file.
//! Needs the `docker-registry` package (scripts/install-deps.sh --test) and
//! root, for the ownership the unpack restores.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_oci::push::push_index;
use hearth_oci::{
    Compression, Credentials, ImageConfig, ImageStore, OciError, PullOptions, PulledImage, unpack,
};
use support::{Log, Registry};

const BUSYBOX: &str = "/bin/busybox";

/// A small root filesystem whose `/etc/marker` says `marker`.
fn rootfs(marker: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for sub in ["bin", "etc", "srv/data", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("etc/marker"), marker).expect("marker");
    std::fs::write(root.join("srv/data/owned"), "x").expect("file");
    std::os::unix::fs::chown(root.join("srv/data/owned"), Some(4321), Some(8765)).expect("chown");
    std::os::unix::fs::symlink("/etc/marker", root.join("srv/marker-link")).expect("symlink");
    dir
}

/// Plus busybox as /bin/sh when the host has it (2 MiB that the other tests
/// need not compress).
fn rootfs_with_shell(marker: &str) -> tempfile::TempDir {
    let dir = rootfs(marker);
    if Path::new(BUSYBOX).exists() {
        let bin = dir.path().join("bin");
        std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("symlink");
    }
    dir
}

fn config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into(), "GREETING=hello".into()],
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        entrypoint: vec![],
        cmd: vec![],
    }
}

async fn pull(
    store: &ImageStore,
    reference: &str,
    credentials: Option<&Credentials>,
    log: &Log,
) -> Result<PulledImage, OciError> {
    store
        .pull(reference, credentials, &PullOptions::default(), &log.sink())
        .await
}

fn unpacked(image: &PulledImage) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("rootfs");
    let log = std::cell::RefCell::new(Vec::new());
    if let Err(err) = unpack(image, &dest, &|line| log.borrow_mut().push(line)) {
        panic!("unpack: {err}\n{:?}", log.into_inner());
    }
    (tmp, dest)
}

#[tokio::test]
async fn pulls_unpacks_and_then_serves_layers_from_the_cache() {
    let registry = Registry::start();
    let source = rootfs_with_shell("gzip image");
    let pushed = registry
        .push(
            "app:1",
            source.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());

    let log = Log::default();
    let image = pull(&store, &registry.reference("app:1"), None, &log)
        .await
        .unwrap_or_else(|err| panic!("pull: {err}\n{}", registry.log()));
    assert_eq!(image.reference, format!("{}/app:1", registry.addr));
    assert_eq!(image.manifest_digest, pushed.manifest_digest);
    assert_eq!(image.config, config());
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(layer.digest, pushed.layer_digest);
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(layer.compression, Some(Compression::Gzip));
    let hex = layer.digest.trim_start_matches("sha256:");
    assert_eq!(layer.path, cache.path().join("blobs/sha256").join(hex));
    let lines = log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pulling layer sha256:") && l.ends_with("iB)")),
        "{lines:?}"
    );

    let (_tmp, dest) = unpacked(&image);
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/marker")).expect("marker"),
        "gzip image"
    );
    let owned = std::fs::symlink_metadata(dest.join("srv/data/owned")).expect("owned");
    assert_eq!((owned.uid(), owned.gid()), (4321, 8765));
    assert_eq!(
        std::fs::read_link(dest.join("srv/marker-link")).expect("link"),
        Path::new("/etc/marker")
    );
    if Path::new(BUSYBOX).exists() {
        let output = std::process::Command::new(dest.join("bin/sh"))
            .args(["-c", "echo unpacked shell works"])
            .output()
            .expect("run the unpacked shell");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "unpacked shell works\n"
        );
    }

    // Again: nothing is downloaded, the blob is not rewritten (a new blob
    // would be a new file renamed into place), only marked as used.
    let before = std::fs::metadata(&layer.path).expect("blob");
    let again_log = Log::default();
    let again = pull(&store, &registry.reference("app:1"), None, &again_log)
        .await
        .expect("second pull");
    let lines = again_log.lines();
    assert!(lines.iter().any(|l| l.ends_with(" cached")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("pulling layer")),
        "{lines:?}"
    );
    assert_eq!(again.layers[0].path, layer.path);
    let after = std::fs::metadata(&layer.path).expect("blob");
    assert_eq!(before.ino(), after.ino());
    assert!(after.modified().expect("mtime") >= before.modified().expect("mtime"));
}

#[tokio::test]
async fn an_index_resolves_to_linux_amd64() {
    let registry = Registry::start();
    let arm = rootfs("arm64");
    let amd = rootfs("amd64");
    let arm64 = registry
        .push(
            "multi:arm64",
            arm.path(),
            Compression::Gzip,
            &config(),
            "arm64",
        )
        .await;
    let amd64 = registry
        .push(
            "multi:amd64",
            amd.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    let creds = registry.credentials.as_ref();
    push_index(
        &registry.reference("multi:latest"),
        &[arm64.clone(), amd64.clone()],
        creds,
        &[],
    )
    .await
    .expect("push index");
    push_index(&registry.reference("multi:arm-only"), &[arm64], creds, &[])
        .await
        .expect("push index");

    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    let log = Log::default();
    let image = pull(&store, &registry.reference("multi:latest"), None, &log)
        .await
        .expect("pull index");
    assert_eq!(image.manifest_digest, amd64.manifest_digest);
    let (_tmp, dest) = unpacked(&image);
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/marker")).expect("marker"),
        "amd64"
    );

    match pull(&store, &registry.reference("multi:arm-only"), None, &log).await {
        Err(OciError::NoAmd64 { available, .. }) => assert_eq!(available, ["linux/arm64"]),
        other => panic!("{other:?}"),
    }
    // Without an index the config names the platform.
    match pull(&store, &registry.reference("multi:arm64"), None, &log).await {
        Err(OciError::NoAmd64 { available, .. }) => assert_eq!(available, ["linux/arm64"]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn zstd_and_uncompressed_layers() {
    let registry = Registry::start();
    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    for (name, compression, media_type) in [
        (
            "zstd:1",
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "plain:1",
            Compression::None,
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ] {
        let source = rootfs(name);
        registry
            .push(name, source.path(), compression, &config(), "amd64")
            .await;
        let image = pull(&store, &registry.reference(name), None, &Log::default())
            .await
            .unwrap_or_else(|err| panic!("pull {name}: {err}"));
        assert_eq!(image.layers[0].media_type, media_type);
        let (_tmp, dest) = unpacked(&image);
        assert_eq!(
            std::fs::read_to_string(dest.join("etc/marker")).expect("marker"),
            name
        );
    }
}

#[tokio::test]
async fn unknown_images_are_not_found() {
    let registry = Registry::start();
    let source = rootfs("x");
    registry
        .push(
            "exists:1",
            source.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    for name in ["no-such-repo:1", "exists:no-such-tag"] {
        let reference = registry.reference(name);
        match pull(&store, &reference, None, &Log::default()).await {
            Err(err @ OciError::NotFound { .. }) => {
                assert_eq!(err.to_string(), format!("image {reference} not found"));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_registry_with_a_login() {
    let registry = Registry::with_login("hearth", "right password");
    let source = rootfs("private");
    registry
        .push(
            "private:1",
            source.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    let reference = registry.reference("private:1");

    let image = pull(
        &store,
        &reference,
        registry.credentials.as_ref(),
        &Log::default(),
    )
    .await
    .expect("pull with the right password");
    let (_tmp, dest) = unpacked(&image);
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/marker")).expect("marker"),
        "private"
    );

    let wrong = Credentials {
        username: "hearth".into(),
        password: "wrong".into(),
    };
    match pull(&store, &reference, Some(&wrong), &Log::default()).await {
        Err(err @ OciError::AuthRefused { .. }) => assert_eq!(
            err.to_string(),
            format!("wrong registry credentials for {}", registry.addr)
        ),
        other => panic!("{other:?}"),
    }
    match pull(&store, &reference, None, &Log::default()).await {
        Err(OciError::AuthRequired { registry: name, .. }) => assert_eq!(name, registry.addr),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_is_refused() {
    let registry = Registry::start();
    let source = rootfs("tampered");
    let pushed = registry
        .push(
            "tampered:1",
            source.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    // Same size, other bytes: only the digest can tell.
    let data = registry.blob_data(&pushed.layer_digest);
    let mut bytes = std::fs::read(&data).expect("blob in the registry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).expect("tamper");

    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    match pull(
        &store,
        &registry.reference("tampered:1"),
        None,
        &Log::default(),
    )
    .await
    {
        Err(OciError::DigestMismatch { digest, .. }) => assert_eq!(digest, pushed.layer_digest),
        other => panic!("{other:?}"),
    }
    let hex = pushed.layer_digest.trim_start_matches("sha256:");
    let blobs = cache.path().join("blobs/sha256");
    assert!(!blobs.join(hex).exists(), "a bad blob was cached");
    let partial = std::fs::read_dir(&blobs)
        .expect("blob dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
        .count();
    assert_eq!(partial, 0, "a partial download was left behind");
}

#[tokio::test]
async fn images_over_the_size_limit_are_refused_before_downloading() {
    let registry = Registry::start();
    let source = rootfs("big");
    registry
        .push(
            "big:1",
            source.path(),
            Compression::Gzip,
            &config(),
            "amd64",
        )
        .await;
    let cache = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(cache.path());
    let options = PullOptions {
        max_image_bytes: 100,
        ..PullOptions::default()
    };
    let log = Log::default();
    let result = store
        .pull(&registry.reference("big:1"), None, &options, &log.sink())
        .await;
    assert!(
        matches!(result, Err(OciError::TooLarge { limit: 100, .. })),
        "{result:?}"
    );
    assert!(!log.lines().iter().any(|l| l.starts_with("pulling layer")));
}

#[tokio::test]
async fn an_unreachable_registry_is_named() {
    // A port that nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let store = ImageStore::new(tempfile::tempdir().expect("tempdir").path());
    match pull(
        &store,
        &format!("127.0.0.1:{port}/app:1"),
        None,
        &Log::default(),
    )
    .await
    {
        Err(err @ OciError::Unreachable { .. }) => {
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("cannot reach registry 127.0.0.1:{port}: ")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out() {
    // Accepts connections (the kernel does, from the backlog) and says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store = ImageStore::new(tempfile::tempdir().expect("tempdir").path());
    let options = PullOptions {
        timeout: Duration::from_millis(500),
        ..PullOptions::default()
    };
    let result = store
        .pull(
            &format!("{addr}/app:1"),
            None,
            &options,
            &Log::default().sink(),
        )
        .await;
    assert!(
        matches!(result, Err(OciError::Timeout { .. })),
        "{result:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn malformed_references_are_refused() {
    let store = ImageStore::new(tempfile::tempdir().expect("tempdir").path());
    // Spawned, as the template builder runs pulls: the future must be `Send`
    // whatever the lifetimes of its borrows.
    let result = tokio::spawn(async move {
        let log = Log::default();
        pull(&store, "Not A Reference", None, &log).await
    })
    .await
    .expect("pull task");
    match result {
        Err(err @ OciError::InvalidReference { .. }) => assert!(
            err.to_string()
                .starts_with("`Not A Reference` is not a valid image reference"),
            "{err}"
        ),
        other => panic!("{other:?}"),
    }
}

//! `/files` edge cases that the SDK suites do not reach.

mod common;

use common::*;

#[tokio::test]
async fn downloads_only_regular_files() {
    let server = TestServer::start().await;
    let client = http1();
    for (path, status, message) in [
        ("/dev/zero", 400, "path '/dev/zero' is not a regular file"),
        ("/tmp", 400, "path '/tmp' is a directory"),
        ("/no/such/file", 404, "path '/no/such/file' does not exist"),
    ] {
        let response = client
            .get(server.url(&format!("/files?path={path}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), status, "{path}");
        let body: serde_json::Value = response.json().await.expect("json error");
        assert_eq!(body["code"], status);
        assert_eq!(body["message"], message);
    }
}

#[tokio::test]
async fn gzip_is_used_only_when_asked_for_alone() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "x".repeat(10_000)).expect("write");
    let url = server.url(&format!("/files?path={}", file.display()));
    let client = http1();
    let gzip = client
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let compressed = gzip.bytes().await.expect("body");
    assert!(compressed.len() < 1000, "10 000 equal bytes must compress");
    let mut decoder = flate2::read::GzDecoder::new(&compressed[..]);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut decoder, &mut text).expect("valid gzip");
    assert_eq!(text, "x".repeat(10_000));

    let plain = client
        .get(&url)
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .expect("sent");
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["content-length"], "10000");

    let refused = client
        .get(&url)
        .header("accept-encoding", "br, identity;q=0")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 406);
}

const BOUNDARY: &str = "hearth-test-boundary";

/// A multipart body with one part per `(filename, content)`, and `extra`
/// added to every part's headers.
fn multipart(parts: &[(String, Vec<u8>)], extra: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 {extra}Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// envd with small upload limits and its own staging directory.
async fn limited_server(staging: &std::path::Path) -> TestServer {
    TestServer::with_options(envd::state::Options {
        upload_limits: envd::http::upload_limits::UploadLimits {
            max_part_bytes: 1024,
            max_parts: 3,
            max_part_header_bytes: 1024,
        },
        upload_staging_dir: Some(staging.to_path_buf()),
        ..Default::default()
    })
    .await
}

async fn post_multipart(server: &TestServer, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = http1()
        .post(server.url("/files"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// A directory with `keep.txt` ("old", mode 0750) that uploads try to
/// overwrite, and the paths of files they try to create.
struct Scene {
    dir: tempfile::TempDir,
    staging: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let scene = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            staging: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::write(scene.keep(), "old").expect("write");
        std::fs::set_permissions(scene.keep(), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");
        scene
    }

    fn keep(&self) -> std::path::PathBuf {
        self.dir.path().join("keep.txt")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Nothing changed: `keep.txt` as it was, no new file, no staging file.
    fn assert_untouched(&self) {
        assert_eq!(std::fs::read_to_string(self.keep()).expect("read"), "old");
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["keep.txt"], "files the failed upload left");
        let staged = std::fs::read_dir(self.staging.path())
            .expect("list")
            .count();
        assert_eq!(staged, 0, "staging files left");
    }
}

#[tokio::test]
async fn an_oversized_part_is_refused_and_nothing_is_lost() {
    let scene = Scene::new();
    let server = limited_server(scene.staging.path()).await;
    let body = multipart(
        &[
            (scene.path("keep.txt"), b"new".to_vec()),
            (scene.path("new.txt"), b"created".to_vec()),
            (scene.path("big.bin"), vec![7; 4096]),
        ],
        "",
    );
    let (status, body) = post_multipart(&server, body).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], 413);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("big.bin") && message.contains("limit of 1024 bytes"),
        "{message}"
    );
    scene.assert_untouched();
}

#[tokio::test]
async fn too_many_parts_are_refused_and_nothing_is_lost() {
    let scene = Scene::new();
    let server = limited_server(scene.staging.path()).await;
    let mut parts = vec![(scene.path("keep.txt"), b"new".to_vec())];
    parts.extend((0..3).map(|i| (scene.path(&format!("new-{i}.txt")), b"x".to_vec())));
    let (status, body) = post_multipart(&server, multipart(&parts, "")).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], 413);
    assert_eq!(body["message"], "the upload has more than 3 parts");
    scene.assert_untouched();
}

#[tokio::test]
async fn overlong_part_headers_are_refused_without_reading_them_whole() {
    let scene = Scene::new();
    let server = limited_server(scene.staging.path()).await;
    // 64 KiB of header: far past the 1 KiB budget (plus one 8 KiB piece).
    let extra = format!("X-Padding: {}\r\n", "p".repeat(64 * 1024));
    let parts = [(scene.path("keep.txt"), b"new".to_vec())];
    let (status, body) = post_multipart(&server, multipart(&parts, &extra)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["message"],
        "a part's headers are longer than 1024 bytes"
    );
    scene.assert_untouched();
}

#[tokio::test]
async fn an_upload_within_the_limits_overwrites_in_place() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scene = Scene::new();
    let server = limited_server(scene.staging.path()).await;
    let inode = std::fs::metadata(scene.keep()).expect("stat").ino();
    let parts = [
        (scene.path("keep.txt"), b"new".to_vec()),
        (scene.path("sub/new.txt"), vec![b'n'; 1024]),
    ];
    let (status, body) = post_multipart(&server, multipart(&parts, "")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    let kept = std::fs::metadata(scene.keep()).expect("stat");
    assert_eq!(std::fs::read_to_string(scene.keep()).expect("read"), "new");
    // Written into the same file, not replaced by another one.
    assert_eq!(kept.ino(), inode);
    assert_eq!(kept.permissions().mode() & 0o7777, 0o750);
    let created = std::fs::read(scene.dir.path().join("sub/new.txt")).expect("read");
    assert_eq!(created, vec![b'n'; 1024]);
    assert_eq!(
        std::fs::read_dir(scene.staging.path())
            .expect("list")
            .count(),
        0
    );
}

#[tokio::test]
async fn without_a_staging_directory_an_overwrite_stages_beside_its_target() {
    let scene = Scene::new();
    let server = limited_server(&scene.staging.path().join("missing")).await;
    let parts = [(scene.path("keep.txt"), b"new".to_vec())];
    let (status, body) = post_multipart(&server, multipart(&parts, "")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(scene.keep()).expect("read"), "new");
    let names = std::fs::read_dir(scene.dir.path()).expect("list").count();
    assert_eq!(names, 1, "the staging file is gone");
}

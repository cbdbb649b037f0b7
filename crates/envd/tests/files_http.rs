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

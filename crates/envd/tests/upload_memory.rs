//! Uploads and downloads stream between the socket and the disk: moving
//! 1 GiB through `/files` must not grow envd's memory by more than ~64 MiB.
//! This test binary holds only this test, so the process's peak RSS
//! (VmHWM) is envd's plus the client's, which streams from one shared chunk.

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;

const GIB: usize = 1024 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const ALLOWED_GROWTH: u64 = 64 * 1024 * 1024;

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

fn body(total: usize, prefix: Vec<u8>, suffix: Vec<u8>) -> reqwest::Body {
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let parts = std::iter::once(Bytes::from(prefix))
        .chain((0..total / CHUNK).map(move |_| chunk.clone()))
        .chain(std::iter::once(Bytes::from(suffix)));
    reqwest::Body::wrap_stream(futures::stream::iter(parts.map(Ok::<_, std::io::Error>)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streams_without_buffering() {
    let server = TestServer::start().await;
    let client = http1();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("big.bin");
    // Warm up the runtime, connection and handlers before the baseline.
    let warm = client
        .post(server.url(&format!("/files?path={}", target.display())))
        .header("content-type", "application/octet-stream")
        .body(body(4 * CHUNK, Vec::new(), Vec::new()))
        .send()
        .await
        .expect("warm-up");
    assert_eq!(warm.status(), 200);
    let baseline = peak_rss();

    let response = client
        .post(server.url(&format!("/files?path={}", target.display())))
        .header("content-type", "application/octet-stream")
        .body(body(GIB, Vec::new(), Vec::new()))
        .send()
        .await
        .expect("octet-stream upload");
    assert_eq!(response.status(), 200);
    assert_eq!(
        std::fs::metadata(&target).expect("written").len(),
        GIB as u64
    );

    let multipart_target = dir.path().join("multi.bin");
    let prefix = format!(
        "--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        multipart_target.display()
    );
    let response = client
        .post(server.url("/files"))
        .header("content-type", "multipart/form-data; boundary=B0undary")
        .body(body(
            GIB / 2,
            prefix.into_bytes(),
            b"\r\n--B0undary--\r\n".to_vec(),
        ))
        .send()
        .await
        .expect("multipart upload");
    assert_eq!(response.status(), 200);
    assert_eq!(
        std::fs::metadata(&multipart_target).expect("written").len(),
        (GIB / 2) as u64
    );

    let response = client
        .get(server.url(&format!("/files?path={}", target.display())))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        assert!(chunk.iter().all(|b| *b == 0xa5), "downloaded bytes differ");
        received += chunk.len();
    }
    assert_eq!(received, GIB);

    let growth = peak_rss().saturating_sub(baseline);
    assert!(
        growth <= ALLOWED_GROWTH,
        "peak RSS grew by {} MiB while moving 2.5 GiB",
        growth / (1024 * 1024)
    );
}

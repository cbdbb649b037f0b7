//! Processes, PTYs, watchers and failed requests must not leak file
//! descriptors or child processes. This binary holds only this test, so the
//! process's descriptor count is envd's (plus one pooled client connection).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fd dir").count()
}

/// What each open descriptor refers to, for the failure message.
fn fd_targets() -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("fd dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    targets.sort();
    targets
}

fn children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(1) == Some(me.as_str()))
                })
                .unwrap_or(false)
        })
        .count()
}

async fn exercise(server: &TestServer, client: &reqwest::Client) {
    // Pipes, a PTY, stdin, a killed process and a spawn failure.
    for request in [
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo out; echo err >&2"]}, "stdin": false}),
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "stty size"]}, "pty": {"size": {"cols": 100, "rows": 30}}}),
        json!({"process": {"cmd": "/bin/cat"}, "stdin": true}),
        json!({"process": {"cmd": "/nonexistent/binary"}}),
    ] {
        let response = stream_call(
            client,
            &server.url("/process.Process/Start"),
            &request,
            &[("connect-timeout-ms", "300")],
        )
        .await;
        let _ = response.bytes().await;
    }
    // The privilege-dropping path, as the account every Debian system has.
    let response = stream_call(
        client,
        &server.url("/process.Process/Start"),
        &json!({"process": {"cmd": "/usr/bin/id"}, "stdin": false}),
        &[("authorization", "Basic bm9ib2R5Og==")],
    )
    .await;
    let _ = response.bytes().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, body) = unary_call(
        client,
        &server.url("/filesystem.Filesystem/CreateWatcher"),
        &json!({"path": dir.path().to_string_lossy()}),
    )
    .await;
    assert_eq!(status, 200);
    let id = body["watcherId"].as_str().expect("watcher id").to_string();
    let (status, _) = unary_call(
        client,
        &server.url("/filesystem.Filesystem/RemoveWatcher"),
        &json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = unary_call(
        client,
        &server.url("/filesystem.Filesystem/Stat"),
        &json!({"path": "/no/such/path"}),
    )
    .await;
    assert_eq!(status, 404);
    let response = client
        .get(server.url(&format!("/files?path={}", dir.path().display())))
        .send()
        .await
        .expect("download of a directory");
    assert_eq!(response.status(), 400);
    let _ = response.bytes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_work_leaks_nothing() {
    let server = TestServer::start().await;
    // One pooled connection at most, so its sockets are the only ones the
    // client side may legitimately keep between rounds.
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    exercise(&server, &client).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_before = open_fds();
    let targets_before = fd_targets();
    for _ in 0..25 {
        exercise(&server, &client).await;
    }
    let settled = eventually(Duration::from_secs(10), async || {
        open_fds() <= fds_before && children() == 0
    })
    .await;
    assert!(
        settled,
        "descriptors: {} before, {} after; child processes left: {}\nbefore: {:?}\nafter: {:?}",
        fds_before,
        open_fds(),
        children(),
        targets_before,
        fd_targets()
    );
    assert!(
        server.envd.processes.list().is_empty(),
        "finished processes must leave the registry"
    );
}

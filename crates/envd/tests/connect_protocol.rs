//! The Connect protocol as the SDKs use it: codecs, streaming, end-of-stream
//! envelopes, error mapping, limits, deadlines and keepalives.

mod common;

use std::time::Duration;

use buffa::Message;
use common::*;
use serde_json::{Value, json};

fn start_request(script: &str) -> Value {
    json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}, "stdin": false})
}

/// Collects stdout of a finished Start/Connect stream and its end event.
fn stdout_and_end(envelopes: &[(u8, Value)]) -> (String, Value) {
    let mut out = Vec::new();
    let mut end = Value::Null;
    for (flag, message) in envelopes {
        if *flag != 0 {
            continue;
        }
        if let Some(data) = message["event"]["data"]["stdout"].as_str() {
            out.extend(b64(data));
        }
        if !message["event"]["end"].is_null() {
            end = message["event"]["end"].clone();
        }
    }
    (String::from_utf8(out).expect("utf-8 stdout"), end)
}

async fn run_start_over(client: reqwest::Client) {
    let server = TestServer::start().await;
    let response = stream_call(
        &client,
        &server.url("/process.Process/Start"),
        &start_request("echo out; echo err >&2; exit 7"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    let envelopes = json_envelopes(&response.bytes().await.expect("body"));
    let (first_flag, first) = &envelopes[0];
    assert_eq!(*first_flag, 0);
    assert!(
        first["event"]["start"]["pid"]
            .as_u64()
            .is_some_and(|pid| pid > 0),
        "first event must be start: {first}"
    );
    let (stdout, end) = stdout_and_end(&envelopes);
    assert_eq!(stdout, "out\n");
    assert_eq!(end["exitCode"], 7);
    assert_eq!(end["exited"], true);
    assert_eq!(end["status"], "exit status 7");
    assert_eq!(end["error"], "exit status 7");
    let (last_flag, last) = envelopes.last().expect("end of stream");
    assert_eq!(
        *last_flag, 2,
        "stream must close with an end-of-stream envelope"
    );
    assert_eq!(*last, json!({}));
}

#[tokio::test]
async fn start_streams_events_over_http1() {
    run_start_over(http1()).await;
}

#[tokio::test]
async fn start_streams_events_over_http2() {
    run_start_over(http2()).await;
}

#[tokio::test]
async fn chunked_request_body_is_accepted() {
    let server = TestServer::start().await;
    let body = json_envelope(&start_request("echo chunked"));
    let chunks = futures::stream::iter(
        body.chunks(7)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = http1()
        .post(server.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let (stdout, end) = stdout_and_end(&json_envelopes(&response.bytes().await.expect("body")));
    assert_eq!(stdout, "chunked\n");
    assert_eq!(
        end["exitCode"],
        Value::Null,
        "exit code 0 is a default and omitted"
    );
}

#[tokio::test]
async fn unary_binary_codec_round_trips() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"12345").expect("write");
    let request = envd_proto::filesystem::StatRequest {
        path: file.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let response = http1()
        .post(server.url("/filesystem.Filesystem/Stat"))
        .header("content-type", "application/proto")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let decoded = envd_proto::filesystem::StatResponse::decode_from_slice(
        &response.bytes().await.expect("body"),
    )
    .expect("valid proto");
    let entry = decoded.entry.as_option().expect("entry");
    assert_eq!(entry.name, "f.txt");
    assert_eq!(entry.size, 5);
    assert_eq!(
        entry.r#type.as_known(),
        Some(envd_proto::filesystem::FileType::FILE_TYPE_FILE)
    );
}

#[tokio::test]
async fn streaming_binary_codec_works() {
    let server = TestServer::start().await;
    let request = envd_proto::process::StartRequest {
        process: envd_proto::process::ProcessConfig {
            cmd: "/bin/echo".into(),
            args: vec!["binary".into()],
            ..Default::default()
        }
        .into(),
        stdin: Some(false),
        ..Default::default()
    };
    let response = http1()
        .post(server.url("/process.Process/Start"))
        .header("content-type", "application/connect+proto")
        .body(envelope(0, &request.encode_to_vec()))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let envelopes = split_envelopes(&response.bytes().await.expect("body"));
    let mut stdout = Vec::new();
    for (flag, payload) in &envelopes[..envelopes.len() - 1] {
        assert_eq!(*flag, 0);
        let message =
            envd_proto::process::StartResponse::decode_from_slice(payload).expect("valid proto");
        if let Some(envd_proto::process::__buffa::oneof::process_event::Event::Data(data)) =
            &message.event.as_option().expect("event").event
            && let Some(
                envd_proto::process::__buffa::oneof::process_event::data_event::Output::Stdout(
                    bytes,
                ),
            ) = &data.output
        {
            stdout.extend_from_slice(bytes);
        }
    }
    assert_eq!(stdout, b"binary\n");
    assert_eq!(envelopes.last().map(|e| e.0), Some(2));
}

/// Upstream envd removes with Go's `os.RemoveAll`: a path that is not
/// there is already removed. The SDKs' own tests call `files.remove` on a
/// directory that may not exist to start from a clean one.
#[tokio::test]
async fn remove_of_a_missing_path_succeeds() {
    let server = TestServer::start().await;
    let client = http1();
    let dir = tempfile::tempdir().expect("tempdir");
    let remove = |path: std::path::PathBuf| {
        let client = client.clone();
        let url = server.url("/filesystem.Filesystem/Remove");
        async move { unary_call(&client, &url, &json!({"path": path.to_string_lossy()})).await }
    };
    for missing in [
        dir.path().join("nothing"),
        dir.path().join("no/such/parent"),
    ] {
        let (status, body) = remove(missing.clone()).await;
        assert_eq!((status, &body), (200, &json!({})), "{}", missing.display());
    }

    // A tree is still removed whole, and removing it again succeeds too.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).expect("mkdir");
    std::fs::write(tree.join("a/b/f.txt"), "x").expect("write");
    for _ in 0..2 {
        let (status, body) = remove(tree.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(!tree.exists());
    }
}

#[tokio::test]
async fn errors_map_to_codes_and_statuses() {
    let server = TestServer::start().await;
    let client = http1();
    let (status, body) = unary_call(
        &client,
        &server.url("/filesystem.Filesystem/Stat"),
        &json!({"path": "/definitely/not/here"}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        body["message"],
        "path '/definitely/not/here' does not exist"
    );

    let (status, body) = unary_call(
        &client,
        &server.url("/process.Process/SendSignal"),
        &json!({"process": {"pid": 999_999}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_string_lossy().into_owned();
    let (status, body) = unary_call(
        &client,
        &server.url("/filesystem.Filesystem/MakeDir"),
        &json!({"path": path}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_exists"))
    );

    // Unknown fields are ignored, so newer SDKs sending new optional fields still work.
    let (status, body) = unary_call(
        &client,
        &server.url("/process.Process/List"),
        &json!({"unexpected": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = unary_call(
        &client,
        &server.url("/filesystem.Filesystem/Stat"),
        &json!({"path": 5}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let response = client
        .post(server.url("/process.Process/List"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["code"], "invalid_argument");

    let response = client
        .post(server.url("/process.Process/List"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 415);

    let response = client
        .post(server.url("/process.Process/Nope"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn unknown_user_is_unauthenticated() {
    let server = TestServer::start().await;
    let response = http1()
        .post(server.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("authorization", "Basic bm9zdWNodXNlcjo=")
        .body(json_envelope(&start_request("true")))
        .send()
        .await
        .expect("sent");
    let envelopes = json_envelopes(&response.bytes().await.expect("body"));
    let (flag, end) = envelopes.last().expect("end of stream");
    assert_eq!(*flag, 2);
    assert_eq!(end["error"]["code"], "unauthenticated");
    assert!(
        end["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nosuchuser")),
        "{end}"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let server = TestServer::start().await;
    let huge = "x".repeat(envd::server::MAX_MESSAGE_SIZE + 1024);
    let (status, body) = unary_call(
        &http1(),
        &server.url("/filesystem.Filesystem/Stat"),
        &json!({"path": huge}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "resource_exhausted");
}

#[tokio::test]
async fn timeout_header_is_the_process_lifetime() {
    let server = TestServer::start().await;
    let client = http1();
    let started = tokio::time::Instant::now();
    let response = stream_call(
        &client,
        &server.url("/process.Process/Start"),
        &json!({"process": {"cmd": "/bin/sleep", "args": ["30"]}, "tag": "lifetime"}),
        &[("connect-timeout-ms", "700")],
    )
    .await;
    let _ = response.bytes().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let gone = eventually(Duration::from_secs(5), async || {
        let (_, body) = unary_call(&client, &server.url("/process.Process/List"), &json!({})).await;
        !body.to_string().contains("lifetime")
    })
    .await;
    assert!(gone, "the process must be killed when its lifetime ends");
}

#[tokio::test]
async fn idle_streams_get_keepalives() {
    let server = TestServer::start().await;
    let response = stream_call(
        &http1(),
        &server.url("/process.Process/Start"),
        &start_request("sleep 2.5; echo late"),
        &[("keepalive-ping-interval", "1")],
    )
    .await;
    let envelopes = json_envelopes(&response.bytes().await.expect("body"));
    let keepalives = envelopes
        .iter()
        .filter(|(_, m)| !m["event"]["keepalive"].is_null())
        .count();
    assert!(keepalives >= 1, "expected keepalive events: {envelopes:?}");
    assert_eq!(stdout_and_end(&envelopes).0, "late\n");
}

#[tokio::test]
async fn disconnect_keeps_process_and_connect_reattaches() {
    let server = TestServer::start().await;
    let client = http1();
    let response = stream_call(&client, &server.url("/process.Process/Start"), &json!({"process": {"cmd": "/bin/bash", "args": ["-c", "sleep 1.5; echo after"]}, "tag": "survivor", "stdin": false}), &[]).await;
    assert_eq!(response.status(), 200);
    drop(response);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, listed) = unary_call(&client, &server.url("/process.Process/List"), &json!({})).await;
    assert!(
        listed.to_string().contains("survivor"),
        "process must survive the disconnect: {listed}"
    );
    let response = stream_call(
        &client,
        &server.url("/process.Process/Connect"),
        &json!({"process": {"tag": "survivor"}}),
        &[],
    )
    .await;
    let envelopes = json_envelopes(&response.bytes().await.expect("body"));
    assert!(envelopes[0].1["event"]["start"]["pid"].as_u64().is_some());
    let (stdout, end) = stdout_and_end(&envelopes);
    assert_eq!(stdout, "after\n");
    assert_eq!(end["exited"], true);
}

#[tokio::test]
async fn stream_input_feeds_stdin() {
    let server = TestServer::start().await;
    let client = http1();
    let (start_client, start_url) = (client.clone(), server.url("/process.Process/Start"));
    let output = tokio::spawn(async move {
        let request = json!({"process": {"cmd": "/bin/cat"}, "tag": "cat", "stdin": true});
        stream_call(&start_client, &start_url, &request, &[])
            .await
            .bytes()
            .await
            .expect("body")
    });
    let ready = eventually(Duration::from_secs(5), async || {
        unary_call(&client, &server.url("/process.Process/List"), &json!({}))
            .await
            .1
            .to_string()
            .contains("\"cat\"")
    })
    .await;
    assert!(ready);
    let mut body = json_envelope(&json!({"start": {"process": {"tag": "cat"}}}));
    body.extend(json_envelope(
        &json!({"data": {"input": {"stdin": "aGVsbG8g"}}}),
    ));
    body.extend(json_envelope(&json!({"keepalive": {}})));
    body.extend(json_envelope(
        &json!({"data": {"input": {"stdin": "d29ybGQ="}}}),
    ));
    let response = client
        .post(server.url("/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let reply = json_envelopes(&response.bytes().await.expect("body"));
    assert_eq!(reply, vec![(0, json!({})), (2, json!({}))]);
    let (status, _) = unary_call(
        &client,
        &server.url("/process.Process/CloseStdin"),
        &json!({"process": {"tag": "cat"}}),
    )
    .await;
    assert_eq!(status, 200);
    let (stdout, end) = stdout_and_end(&json_envelopes(&output.await.expect("joined")));
    assert_eq!(stdout, "hello world");
    assert_eq!(end["exited"], true);
}

#[tokio::test]
async fn access_token_guards_rpc_once_set() {
    let server = TestServer::start().await;
    let client = http1();
    let response = client
        .post(server.url("/init"))
        .json(&json!({"accessToken": "s3cret"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let (status, body) =
        unary_call(&client, &server.url("/process.Process/List"), &json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], 401);
    let response = client
        .post(server.url("/process.Process/List"))
        .header("content-type", "application/json")
        .header("x-access-token", "s3cret")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let health = client
        .get(server.url("/health"))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 204);
}

/// Runs a Start request to its end; returns what it printed (pipe or PTY).
async fn printed(server: &TestServer, request: &Value, headers: &[(&str, &str)]) -> String {
    let response = stream_call(
        &http1(),
        &server.url("/process.Process/Start"),
        request,
        headers,
    )
    .await;
    let envelopes = json_envelopes(&response.bytes().await.expect("body"));
    let mut out = Vec::new();
    for (_, message) in &envelopes {
        for key in ["stdout", "pty"] {
            if let Some(data) = message["event"]["data"][key].as_str() {
                out.extend(b64(data));
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn children_get_default_signal_handling() {
    // envd ignores SIGPIPE (Rust runtime); a child inheriting that would not
    // die on a closed pipe. Both spawn paths must reset it.
    let server = TestServer::start().await;
    for pty in [false, true] {
        let mut request = start_request("grep -E '^Sig(Ign|Blk)' /proc/self/status");
        if pty {
            request["pty"] = json!({"size": {"cols": 80, "rows": 24}});
        }
        let text = printed(&server, &request, &[]).await;
        let mask = |name: &str| {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16)
                .expect("hex mask")
        };
        // Signals 1-31 (SIGPIPE among them) must be at their defaults. glibc's
        // posix_spawn leaves its two internal signals (32, 33) ignored, which
        // every libc re-registers at startup; they are not for programs.
        assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "pty={pty}: {text}");
        assert_eq!(mask("SigBlk:"), 0, "pty={pty}: {text}");
    }
}

#[tokio::test]
async fn processes_run_as_the_requested_user() {
    // `nobody` exists on every Debian system; its home does not, so the
    // process starts in `/`.
    let server = TestServer::start().await;
    for (pty, extra) in [
        (false, json!(null)),
        (true, json!({"size": {"cols": 80, "rows": 24}})),
    ] {
        let mut request = start_request("echo $(id -u) $(id -g) $(id -G) $USER $HOME $(pwd)");
        if pty {
            request["pty"] = extra;
        }
        let text = printed(
            &server,
            &request,
            &[("authorization", "Basic bm9ib2R5Og==")],
        )
        .await;
        assert_eq!(
            text.trim(),
            "65534 65534 65534 nobody /nonexistent /",
            "pty={pty}"
        );
    }
}

#[tokio::test]
async fn failures_before_exec_are_reported() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "plain text").expect("write");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    for (request, expected) in [
        (
            json!({"process": {"cmd": not_executable.to_string_lossy()}}),
            "Permission denied",
        ),
        (
            json!({"process": {"cmd": "/bin/true", "cwd": "/root"}}),
            "Permission denied",
        ),
        (
            json!({"process": {"cmd": "no-such-command-anywhere"}}),
            "not found in $PATH",
        ),
    ] {
        let response = stream_call(
            &http1(),
            &server.url("/process.Process/Start"),
            &request,
            &[("authorization", "Basic bm9ib2R5Og==")],
        )
        .await;
        let envelopes = json_envelopes(&response.bytes().await.expect("body"));
        let (flag, end) = envelopes.last().expect("end of stream");
        assert_eq!(*flag, 2);
        assert_eq!(end["error"]["code"], "invalid_argument", "{request}: {end}");
        let message = end["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{request}: {message}");
    }
    assert!(server.envd.processes.list().is_empty());
}
